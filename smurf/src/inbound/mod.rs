//! Inbound mail: receiving SMTP. Today the capture server used by
//! `mailfarm campaign launch --local N --capture DIR` and the fault-injecting
//! [`fault_sink`] that tests and benchmarks deliver to. The SMTP syntax they
//! parse lives below every role, in [`crate::smtp`].

pub mod capture;
pub mod fault_sink;
