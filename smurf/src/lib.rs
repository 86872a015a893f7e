//! A mailfarm smurf: a sender node. It receives each campaign's template once, then only
//! per-recipient data, renders every message itself and delivers it over pooled SMTP sessions,
//! reporting every outcome back to the coordinator.
//!
//! Roles live in their own folders: `outbound/` (the SMTP client), `inbound/` (SMTP receivers:
//! today the capture sink, later the inbound MX role), `web/` (one-click unsubscribe and the
//! operators' dashboard).

pub mod bounce;
mod config;
pub mod delivery;
mod error;
pub mod inbound;
mod link;
pub mod load;
pub mod outbound;
pub mod returned;
pub mod roles;
pub mod switch;
pub mod template_cache;
pub mod web;

pub use config::SmurfConfig;
pub use delivery::DeliverySettings;
pub use error::{LinkError, SmurfError};
pub use link::{run_smurf, SmurfSettings};
pub use roles::RoleServices;
