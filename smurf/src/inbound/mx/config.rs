//! The `[inbound]` section of a smurf's config: where the inbound MX listens,
//! where it keeps mail, its STARTTLS certificate and its limits.
//!
//! ```toml
//! [inbound]
//! listen = "0.0.0.0:25"            # default
//! hostname = "mx1.example.net"     # greeting and EHLO name; default "localhost"
//! mail_dir = "inbound"             # default; bounces/, local/, forward/ maildirs inside
//! tls_cert = "mx.pem"              # both or neither: STARTTLS offered when set
//! tls_key = "mx.key"
//! local_addresses = ["postmaster@example.net", "abuse@example.net"]
//!
//! [inbound.limits]                 # every key optional, defaults shown
//! max_message_size = 26214400      # bytes (25 MiB), announced as SIZE
//! max_recipients = 100             # per message
//! max_sessions = 300               # concurrent sessions on this node
//! max_sessions_per_ip = 30         # concurrent sessions from one client IP
//! max_command_line = 2048          # bytes, CRLF included
//! max_message_line = 65536         # bytes, CRLF included
//! command_timeout_secs = 300       # waiting for the next command
//! data_line_timeout_secs = 180     # waiting for each message line
//! data_timeout_secs = 600          # the whole DATA transfer
//! session_timeout_secs = 3600      # the whole session
//! shutdown_grace_secs = 30         # for transfers in progress at shutdown
//! max_errors = 20                  # bad commands before 421
//! ```
//!
//! Relative paths are resolved by [`InboundConfig::resolve_paths`] against the
//! config file's folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::smtp::server::ServerConfig;

/// `[inbound]`: the inbound MX role's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// Address to listen on. Default `0.0.0.0:25`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Name in the greeting and EHLO reply. Default `localhost`.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// Folder of the mail store. Default `inbound`.
    #[serde(default = "default_mail_dir")]
    pub mail_dir: PathBuf,
    /// STARTTLS certificate chain (PEM). Needs `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// STARTTLS private key (PEM). Needs `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Addresses always kept for the operator (besides those the coordinator
    /// sends in the live policy). Default: none.
    #[serde(default)]
    pub local_addresses: Vec<String>,
    /// Protocol limits.
    #[serde(default)]
    pub limits: InboundLimits,
}

/// `[inbound.limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundLimits {
    /// Largest message, bytes. Default 25 MiB.
    pub max_message_size: u64,
    /// Recipients per message. Default 100.
    pub max_recipients: usize,
    /// Concurrent sessions on the node. Default 300.
    pub max_sessions: usize,
    /// Concurrent sessions per client IP. Default 30.
    pub max_sessions_per_ip: usize,
    /// Longest command line, CRLF included. Default 2048.
    pub max_command_line: usize,
    /// Longest message line, CRLF included. Default 65536.
    pub max_message_line: usize,
    /// Seconds to wait for a command. Default 300.
    pub command_timeout_secs: u64,
    /// Seconds to wait for each message line. Default 180.
    pub data_line_timeout_secs: u64,
    /// Seconds for a whole DATA transfer. Default 600.
    pub data_timeout_secs: u64,
    /// Seconds for a whole session. Default 3600.
    pub session_timeout_secs: u64,
    /// Seconds transfers in progress may take at shutdown. Default 30.
    pub shutdown_grace_secs: u64,
    /// Bad commands per session before 421. Default 20.
    pub max_errors: u32,
}

impl Default for InboundLimits {
    fn default() -> Self {
        Self {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_sessions: 300,
            max_sessions_per_ip: 30,
            max_command_line: 2048,
            max_message_line: 64 * 1024,
            command_timeout_secs: 300,
            data_line_timeout_secs: 180,
            data_timeout_secs: 600,
            session_timeout_secs: 3600,
            shutdown_grace_secs: 30,
            max_errors: 20,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 25))
}

fn default_hostname() -> String {
    "localhost".to_owned()
}

fn default_mail_dir() -> PathBuf {
    PathBuf::from("inbound")
}

impl Default for InboundConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            hostname: default_hostname(),
            mail_dir: default_mail_dir(),
            tls_cert: None,
            tls_key: None,
            local_addresses: Vec::new(),
            limits: InboundLimits::default(),
        }
    }
}

impl InboundConfig {
    /// Makes relative paths relative to `base` (the config file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.mail_dir);
        if let Some(p) = self.tls_cert.as_mut() {
            fix(p);
        }
        if let Some(p) = self.tls_key.as_mut() {
            fix(p);
        }
    }

    /// The server core's settings (without TLS, which the caller loads).
    pub(super) fn server_config(&self) -> ServerConfig {
        let l = &self.limits;
        let secs = Duration::from_secs;
        ServerConfig {
            hostname: self.hostname.clone(),
            max_message_size: l.max_message_size,
            max_recipients: l.max_recipients,
            max_sessions: Some(l.max_sessions),
            max_sessions_per_ip: Some(l.max_sessions_per_ip),
            command_line_max: l.max_command_line,
            data_line_max: l.max_message_line,
            command_timeout: secs(l.command_timeout_secs),
            data_line_timeout: secs(l.data_line_timeout_secs),
            data_timeout: Some(secs(l.data_timeout_secs)),
            session_timeout: Some(secs(l.session_timeout_secs)),
            shutdown_grace: secs(l.shutdown_grace_secs),
            max_errors: l.max_errors,
            strict: true,
            tls: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: InboundConfig = toml::from_str("").unwrap();
        assert_eq!(c.listen, "0.0.0.0:25".parse().unwrap());
        assert_eq!(c.limits.max_sessions, 300);
        let c: InboundConfig = toml::from_str(
            "listen = \"127.0.0.1:0\"\nlocal_addresses = [\"postmaster@x.test\"]\n[limits]\nmax_recipients = 5\n",
        )
        .unwrap();
        assert_eq!(c.limits.max_recipients, 5);
        assert_eq!(c.limits.max_message_size, 25 * 1024 * 1024);
        assert!(toml::from_str::<InboundConfig>("lisen = \"x\"").is_err());
        assert!(toml::from_str::<InboundConfig>("[limits]\nmax_sesions = 1").is_err());
    }
}
