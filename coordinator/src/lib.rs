//! mailfarm's coordinator: it holds campaigns and every recipient's state durably, ships each
//! campaign's template once to each smurf, then streams only per-recipient data to the smurfs
//! over mutually authenticated QUIC and collects their results.

#![warn(clippy::unwrap_used)]

mod accounting;
pub mod campaign;
mod client;
pub mod config;
pub mod farm;
mod flow;
pub mod forward;
mod launch;
mod links;
pub mod metrics;
mod nodes;
mod operator;
mod server;
pub mod store;
pub mod throttle;

pub use campaign::{load_campaign_dir, CampaignDirError, RejectedRow};
pub use client::{ClientError, OperatorClient};
pub use config::{ConfigError, CoordinatorConfig};
pub use farm::{Farm, FarmError, RetryPolicy};
pub use launch::{bundle_hash, LaunchError, Launched};
pub use server::{Coordinator, CoordinatorError, CoordinatorHandle, CoordinatorSettings};
