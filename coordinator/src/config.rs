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
//! local_addresses = ["replies@example.net"]  # `in` nodes keep mail for these (besides
//!                             # postmaster@/abuse@ of the bounce domains and Reply-To addresses)
//!
//! [forward]                   # forwarding on the `in` nodes (docs/forwarding.md)
//! srs_domain = "fwd.example.net"     # SRS return paths; its MX must be the `in` nodes
//! notice_from = "moved@example.net"  # notices' From (default postmaster@<srs_domain>)
//! no_notice = ["boss@example.com", "@partner.example"]   # senders never notified
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mailfarm_pki::{read_toml, ConfigFileError, FarmFiles, Identity, PkiError};
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
    /// Extra addresses whose mail `in` nodes keep for the operator. Default: none (postmaster@
    /// and abuse@ of every bounce domain and the campaigns' Reply-To addresses are always kept).
    #[serde(default)]
    pub local_addresses: Vec<String>,
    /// Forwarding settings (`[forward]`).
    #[serde(default)]
    pub forward: ForwardSection,
}

/// The `[forward]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSection {
    /// Domain of the SRS return paths.
    #[serde(default)]
    pub srs_domain: String,
    /// From address of the notices.
    pub notice_from: Option<String>,
    /// Senders never notified: addresses or `@domain`.
    #[serde(default)]
    pub no_notice: Vec<String>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("state")
}

/// Parses a duration (`"30s"`, `"1.5m"`, `"2h"`, `"3d"`, `"250ms"`): the farm-wide parser,
/// re-exported here for the config's users.
pub use mailfarm_protocol::parse_duration;

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4433))
}

fn default_batch() -> usize {
    128
}

/// Why the coordinator's config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error(transparent)]
    File(#[from] ConfigFileError),
    /// Values that parsed but cannot be used, every one of them.
    #[error("{}:\n  - {}", path.display(), problems.join("\n  - "))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// One line per problem.
        problems: Vec<String>,
    },
    /// The coordinator's certificate could not be loaded.
    #[error("loading the coordinator certificate (run `mailfarm farm init`)")]
    Identity(#[source] PkiError),
    /// The VERP signing key could not be loaded.
    #[error("loading the VERP signing key")]
    VerpKey(#[source] PkiError),
    /// The retry settings are unusable.
    #[error("{0}")]
    Retry(String),
    /// The shaping file could not be read.
    #[error("reading the shaping file {}", path.display())]
    Shaping {
        /// The shaping file.
        path: PathBuf,
        /// What reading said.
        source: std::io::Error,
    },
}

impl CoordinatorConfig {
    /// Reads a config file; relative paths are resolved against its folder. The shaping file
    /// is only checked to be TOML here; see [`CoordinatorConfig::load_checked`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_checked(path, |_| Ok(()))
    }

    /// Like [`CoordinatorConfig::load`], and `check_shaping` judges the shaping file's text:
    /// every problem it returns (one line each, e.g. `line 12: rule[0].action: ...`) is
    /// reported at once and the coordinator does not start. (The shaping parser lives with
    /// the smurfs that apply it; the `mailfarm` binary passes it in.)
    pub fn load_checked(
        path: &Path,
        check_shaping: impl Fn(&str) -> Result<(), Vec<String>>,
    ) -> Result<Self, ConfigError> {
        let mut config: Self = read_toml(path)?;
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
        let srs = &config.forward.srs_domain;
        if !srs.is_empty() && !mailfarm_templates::address::is_domain(srs) {
            problems.push(format!("[forward] srs_domain {srs:?} is not a domain"));
        }
        for entry in &config.forward.no_notice {
            let ok = match entry.trim().strip_prefix('@') {
                Some(domain) => mailfarm_templates::address::is_domain(domain),
                None => mailfarm_templates::address::check_recipient(entry.trim()).is_ok(),
            };
            if !ok {
                problems.push(format!(
                    "[forward] no_notice entry {entry:?}: expected an address or @domain"
                ));
            }
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
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            });
        }
        Ok(config)
    }

    /// Loads the certificates and VERP key the config points at.
    pub fn settings(&self) -> Result<CoordinatorSettings, ConfigError> {
        let identity = Identity::load(&FarmFiles::in_dir(&self.farm_dir, "coordinator"))
            .map_err(ConfigError::Identity)?;
        let verp_key = mailfarm_pki::load_secret(&self.farm_dir.join("verp.key"))
            .map_err(ConfigError::VerpKey)?;
        let mut settings = CoordinatorSettings::new(self.listen, identity, verp_key);
        settings.batch_size = self.batch_size;
        settings.state_dir = Some(self.state_dir.clone());
        settings.metrics_listen = self.metrics_listen;
        settings.retry = self.retry_policy().map_err(ConfigError::Retry)?;
        settings.inbound_local_addresses = self.local_addresses.clone();
        settings.forward = crate::forward::ForwardConfig {
            srs_domain: self.forward.srs_domain.clone(),
            notice_from: self.forward.notice_from.clone(),
            no_notice: self.forward.no_notice.clone(),
        };
        if let Some(file) = &self.shaping_file {
            settings.shaping =
                std::fs::read_to_string(file).map_err(|source| ConfigError::Shaping {
                    path: file.clone(),
                    source,
                })?;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(schedule: &[&str], max_age: &str) -> CoordinatorConfig {
        let schedule: Vec<String> = schedule.iter().map(|s| format!("{s:?}")).collect();
        toml::from_str(&format!(
            "retry_schedule = [{}]\nretry_max_age = {max_age:?}\n",
            schedule.join(", ")
        ))
        .unwrap()
    }

    #[test]
    fn retry_durations_take_days_and_fractions() {
        let policy = config(&["1.5m", "2h", "1h30m"], "0.5d")
            .retry_policy()
            .unwrap();
        assert_eq!(
            policy.schedule,
            [
                Duration::from_secs(90),
                Duration::from_secs(7200),
                Duration::from_secs(5400)
            ]
        );
        assert_eq!(policy.max_age, Duration::from_secs(43_200));
    }

    #[test]
    fn a_bad_duration_names_the_setting() {
        let err = config(&["5 parsecs"], "3d").retry_policy().unwrap_err();
        assert!(err.starts_with("retry_schedule: \"5 parsecs\""), "{err}");
        let err = config(&["5m"], "soon").retry_policy().unwrap_err();
        assert!(err.starts_with("retry_max_age:"), "{err}");
    }
}
