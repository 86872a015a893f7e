//! Inbound mail: receiving SMTP. The `in` role's MX ([`mx`]), the capture
//! server used by `mailfarm campaign launch --local N --capture DIR` and the
//! fault-injecting [`fault_sink`] that tests and benchmarks deliver to. All
//! three run on the one SMTP server core in [`crate::smtp`].

pub mod capture;
pub mod fault_sink;
pub mod forward;
pub mod mx;
