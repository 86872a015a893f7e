//! The services behind the roles other than `out`: how each one starts with what the node's
//! config gives it, and how it stops. The switch ([`crate::switch`]) decides when; this module
//! knows how. Each role's code lives in its own folder (`inbound/`, `bounce/`, `web/`).

use mailfarm_protocol::{InboundCounters, InboundPolicy, InboundRecord, NodeRole};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// What the node's config gives the role services.
#[derive(Clone, Default)]
pub struct RoleServices {
    /// Folder where the `in` role stores returned mail (VERP) for the coordinator.
    pub returned_dir: Option<std::path::PathBuf>,
}

/// A running role service.
pub struct Service {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    serving: Option<String>,
}

impl Service {
    /// The address the service serves, if any.
    pub fn serving(&self) -> Option<String> {
        self.serving.clone()
    }

    /// Stops the service gracefully and waits for it.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        if let Err(e) = self.task.await {
            tracing::warn!("role service task failed: {e}");
        }
    }
}

impl RoleServices {
    /// Starts the service of `role` (`out` has none: the delivery engine is always there).
    pub async fn start(
        &self,
        role: NodeRole,
        policy: watch::Receiver<InboundPolicy>,
        records: mpsc::UnboundedSender<InboundRecord>,
    ) -> Result<Option<Service>, String> {
        match role {
            NodeRole::Out => Ok(None),
            NodeRole::In => Err("the in role is not available in this build yet".into()),
            NodeRole::Bounce | NodeRole::Web => Err(format!(
                "the {role} role is not available in this build yet"
            )),
        }
    }

    /// Inbound counters of this process.
    pub fn inbound_counters(&self) -> InboundCounters {
        InboundCounters::default()
    }
}
