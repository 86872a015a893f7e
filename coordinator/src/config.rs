//! The coordinator's configuration file (TOML).
//!
//! ```toml
//! listen = "127.0.0.1:4433"   # QUIC address smurfs and operators connect to
//! farm_dir = "."              # holds ca.pem, coordinator.pem/.key, verp.key (farm init)
//! batch_size = 128            # most recipients per batch frame
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use mailfarm_pki::{FarmFiles, Identity};
use serde::Deserialize;

use crate::CoordinatorSettings;

/// Contents of `coordinator.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// QUIC listen address. Default `127.0.0.1:4433`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Folder with the farm certificates, relative to the config file. Default: its folder.
    #[serde(default)]
    pub farm_dir: PathBuf,
    /// Most recipients per batch frame. Default 128.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4433))
}

fn default_batch() -> usize {
    128
}

impl CoordinatorConfig {
    /// Reads a config file; relative paths are resolved against its folder.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: Self =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.farm_dir = base.join(&config.farm_dir);
        if config.batch_size == 0 {
            anyhow::bail!("{}: batch_size must be at least 1", path.display());
        }
        Ok(config)
    }

    /// Loads the certificates and VERP key the config points at.
    pub fn settings(&self) -> anyhow::Result<CoordinatorSettings> {
        let identity = Identity::load(&FarmFiles::in_dir(&self.farm_dir, "coordinator"))
            .context("loading the coordinator certificate (run `mailfarm farm init`)")?;
        let verp_key = mailfarm_pki::load_secret(&self.farm_dir.join("verp.key"))
            .context("loading the VERP signing key")?;
        Ok(CoordinatorSettings {
            listen: self.listen,
            identity,
            verp_key,
            batch_size: self.batch_size,
        })
    }
}
