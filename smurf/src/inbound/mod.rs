//! Inbound mail: receiving SMTP. Today the capture server used by
//! `mailfarm campaign launch --local N --capture DIR` and the fault-injecting
//! [`fault_sink`] that tests and benchmarks deliver to; the building blocks
//! ([`line`](mod@line), [`command`], [`data`]) are shared with a future inbound
//! MX role (and [`line`](mod@line) with the outbound client).

pub mod capture;
pub mod command;
pub mod data;
pub mod fault_sink;
pub mod line;
