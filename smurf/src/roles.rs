//! The services behind the roles other than `out`: how each one starts with what the node's
//! config gives it, and how it stops. The switch ([`crate::switch`]) decides when; this module
//! knows how. Each role's code lives in its own folder (`inbound/`, `bounce/`, `web/`).

use std::sync::{Arc, Mutex, PoisonError};

use mailfarm_protocol::{InboundCounters, InboundPolicy, InboundRecord, NodeRole};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::delivery::DeliverySettings;
use crate::inbound::forward::relay::{self, ForwardHub, ForwarderConfig};
use crate::inbound::mx::{self, Destination, InboundConfig, InboundEvent, InboundServer};
use crate::web::role::WebRoleConfig;
use crate::web::{DashboardSnapshot, UnsubscribeJournal, WebConfig, WebServer};

/// What the node's config gives the role services.
#[derive(Clone, Default)]
pub struct RoleServices {
    /// The `in` role's server settings; `None` when the config has no `[inbound]` section.
    pub inbound: Option<Arc<InboundConfig>>,
    /// The `web` role's settings; `None` when the config has no `[web]` section.
    pub web: Option<Arc<WebRoleConfig>>,
    /// Inbound counters of the terms that ended, and the running term's live counters.
    tally: Arc<Mutex<InboundTally>>,
    /// Forwarding: rules, counters and the channels to the link (for the whole process).
    forward: Arc<ForwardHub>,
    /// The outbound engine's settings, for relaying forwarded mail (`None`: the defaults
    /// with the inbound hostname).
    delivery: Option<DeliverySettings>,
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
    /// The web role's unsubscribe journal, forwarded to the coordinator by the link.
    journal: Option<UnsubscribeJournal>,
    /// The web role's dashboard feed.
    dashboard: Option<watch::Sender<DashboardSnapshot>>,
}

impl Service {
    /// The address the service serves, if any.
    pub fn serving(&self) -> Option<String> {
        self.serving.clone()
    }

    /// The web role's unsubscribe journal, if this is the web role.
    pub fn journal(&self) -> Option<&UnsubscribeJournal> {
        self.journal.as_ref()
    }

    /// Feeds the web role's dashboard (nothing for other roles).
    pub fn show(&self, view: &mailfarm_protocol::FarmSnapshot) {
        if let Some(dashboard) = &self.dashboard {
            dashboard.send_replace(crate::web::role::dashboard_snapshot(view));
        }
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
    /// Services with the `in` and `web` roles' settings from the node's config (if any).
    pub fn new(inbound: Option<InboundConfig>, web: Option<WebRoleConfig>) -> Self {
        Self {
            inbound: inbound.map(Arc::new),
            web: web.map(Arc::new),
            tally: Arc::default(),
            forward: Arc::default(),
            delivery: None,
        }
    }

    /// The same services, relaying forwarded mail with these outbound settings.
    pub fn with_delivery(mut self, delivery: DeliverySettings) -> Self {
        self.delivery = Some(delivery);
        self
    }

    /// Forwarding's rules, counters and link channels.
    pub fn forward(&self) -> &Arc<ForwardHub> {
        &self.forward
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
            NodeRole::Web => {
                let current = policy.borrow().clone();
                self.start_web(&current).await.map(Some)
            }
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
        let forward = self.forward.clone();
        forward
            .state
            .write()
            .set_verp_key(&policy.borrow().verp_key);
        let (mx_policy_tx, mx_policy_rx) = watch::channel(mx_policy(&policy.borrow(), &forward));
        let hub = forward.clone();
        let server = InboundServer::bind(config, mx_policy_rx)
            .await
            .map_err(|e| format!("starting the inbound server: {e}"))?
            .on_message(move |event| {
                if event
                    .stored
                    .iter()
                    .any(|(k, _)| *k == mx::MailKind::Forward)
                {
                    hub.stored();
                }
                let _ = records.send(record_of(event));
            });
        let forwarder_config = ForwarderConfig {
            dir: config.mail_dir.join(mx::MailKind::Forward.folder()),
            hostname: config.hostname.clone(),
            delivery: self
                .delivery
                .clone()
                .unwrap_or_else(|| DeliverySettings::new(config.hostname.clone())),
        };
        let serving = Some(server.local_addr().to_string());
        lock(&self.tally).current = Some(server.counters());
        let (stop, mut stopped) = watch::channel(false);
        let tally = self.tally.clone();
        let mut policy = policy;
        let forwarder = tokio::spawn(relay::run(
            forwarder_config,
            forward.clone(),
            stopped.clone(),
        ));
        let task = tokio::spawn(async move {
            // The coordinator's policy, as the server's own type, live.
            let follow = async move {
                while policy.changed().await.is_ok() {
                    let current = policy.borrow().clone();
                    forward.state.write().set_verp_key(&current.verp_key);
                    mx_policy_tx.send_replace(mx_policy(&current, &forward));
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
            if let Err(e) = forwarder.await {
                tracing::warn!("forwarding task failed: {e}");
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
            journal: None,
            dashboard: None,
        })
    }

    async fn start_web(&self, policy: &InboundPolicy) -> Result<Service, String> {
        let Some(config) = &self.web else {
            return Err(
                "this node's config has no [web] section: it cannot take the web role".into(),
            );
        };
        if policy.verp_key.is_empty() {
            return Err("the coordinator has not sent the farm's keys yet".into());
        }
        let dashboard_hash = match &config.dashboard_hash {
            Some(path) if path.exists() => Some(
                mailfarm_pki::dashboard::load_dashboard_hash(path)
                    .map_err(|e| format!("the dashboard secret's hash: {e}"))?,
            ),
            _ => None,
        };
        let web_config = WebConfig {
            listen: config.listen,
            tls: config.tls_cert.clone().zip(config.tls_key.clone()),
            journal_dir: config
                .journal_dir
                .clone()
                .unwrap_or_else(|| std::path::PathBuf::from("web")),
            unsubscribe_key: mailfarm_templates::derive_unsubscribe_key(&policy.verp_key),
            dashboard_hash,
            undo_window: config.undo_window().map_err(|e| e.to_string())?,
        };
        let (dashboard, snapshots) = watch::channel(DashboardSnapshot::default());
        let server = WebServer::start(web_config, snapshots)
            .await
            .map_err(|e| format!("starting the web server: {e}"))?;
        let serving = Some(server.local_addr().to_string());
        let journal = server.journal().clone();
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let _ = stopped.wait_for(|s| *s).await;
            server.shutdown().await;
        });
        Ok(Service {
            stop,
            task,
            serving,
            journal: Some(journal),
            dashboard: Some(dashboard),
        })
    }

    /// Inbound counters of this process: every `in` term, the running one included.
    pub fn inbound_counters(&self) -> InboundCounters {
        let tally = lock(&self.tally);
        let mut total = tally.ended.clone();
        if let Some(current) = &tally.current {
            total.add(&counters_of(current));
        }
        drop(tally);
        self.forward.counters.add_to(&mut total);
        total
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The coordinator's policy as the inbound server reads it.
fn mx_policy(policy: &InboundPolicy, forward: &ForwardHub) -> mx::InboundPolicy {
    mx::InboundPolicy::new(
        (!policy.verp_key.is_empty()).then_some(policy.verp_key.as_slice()),
        policy.bounce_domains.iter().cloned(),
        policy.local_addresses.iter().cloned(),
        policy.forwarded.iter().cloned(),
    )
    .with_forward(forward.state.clone())
}

/// The server's counters in the farm's terms.
fn counters_of(c: &mx::InboundCounters) -> InboundCounters {
    use std::sync::atomic::Ordering::Relaxed;
    let refused = [
        ("relay", c.refused_relay.load(Relaxed)),
        ("unknown-user", c.refused_unknown_user.load(Relaxed)),
        ("forged-verp", c.refused_forged_verp.load(Relaxed)),
        ("bad-srs", c.refused_bad_srs.load(Relaxed)),
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
        ..Default::default()
    }
}

/// The accounting line of an accepted message.
fn record_of(event: &InboundEvent) -> InboundRecord {
    let kind = event
        .rcpts
        .iter()
        .map(|(_, d)| match d {
            Destination::Bounce(_) => "bounce",
            Destination::Unsubscribe(_) => "unsubscribe",
            Destination::Local => "local",
            Destination::Forward(_) => "forward",
            Destination::SrsReturn(_) => "forward",
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
