//! The coordinator's configuration file (TOML).
//!
//! ```toml
//! listen = "127.0.0.1:4433"   # QUIC address smurfs and operators connect to
//! farm_dir = "."              # holds ca.pem, coordinator.pem/.key, verp.key (farm init)
//! state_dir = "state"         # state database, rejects reports, accounting log
//! batch_size = 128            # most recipients per batch frame
//! metrics_listen = "127.0.0.1:9464"    # Prometheus /metrics (optional)
//! retry_schedule = ["5m", "10m", "30m", "1h", "2h", "4h"]   # waits between attempts
//! retry_max_age = "3d"        # give up on a deferred recipient after this long
//! shaping_file = "shaping.toml"   # farm-wide traffic shaping, split across the smurfs
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use mailfarm_pki::{FarmFiles, Identity};
use serde::Deserialize;

use crate::{CoordinatorSettings, RetryPolicy};

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
    /// State folder, relative to the config file. Default `state`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Prometheus `/metrics` address. Default: none.
    pub metrics_listen: Option<SocketAddr>,
    /// Waits between attempts for temporary failures (the last repeats).
    /// Default `["5m", "10m", "30m", "1h", "2h", "4h"]`.
    pub retry_schedule: Option<Vec<String>>,
    /// Give up on a deferred recipient this long after its first attempt. Default `"3d"`.
    pub retry_max_age: Option<String>,
    /// Traffic shaping file (TOML), relative to the config file, sent to every smurf with its
    /// share of the limits. Default: none (smurf defaults).
    pub shaping_file: Option<PathBuf>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("state")
}

/// Parses `"30s"`, `"5m"`, `"2h"`, `"3d"`, `"250ms"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: missing unit (ms, s, m, h, d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: not a whole number"))?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?}: unit must be ms, s, m, h or d")),
    };
    Ok(Duration::from_millis(n.saturating_mul(unit_ms)))
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4433))
}

fn default_batch() -> usize {
    128
}

impl CoordinatorConfig {
    /// Reads a config file; relative paths are resolved against its folder. The shaping file
    /// is only checked to be TOML here; see [`CoordinatorConfig::load_checked`].
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Self::load_checked(path, |_| Ok(()))
    }

    /// Like [`CoordinatorConfig::load`], and `check_shaping` judges the shaping file's text:
    /// every problem it returns (one line each, e.g. `line 12: rule[0].action: ...`) is
    /// reported at once and the coordinator does not start. (The shaping parser lives with
    /// the smurfs that apply it; the `mailfarm` binary passes it in.)
    pub fn load_checked(
        path: &Path,
        check_shaping: impl Fn(&str) -> Result<(), Vec<String>>,
    ) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: Self =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.farm_dir = base.join(&config.farm_dir);
        config.state_dir = base.join(&config.state_dir);
        config.shaping_file = config.shaping_file.map(|f| base.join(f));
        let mut problems = Vec::new();
        if config.batch_size == 0 {
            problems.push("batch_size must be at least 1".to_owned());
        }
        if let Err(e) = config.retry_policy() {
            problems.push(e);
        }
        if let Some(file) = &config.shaping_file {
            match std::fs::read_to_string(file) {
                Ok(text) => {
                    if let Err(e) = text.parse::<toml::Table>() {
                        problems.push(format!("shaping_file {}: {e}", file.display()));
                    } else if let Err(errors) = check_shaping(&text) {
                        for e in errors {
                            problems.push(format!("shaping_file {}: {e}", file.display()));
                        }
                    }
                }
                Err(e) => problems.push(format!("shaping_file {}: {e}", file.display())),
            }
        }
        if !problems.is_empty() {
            anyhow::bail!("{}:\n  - {}", path.display(), problems.join("\n  - "));
        }
        Ok(config)
    }

    /// Loads the certificates and VERP key the config points at.
    pub fn settings(&self) -> anyhow::Result<CoordinatorSettings> {
        let identity = Identity::load(&FarmFiles::in_dir(&self.farm_dir, "coordinator"))
            .context("loading the coordinator certificate (run `mailfarm farm init`)")?;
        let verp_key = mailfarm_pki::load_secret(&self.farm_dir.join("verp.key"))
            .context("loading the VERP signing key")?;
        let mut settings = CoordinatorSettings::new(self.listen, identity, verp_key);
        settings.batch_size = self.batch_size;
        settings.state_dir = Some(self.state_dir.clone());
        settings.metrics_listen = self.metrics_listen;
        settings.retry = self.retry_policy().map_err(anyhow::Error::msg)?;
        if let Some(file) = &self.shaping_file {
            settings.shaping = std::fs::read_to_string(file)
                .with_context(|| format!("reading the shaping file {}", file.display()))?;
        }
        Ok(settings)
    }

    /// The retry policy the config describes.
    pub fn retry_policy(&self) -> Result<RetryPolicy, String> {
        let mut policy = RetryPolicy::default();
        if let Some(schedule) = &self.retry_schedule {
            if schedule.is_empty() {
                return Err("retry_schedule must have at least one entry".into());
            }
            policy.schedule = schedule
                .iter()
                .map(|s| parse_duration(s).map_err(|e| format!("retry_schedule: {e}")))
                .collect::<Result<_, _>>()?;
        }
        if let Some(age) = &self.retry_max_age {
            policy.max_age = parse_duration(age).map_err(|e| format!("retry_max_age: {e}"))?;
        }
        Ok(policy)
    }
}
