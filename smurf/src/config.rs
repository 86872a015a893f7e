//! The smurf's configuration file (TOML).
//!
//! ```toml
//! node = "smurf-1"                 # must match its certificate (farm init)
//! coordinator = "127.0.0.1:4433"   # coordinator QUIC address
//! farm_dir = "."                   # holds ca.pem, smurf-1.pem, smurf-1.key
//! window = 512                     # most recipients in flight on this smurf
//! helo_name = "smurf-1.example.net"  # EHLO name; a real host name in production
//! state_dir = "state/smurf-1"      # templates kept across restarts
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use mailfarm_pki::{FarmFiles, Identity};
use serde::Deserialize;

use crate::delivery::DeliverySettings;
use crate::SmurfSettings;

/// Contents of a smurf's config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmurfConfig {
    /// Node name, as in its certificate.
    pub node: String,
    /// Coordinator address. Default `127.0.0.1:4433`.
    #[serde(default = "default_coordinator")]
    pub coordinator: SocketAddr,
    /// Folder with the farm certificates, relative to the config file. Default: its folder.
    #[serde(default)]
    pub farm_dir: PathBuf,
    /// Most recipients in flight. Default 512.
    #[serde(default = "default_window")]
    pub window: u32,
    /// EHLO name. Default: `NODE.mailfarm.invalid`.
    pub helo_name: Option<String>,
    /// Folder for state kept across restarts (received templates), relative to the config
    /// file. Default: none (memory only).
    pub state_dir: Option<PathBuf>,
    /// Messages per SMTP connection before reconnecting. Default 1000.
    #[serde(default = "default_per_connection")]
    pub max_messages_per_connection: u32,
}

fn default_coordinator() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4433))
}
fn default_window() -> u32 {
    512
}
fn default_per_connection() -> u32 {
    1000
}

impl SmurfConfig {
    /// Reads a config file; relative paths are resolved against its folder.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: Self =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.farm_dir = base.join(&config.farm_dir);
        config.state_dir = config.state_dir.map(|d| base.join(d));
        let mut problems = Vec::new();
        if config.window == 0 {
            problems.push("window must be at least 1".to_owned());
        }
        if config.max_messages_per_connection == 0 {
            problems.push("max_messages_per_connection must be at least 1".to_owned());
        }
        if !problems.is_empty() {
            anyhow::bail!("{}: {}", path.display(), problems.join("; "));
        }
        Ok(config)
    }

    /// Loads the certificates and builds the settings.
    pub fn settings(&self) -> anyhow::Result<SmurfSettings> {
        let identity = Identity::load(&FarmFiles::in_dir(&self.farm_dir, &self.node))
            .with_context(|| format!("loading the certificate of {}", self.node))?;
        let mut delivery = DeliverySettings::new(
            self.helo_name
                .clone()
                .unwrap_or_else(|| format!("{}.mailfarm.invalid", self.node)),
        );
        delivery.max_messages_per_connection = self.max_messages_per_connection;
        Ok(SmurfSettings {
            node: self.node.clone(),
            coordinator: self.coordinator,
            identity,
            window: self.window,
            delivery,
            state_dir: self.state_dir.clone(),
        })
    }
}
