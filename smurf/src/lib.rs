//! A mailfarm smurf: a sender node. It receives each campaign's template once, then only
//! per-recipient data, renders every message itself and delivers it over pooled SMTP sessions,
//! reporting every outcome back to the coordinator.
//!
//! Roles live in their own folders: `outbound/` (the SMTP client), `inbound/` (SMTP receivers:
//! the inbound MX of the `in` role, the capture sink and the fault sink), `bounce/` (returned
//! mail analysis), `web/` (one-click unsubscribe and the operators' dashboard). The SMTP
//! syntax both sides share lives below them in `smtp/`; the role switch is `switch`.

#![warn(clippy::unwrap_used)]

pub mod bounce;
mod config;
pub mod delivery;
mod error;
pub mod helo;
pub mod inbound;
mod link;
pub mod load;
pub mod outbound;
pub mod returned;
pub mod roles;
pub mod smtp;
pub mod switch;
pub mod template_cache;
pub mod web;

pub use config::{ConfigError, SmurfConfig};
pub use delivery::DeliverySettings;
pub use error::{LinkError, SmurfError};
pub use link::{run_smurf, SmurfSettings};
pub use roles::RoleServices;
