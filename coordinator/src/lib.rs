//! mailfarm's coordinator: it holds campaigns and every recipient's state, ships each
//! campaign's template once to each smurf, then streams only per-recipient data to the smurfs
//! over mutually authenticated QUIC and collects their results.

pub mod campaign;
mod client;
mod config;
pub mod farm;
mod launch;
mod server;

pub use campaign::{load_campaign_dir, CampaignDirError, RejectedRow};
pub use client::OperatorClient;
pub use config::CoordinatorConfig;
pub use farm::{Farm, RecipientState};
pub use launch::{bundle_hash, LaunchError, Launched};
pub use server::{Coordinator, CoordinatorHandle, CoordinatorSettings};
