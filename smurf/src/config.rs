//! The smurf's configuration file (TOML).
//!
//! ```toml
//! node = "smurf-1"                 # must match its certificate (farm init)
//! coordinator = "127.0.0.1:4433"   # coordinator QUIC address
//! farm_dir = "."                   # holds ca.pem, smurf-1.pem, smurf-1.key
//! window = 512                     # most recipients in flight on this smurf
//! helo_name = "smurf-1.example.net"  # EHLO name; default: this machine's FQDN
//! state_dir = "state/smurf-1"      # templates kept across restarts
//! role = "out"                     # role when first joining: out, in, bounce, web
//! max_messages_per_connection = 1000 # unless the shaping file says otherwise for a site
//! smtp_port = 25                   # port of MX hosts
//!
//! [resolver]                       # optional: DNS for MX delivery
//! nameserver = "127.0.0.1:53"      # default: the system's resolv.conf
//! timeout = "5s"                   # per query
//!
//! [tls]                            # optional: STARTTLS towards MX hosts and relays
//! policy = "opportunistic"         # or "required", "disabled"
//! verify = "insecure"              # or "webpki" (system roots), or
//! # verify = { custom_roots = "relay-ca.pem" }
//!
//! [relay_auth."smtp.example.net:587"]   # AUTH to a relay, keyed by its host:port
//! username = "mailfarm"
//! password_file = "relay.password"  # its first line is the password
//!
//! [inbound]                        # needed to take the `in` role (`farm assign NODE in`)
//! listen = "0.0.0.0:25"            # the MX address while the node is `in`; closed otherwise
//! mail_dir = "inbound"             # default: STATE_DIR/inbound (or ./inbound without state_dir)
//! tls_cert = "mx.pem"              # optional STARTTLS certificate chain and key
//! tls_key = "mx.key"
//!
//! [web]                            # needed to take the `web` role (`farm assign NODE web`)
//! listen = "127.0.0.1:8080"        # plain HTTP only on loopback; tls_cert/tls_key for HTTPS
//! journal_dir = "web"              # default: STATE_DIR/web
//!
//! [[dkim]]                         # any number of keys, one per From domain
//! domain = "example.net"
//! selector = "mf1"
//! algorithm = "ed25519-sha256"     # or "rsa-sha256"
//! private_key = "dkim/example.net.pem"
//! ```
//!
//! Relative paths are resolved against the config file's folder. Every problem found is
//! reported at once (an unknown key or a wrong type stops parsing first, as TOML reports it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mailfarm_pki::{read_toml, ConfigFileError, FarmFiles, Identity, PkiError};
use mailfarm_protocol::parse_duration;
use mailfarm_protocol::NodeRole;
use serde::Deserialize;

use crate::delivery::DeliverySettings;
use crate::outbound::dkim::{DkimKeyConfig, DkimSigner};
use crate::outbound::mx::ResolverSettings;
use crate::outbound::shaping::parse_tls_policy;
use crate::outbound::smtp::Credentials;
use crate::outbound::tls::{TlsClient, TlsVerify};
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
    /// EHLO name. Default: the machine's fully qualified name, else `NODE.mailfarm.invalid`
    /// (see [`crate::helo`]).
    pub helo_name: Option<String>,
    /// Folder for state kept across restarts (received templates), relative to the config
    /// file. Default: none (memory only).
    pub state_dir: Option<PathBuf>,
    /// The role this node takes when the coordinator has none stored for it (`out`, `in`,
    /// `bounce`, `web`). Default `out`. Once assigned, the coordinator's word wins.
    #[serde(default)]
    pub role: Option<NodeRole>,
    /// Messages per SMTP connection before reconnecting. Default 1000.
    #[serde(default = "default_per_connection")]
    pub max_messages_per_connection: u32,
    /// Port of MX hosts. Default 25.
    #[serde(default = "default_smtp_port")]
    pub smtp_port: u16,
    /// DNS resolver for MX delivery.
    #[serde(default)]
    pub resolver: ResolverConfig,
    /// STARTTLS policy and certificate checks.
    #[serde(default)]
    pub tls: TlsConfig,
    /// AUTH credentials per relay `host:port`.
    #[serde(default)]
    pub relay_auth: HashMap<String, RelayAuthConfig>,
    /// DKIM signing keys.
    #[serde(default)]
    pub dkim: Vec<DkimKeyConfig>,
    /// The `in` role's inbound MX (see [`crate::inbound::mx::InboundConfig`]).
    /// Default: none (the role's defaults apply).
    #[serde(default)]
    pub inbound: Option<crate::inbound::mx::InboundConfig>,
    /// The `web` role's server (see [`crate::web::role::WebRoleConfig`]). Without it the node
    /// cannot take the `web` role.
    #[serde(default)]
    pub web: Option<crate::web::role::WebRoleConfig>,
}

/// `[resolver]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverConfig {
    /// Name server `ip:port`; default: the system's resolv.conf.
    pub nameserver: Option<SocketAddr>,
    /// Per-query timeout, e.g. `"5s"` (default 5 s).
    pub timeout: Option<String>,
}

/// `[tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// `"opportunistic"` (default), `"required"` or `"disabled"`.
    pub policy: Option<String>,
    /// `"insecure"` (default), `"webpki"`, or `{ custom_roots = "ca.pem" }`.
    pub verify: Option<VerifyConfig>,
}

/// `[tls] verify`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum VerifyConfig {
    /// `"insecure"` or `"webpki"`.
    Named(String),
    /// `{ custom_roots = "ca.pem" }`.
    Custom {
        /// PEM file of the CA certificates to trust, relative to the config file.
        custom_roots: PathBuf,
    },
}

/// `[relay_auth."host:port"]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayAuthConfig {
    /// SASL user name.
    pub username: String,
    /// File whose first line is the password, relative to the config file.
    pub password_file: PathBuf,
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
fn default_smtp_port() -> u16 {
    25
}

/// Why a smurf's config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error(transparent)]
    File(#[from] ConfigFileError),
    /// Values that parsed but cannot be used, every one of them.
    #[error("{}: {}", path.display(), problems.join("; "))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// One line per problem.
        problems: Vec<String>,
    },
    /// Delivery settings that cannot be used (files named by the config included), every one.
    #[error("{}", .0.join("; "))]
    Delivery(Vec<String>),
    /// The node's certificate could not be loaded.
    #[error("loading the certificate of {node}")]
    Identity {
        /// The node.
        node: String,
        /// What loading said.
        source: PkiError,
    },
}

impl SmurfConfig {
    /// Reads a config file; relative paths are resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = read_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            });
        }
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        if let (Some(inbound), Some(state)) = (self.inbound.as_mut(), &self.state_dir) {
            // Each node keeps its received mail under its own state folder unless told
            // otherwise, so nodes sharing a config folder never share a mail store.
            if inbound.mail_dir == Path::new("inbound") {
                inbound.mail_dir = state.join("inbound");
            }
        }
        if let Some(inbound) = self.inbound.as_mut() {
            inbound.resolve_paths(base);
        }
        self.farm_dir = base.join(&self.farm_dir);
        self.state_dir = self.state_dir.take().map(|d| base.join(d));
        if let Some(web) = self.web.as_mut() {
            web.resolve_paths(base, self.state_dir.as_deref(), &self.farm_dir);
        }
        if let Some(VerifyConfig::Custom { custom_roots }) = &mut self.tls.verify {
            *custom_roots = base.join(&*custom_roots);
        }
        for auth in self.relay_auth.values_mut() {
            auth.password_file = base.join(&auth.password_file);
        }
        for key in &mut self.dkim {
            key.private_key = base.join(&key.private_key);
        }
    }

    /// Every problem of values that parsed (files are not read here).
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(web) = &self.web {
            problems.extend(web.problems());
        }
        if self.window == 0 {
            problems.push("window must be at least 1".to_owned());
        }
        if self.max_messages_per_connection == 0 {
            problems.push("max_messages_per_connection must be at least 1".to_owned());
        }
        if self.smtp_port == 0 {
            problems.push("smtp_port must be at least 1".to_owned());
        }
        if let Some(timeout) = &self.resolver.timeout {
            if parse_duration(timeout).ok().is_none_or(|d| d.is_zero()) {
                problems.push(format!(
                    "resolver.timeout {timeout:?} is not a duration such as \"5s\""
                ));
            }
        }
        if let Some(policy) = &self.tls.policy {
            if parse_tls_policy(policy).is_none() {
                problems.push(format!(
                    "tls.policy {policy:?} must be \"opportunistic\", \"required\" or \"disabled\""
                ));
            }
        }
        if let Some(VerifyConfig::Named(name)) = &self.tls.verify {
            if name != "insecure" && name != "webpki" {
                problems.push(format!(
                    "tls.verify {name:?} must be \"insecure\", \"webpki\" or {{ custom_roots = \"file.pem\" }}"
                ));
            }
        }
        for (relay, auth) in &self.relay_auth {
            if !relay.contains(':') {
                problems.push(format!("relay_auth.{relay:?} must be keyed by host:port"));
            }
            if auth.username.is_empty() {
                problems.push(format!("relay_auth.{relay:?}.username is empty"));
            }
        }
        problems
    }

    /// The delivery settings (reads password files, DKIM keys and CA files; reports every
    /// problem at once).
    pub fn delivery_settings(&self) -> Result<DeliverySettings, ConfigError> {
        let mut problems = self.problems();
        let mut delivery = DeliverySettings::new(
            self.helo_name
                .clone()
                .unwrap_or_else(|| crate::helo::default_helo_name(&self.node)),
        );
        delivery.max_messages_per_connection = self.max_messages_per_connection;
        delivery.smtp_port = self.smtp_port;
        delivery.resolver = ResolverSettings {
            nameserver: self.resolver.nameserver,
            ..ResolverSettings::default()
        };
        if let Some(timeout) = self
            .resolver
            .timeout
            .as_deref()
            .and_then(|t| parse_duration(t).ok())
        {
            delivery.resolver.timeout = timeout;
        }
        if let Some(policy) = self.tls.policy.as_deref().and_then(parse_tls_policy) {
            delivery.tls_policy = policy;
        }
        let verify = match &self.tls.verify {
            Some(VerifyConfig::Named(name)) if name == "webpki" => Some(TlsVerify::WebPki),
            Some(VerifyConfig::Custom { custom_roots }) => {
                Some(TlsVerify::CustomRoots(custom_roots.clone()))
            }
            _ => None,
        };
        if let Some(verify) = verify {
            match TlsClient::new(&verify) {
                Ok(client) => delivery.tls_client = Some(client),
                Err(e) => problems.push(format!("tls.verify: {e}")),
            }
        }
        for (relay, auth) in &self.relay_auth {
            match std::fs::read_to_string(&auth.password_file) {
                Ok(text) => {
                    let password = text.lines().next().unwrap_or("").to_owned();
                    let credentials = Credentials {
                        username: auth.username.clone(),
                        password,
                    };
                    delivery.relay_auth.insert(relay.clone(), credentials);
                }
                Err(e) => problems.push(format!(
                    "relay_auth.{relay:?}.password_file {}: {e}",
                    auth.password_file.display()
                )),
            }
        }
        if !self.dkim.is_empty() {
            match DkimSigner::load(&self.dkim) {
                Ok(signer) => {
                    tracing::info!(
                        keys = self.dkim.len(),
                        rsa_signer = crate::outbound::dkim::RSA_SIGNER,
                        "DKIM keys loaded"
                    );
                    delivery.dkim = Some(Arc::new(signer));
                }
                Err(e) => problems.push(format!("dkim: {e}")),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Delivery(problems));
        }
        Ok(delivery)
    }

    /// Loads the certificates and builds the settings.
    pub fn settings(&self) -> Result<SmurfSettings, ConfigError> {
        let identity =
            Identity::load(&FarmFiles::in_dir(&self.farm_dir, &self.node)).map_err(|source| {
                ConfigError::Identity {
                    node: self.node.clone(),
                    source,
                }
            })?;
        let delivery = self.delivery_settings()?;
        Ok(SmurfSettings {
            node: self.node.clone(),
            coordinator: self.coordinator,
            identity,
            window: self.window,
            delivery,
            state_dir: self.state_dir.clone(),
            initial_role: self.role,
            roles: crate::RoleServices::new(self.inbound.clone(), self.web.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> SmurfConfig {
        let mut config: SmurfConfig = toml::from_str(text).unwrap();
        config.resolve_paths(Path::new("/etc/mailfarm"));
        config
    }

    #[test]
    fn full_config_parses_and_resolves_paths() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("relay.password");
        std::fs::write(&password, "s3cret\nignored\n").unwrap();
        let text = format!(
            r#"
node = "smurf-1"
smtp_port = 2525
[resolver]
nameserver = "127.0.0.1:5353"
timeout = "2s"
[tls]
policy = "required"
verify = "insecure"
[relay_auth."smtp.test:587"]
username = "mf"
password_file = {password:?}
"#
        );
        let config = parse(&text);
        let d = config.delivery_settings().unwrap();
        assert_eq!(d.smtp_port, 2525);
        assert_eq!(
            d.resolver.nameserver,
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(d.resolver.timeout, std::time::Duration::from_secs(2));
        assert_eq!(d.tls_policy, crate::outbound::tls::TlsPolicy::Required);
        assert_eq!(d.relay_auth["smtp.test:587"].password, "s3cret");
        assert_eq!(d.helo_name, crate::helo::default_helo_name("smurf-1"));

        let custom = parse("node = \"n\"\n[tls]\nverify = { custom_roots = \"ca.pem\" }\n");
        assert!(matches!(
            &custom.tls.verify,
            Some(VerifyConfig::Custom { custom_roots }) if custom_roots == Path::new("/etc/mailfarm/ca.pem")
        ));
    }

    #[test]
    fn every_problem_is_reported() {
        let config = parse(
            r#"
node = "n"
window = 0
smtp_port = 0
[resolver]
timeout = "soon"
[tls]
policy = "sometimes"
verify = "trusting"
[relay_auth."nohost"]
username = ""
password_file = "/nonexistent/password"
"#,
        );
        let e = config.delivery_settings().unwrap_err().to_string();
        for want in [
            "window",
            "smtp_port",
            "resolver.timeout",
            "tls.policy",
            "tls.verify",
            "host:port",
            "username is empty",
            "password_file",
        ] {
            assert!(e.contains(want), "{want} missing from {e}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<SmurfConfig>("node = \"n\"\n[tls]\npolicy_x = 1\n").is_err());
        assert!(toml::from_str::<SmurfConfig>("node = \"n\"\nport = 25\n").is_err());
    }
}
