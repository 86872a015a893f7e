//! The services behind the roles other than `out`: how each one starts with what the node's
//! config gives it, and how it stops. The switch ([`crate::switch`]) decides when; this module
//! knows how. Each role's code lives in its own folder (`inbound/`, `bounce/`, `web/`).

use std::sync::{Arc, Mutex, PoisonError};

use mailfarm_protocol::{InboundCounters, InboundPolicy, InboundRecord, NodeRole};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::inbound::mx::{self, Destination, InboundConfig, InboundEvent, InboundServer};

/// What the node's config gives the role services.
#[derive(Clone, Default)]
pub struct RoleServices {
    /// The `in` role's server settings; `None` when the config has no `[inbound]` section.
    pub inbound: Option<Arc<InboundConfig>>,
    /// Inbound counters of the terms that ended, and the running term's live counters.
    tally: Arc<Mutex<InboundTally>>,
}

#[derive(Default)]
struct InboundTally {
    ended: InboundCounters,
    current: Option<Arc<mx::InboundCounters>>,
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
    /// Services with the `in` role's settings from the node's config (if any).
    pub fn new(inbound: Option<InboundConfig>) -> Self {
        Self {
            inbound: inbound.map(Arc::new),
            tally: Arc::default(),
        }
    }

    /// Where the `in` role stores returned mail for the coordinator (its `bounces/new`).
    pub fn returned_dir(&self) -> Option<std::path::PathBuf> {
        self.inbound
            .as_ref()
            .map(|c| c.mail_dir.join(mx::MailKind::Bounce.folder()).join("new"))
    }

    /// Starts the service of `role` (`out` and `bounce` have none of their own: the delivery
    /// engine and the link do their work).
    pub async fn start(
        &self,
        role: NodeRole,
        policy: watch::Receiver<InboundPolicy>,
        records: mpsc::UnboundedSender<InboundRecord>,
    ) -> Result<Option<Service>, String> {
        match role {
            NodeRole::Out | NodeRole::Bounce => Ok(None),
            NodeRole::In => self.start_inbound(policy, records).await.map(Some),
            NodeRole::Web => Err("the web role is not available in this build yet".into()),
        }
    }

    async fn start_inbound(
        &self,
        policy: watch::Receiver<InboundPolicy>,
        records: mpsc::UnboundedSender<InboundRecord>,
    ) -> Result<Service, String> {
        let Some(config) = &self.inbound else {
            return Err(
                "this node's config has no [inbound] section: it cannot take the in role".into(),
            );
        };
        let (mx_policy_tx, mx_policy_rx) = watch::channel(mx_policy(&policy.borrow()));
        let server = InboundServer::bind(config, mx_policy_rx)
            .await
            .map_err(|e| format!("starting the inbound server: {e}"))?
            .on_message(move |event| {
                let _ = records.send(record_of(event));
            });
        let serving = Some(server.local_addr().to_string());
        lock(&self.tally).current = Some(server.counters());
        let (stop, mut stopped) = watch::channel(false);
        let tally = self.tally.clone();
        let mut policy = policy;
        let task = tokio::spawn(async move {
            // The coordinator's policy, as the server's own type, live.
            let follow = async move {
                while policy.changed().await.is_ok() {
                    mx_policy_tx.send_replace(mx_policy(&policy.borrow()));
                }
                std::future::pending::<()>().await;
            };
            let signal = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            tokio::select! {
                result = server.run(signal) => {
                    if let Err(e) = result {
                        tracing::error!("inbound server failed: {e}");
                    }
                }
                () = follow => {}
            }
            let mut tally = lock(&tally);
            if let Some(current) = tally.current.take() {
                let ended = counters_of(&current);
                tally.ended.add(&ended);
            }
        });
        Ok(Service {
            stop,
            task,
            serving,
        })
    }

    /// Inbound counters of this process: every `in` term, the running one included.
    pub fn inbound_counters(&self) -> InboundCounters {
        let tally = lock(&self.tally);
        let mut total = tally.ended.clone();
        if let Some(current) = &tally.current {
            total.add(&counters_of(current));
        }
        total
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The coordinator's policy as the inbound server reads it.
fn mx_policy(policy: &InboundPolicy) -> mx::InboundPolicy {
    mx::InboundPolicy::new(
        (!policy.verp_key.is_empty()).then_some(policy.verp_key.as_slice()),
        policy.bounce_domains.iter().cloned(),
        policy.local_addresses.iter().cloned(),
        policy.forwarded.iter().cloned(),
    )
}

/// The server's counters in the farm's terms.
fn counters_of(c: &mx::InboundCounters) -> InboundCounters {
    use std::sync::atomic::Ordering::Relaxed;
    let refused = [
        ("relay", c.refused_relay.load(Relaxed)),
        ("unknown-user", c.refused_unknown_user.load(Relaxed)),
        ("forged-verp", c.refused_forged_verp.load(Relaxed)),
        (
            "too-many-recipients",
            c.refused_too_many_recipients.load(Relaxed),
        ),
        ("too-big", c.refused_too_big.load(Relaxed)),
        ("line-too-long", c.refused_line_too_long.load(Relaxed)),
        ("sessions", c.refused_sessions.load(Relaxed)),
        ("per-ip", c.refused_per_ip.load(Relaxed)),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(reason, n)| (reason.to_owned(), n))
    .collect();
    InboundCounters {
        sessions: c.connections.load(Relaxed),
        received: c.received.load(Relaxed),
        kept: c.kept.load(Relaxed),
        to_bounce: c.bounces.load(Relaxed),
        forwarded: c.forwarded.load(Relaxed),
        refused,
    }
}

/// The accounting line of an accepted message.
fn record_of(event: &InboundEvent) -> InboundRecord {
    let kind = event
        .rcpts
        .iter()
        .map(|(_, d)| match d {
            Destination::Bounce(_) => "bounce",
            Destination::Local => "local",
            Destination::Forward => "forward",
        })
        .next()
        .unwrap_or("local");
    InboundRecord {
        time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        client: event.peer.map(|p| p.ip().to_string()).unwrap_or_default(),
        mail_from: event.from.clone(),
        rcpt_to: event.rcpts.iter().map(|(a, _)| a.clone()).collect(),
        kind: kind.to_owned(),
        size: event.size as u64,
        stored_as: event
            .stored
            .iter()
            .map(|(k, name)| format!("{}/{name}", k.folder()))
            .collect::<Vec<_>>()
            .join(","),
    }
}
