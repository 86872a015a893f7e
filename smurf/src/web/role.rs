//! The web role's place on a node: its `[web]` config section, and the translation of the
//! coordinator's farm view into the dashboard's snapshot.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mailfarm_protocol::{FarmSnapshot, NodeState};
use serde::Deserialize;

use super::dashboard::{CampaignCounters, DashboardSnapshot, InboundCounters, NodeInfo};

/// `[web]` in a smurf's config: what the node serves when it holds the `web` role.
///
/// ```toml
/// [web]
/// listen = "127.0.0.1:8080"   # plain HTTP only on loopback; give tls_cert/tls_key otherwise
/// tls_cert = "web.pem"        # certificate chain (PEM) for HTTPS
/// tls_key = "web.key"
/// journal_dir = "web"          # default: STATE_DIR/web (or ./web without state_dir)
/// undo_window = "24h"         # how long a recipient may undo an unsubscribe
/// dashboard_hash = "dashboard.argon2"  # default: the farm folder's; absent: no dashboard
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebRoleConfig {
    /// Where to listen. Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Certificate chain (PEM) for HTTPS; needs `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) for HTTPS; needs `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Folder of the unsubscribe journal. Default `STATE_DIR/web`, else `web`.
    pub journal_dir: Option<PathBuf>,
    /// How long after an unsubscribe the recipient may undo it, e.g. `"24h"`. Default 24 h.
    pub undo_window: Option<String>,
    /// argon2 hash file of the operators' dashboard secret. Default: `dashboard.argon2` in the
    /// farm folder; when the file is missing the dashboard is off.
    pub dashboard_hash: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl WebRoleConfig {
    /// Makes relative paths relative to `base` and fills the defaults that depend on the
    /// node's folders.
    pub fn resolve_paths(&mut self, base: &Path, state_dir: Option<&Path>, farm_dir: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for p in [
            &mut self.tls_cert,
            &mut self.tls_key,
            &mut self.dashboard_hash,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        match &mut self.journal_dir {
            Some(dir) => fix(dir),
            None => {
                self.journal_dir = Some(match state_dir {
                    Some(state) => state.join("web"),
                    None => base.join("web"),
                })
            }
        }
        if self.dashboard_hash.is_none() {
            self.dashboard_hash = Some(farm_dir.join(mailfarm_pki::dashboard::DASHBOARD_HASH_FILE));
        }
    }

    /// Problems with these settings, all of them.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            problems.push("[web] tls_cert and tls_key go together".to_owned());
        }
        if self.tls_cert.is_none() && !self.listen.ip().is_loopback() {
            problems.push(format!(
                "[web] listen = {}: plain HTTP only on loopback; give tls_cert and tls_key",
                self.listen
            ));
        }
        if let Err(e) = self.undo_window() {
            problems.push(format!("[web] undo_window: {e}"));
        }
        problems
    }

    /// The undo window.
    pub fn undo_window(&self) -> Result<Duration, mailfarm_protocol::DurationError> {
        match &self.undo_window {
            Some(text) => mailfarm_protocol::parse_duration(text),
            None => Ok(Duration::from_secs(24 * 3600)),
        }
    }
}

/// The dashboard's snapshot of the coordinator's farm view.
pub fn dashboard_snapshot(view: &FarmSnapshot) -> DashboardSnapshot {
    let mut campaigns: Vec<CampaignCounters> = view
        .campaigns
        .iter()
        .map(|c| CampaignCounters {
            id: c.id.clone(),
            status: c.state.as_str().to_owned(),
            total: c.total,
            sent: c.delivered,
            deferred: c.deferred,
            failed: c.failed,
            bounced: c.bounced_hard + c.bounced_soft,
            complained: c.complaints,
            unsubscribed: c.unsubscribed,
        })
        .collect();
    campaigns.reverse();
    DashboardSnapshot {
        at_ms: view.time_ms,
        campaigns,
        nodes: view
            .nodes
            .iter()
            .map(|n| NodeInfo {
                name: n.node.clone(),
                role: n.role.as_str().to_owned(),
                state: if n.connected {
                    n.state.as_str().to_owned()
                } else {
                    NodeState::Idle.as_str().to_owned() + " (offline)"
                },
                load_percent: u32::from(n.load.cpu_percent),
                serves: n.serving.clone(),
            })
            .collect(),
        bounce_queue_depth: view.bounce_queue,
        inbound: InboundCounters {
            received: view.inbound.received,
            kept: view.inbound.kept,
            to_bounce: view.inbound.to_bounce,
            refused: view.inbound.refused_total(),
        },
    }
}
