//! A mailfarm smurf: a sender node. It receives each campaign's template once, then only
//! per-recipient data, renders every message itself and delivers it over pooled SMTP sessions,
//! reporting every outcome back to the coordinator.
//!
//! Roles live in their own folders: `outbound/` (the SMTP client), `inbound/` (SMTP receivers:
//! today the capture sink, later the inbound MX role).

#![warn(clippy::unwrap_used)]

mod config;
pub mod delivery;
pub mod helo;
pub mod inbound;
mod link;
pub mod load;
pub mod outbound;
pub mod template_cache;

pub use config::SmurfConfig;
pub use delivery::DeliverySettings;
pub use link::{run_smurf, SmurfSettings};
