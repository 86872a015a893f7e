//! Outbound mail: the SMTP client that delivers rendered messages to
//! receiving MTAs. Routing (MX lookup), STARTTLS wrapping and rate limits are
//! layered around [`smtp::SmtpClient`].

pub mod dkim;
mod dkim_key;
pub mod mx;
pub mod route;
pub mod session;
pub mod shaping;
mod shaping_rules;
pub mod smtp;
pub mod throttle;
pub mod tls;

/// Reply parsing moved to [`crate::smtp::reply`], below both roles; this path
/// stays for existing callers.
pub use crate::smtp::reply;
