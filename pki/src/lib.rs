//! The farm's private certificate authority and the mutual-TLS QUIC settings built on it.
//!
//! Every node of a farm (the coordinator, each smurf, each operator) holds a certificate issued
//! by the farm CA. The coordinator accepts only clients whose certificate chains to that CA, and
//! clients accept only a coordinator that does, so a stranger can neither drive the smurfs nor
//! impersonate the coordinator. The role and name of a node are written in its certificate as a
//! DNS name: `coordinator.mailfarm`, `NAME.smurf.mailfarm`, `NAME.operator.mailfarm`.

#![warn(clippy::unwrap_used)]

mod config_file;
pub mod dashboard;
mod init;
mod tls;
pub mod wire;

pub use config_file::{read_toml, ConfigFileError};
pub use init::{init_farm, load_secret, FarmFiles, InitReport};
pub use tls::{
    client_config, operator_dns_name, peer_has_name, server_config, smurf_dns_name, Identity,
    COORDINATOR_NAME,
};

use std::path::PathBuf;

/// Errors while creating or loading farm certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificates or keys.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client verifier could not be built from the CA.
    #[error("client verifier: {0}")]
    Verifier(String),
    /// A node name is not usable in a certificate.
    #[error("invalid node name {0:?}: use letters, digits and '-' (max 63)")]
    BadName(String),
    /// The dashboard secret could not be hashed.
    #[error("dashboard secret: {0}")]
    Secret(String),
}
