//! Inbound mail: receiving SMTP. Today only the capture server used by
//! `mailfarm campaign launch --local N --capture DIR`; the building blocks
//! ([`line`](mod@line), [`command`]) are shared with a future inbound MX role (and
//! [`line`](mod@line) with the outbound client).

pub mod capture;
pub mod command;
pub mod line;
