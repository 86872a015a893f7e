//! Outbound mail: the SMTP client that delivers rendered messages to
//! receiving MTAs. Routing (MX lookup), STARTTLS wrapping and rate limits are
//! layered around [`smtp::SmtpClient`].

pub mod reply;
pub mod route;
pub mod smtp;
