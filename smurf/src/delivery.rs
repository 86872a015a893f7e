//! The smurf's sending engine: render each recipient's message and push it through pooled,
//! reused SMTP sessions.
//!
//! Each delivery target (today a relay `host:port`) gets a pool of workers, one SMTP session
//! each, fed from one queue. A worker renders the message itself right before sending it, so a
//! rendered body lives only as long as its transaction. Jobs carry the generation of the
//! coordinator link they came from: when that link drops, the coordinator takes the recipients
//! back, so workers skip stale jobs instead of sending them twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailfarm_protocol::{Outcome, RecipientData, RecipientResult, TemplateBundle};
use mailfarm_templates::MessageTemplate;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};
use tracing::{debug, warn};

use crate::outbound::smtp::{ClientConfig, Delivery, SmtpClient, SmtpError};

/// A compiled campaign, shared by every job of that campaign.
pub struct CompiledCampaign {
    /// The bundle as received.
    pub bundle: TemplateBundle,
    /// Its compiled templates.
    pub template: MessageTemplate,
}

/// One recipient to render and send.
pub struct Job {
    /// Link generation the job came from.
    pub generation: u64,
    /// Campaign to render with.
    pub campaign: Arc<CompiledCampaign>,
    /// Recipient data.
    pub recipient: RecipientData,
    /// Where the result goes.
    pub results: mpsc::UnboundedSender<RecipientResult>,
}

/// Tunables of the sending engine.
#[derive(Clone, Debug)]
pub struct DeliverySettings {
    /// EHLO name.
    pub helo_name: String,
    /// Messages per SMTP session before it is closed and reopened (default 1000).
    pub max_messages_per_connection: u32,
    /// An idle session is closed after this long (default 5 s).
    pub idle_timeout: Duration,
    /// Connect timeout (default 30 s).
    pub connect_timeout: Duration,
    /// When set, every campaign is delivered here instead of its own relay (capture mode,
    /// tests).
    pub relay_override: Option<String>,
}

impl DeliverySettings {
    /// Defaults with the given EHLO name.
    pub fn new(helo_name: impl Into<String>) -> Self {
        Self {
            helo_name: helo_name.into(),
            max_messages_per_connection: 1000,
            idle_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(30),
            relay_override: None,
        }
    }
}

type JobQueue = Arc<Mutex<mpsc::UnboundedReceiver<Job>>>;

/// The pools of SMTP workers, one per delivery target.
pub struct DeliveryEngine {
    settings: Arc<DeliverySettings>,
    pools: HashMap<String, mpsc::UnboundedSender<Job>>,
    generation: Arc<AtomicU64>,
    workers: tokio::task::JoinSet<()>,
    shaping: Option<mailfarm_protocol::ShapingUpdate>,
}

impl DeliveryEngine {
    /// An engine with no pools yet.
    pub fn new(settings: DeliverySettings) -> Self {
        Self {
            settings: Arc::new(settings),
            pools: HashMap::new(),
            generation: Arc::new(AtomicU64::new(0)),
            workers: tokio::task::JoinSet::new(),
            shaping: None,
        }
    }

    /// Takes new shaping rules and this smurf's share of them.
    pub fn apply_shaping(&mut self, update: mailfarm_protocol::ShapingUpdate) {
        tracing::info!(share = update.share(), "shaping update received");
        self.shaping = Some(update);
    }

    /// Starts a new link generation: queued jobs of earlier links will be skipped.
    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Queues a job on its target's pool, creating the pool on first use.
    pub fn submit(&mut self, job: Job) {
        let target = self
            .settings
            .relay_override
            .clone()
            .or_else(|| job.campaign.bundle.delivery.relay.clone())
            .unwrap_or_else(|| "MX delivery is not wired in yet".to_owned());
        let connections = job.campaign.bundle.delivery.connections.max(1);
        let sender = self.pools.entry(target.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let queue: JobQueue = Arc::new(Mutex::new(rx));
            for _ in 0..connections {
                self.workers.spawn(worker(
                    target.clone(),
                    queue.clone(),
                    self.settings.clone(),
                    self.generation.clone(),
                ));
            }
            tx
        });
        if let Err(mpsc::error::SendError(job)) = sender.send(job) {
            // Workers are gone (cannot happen while the engine lives); report, never lose.
            let _ = job.results.send(result(
                &job.recipient,
                Outcome::Deferred,
                0,
                None,
                "delivery pool stopped".into(),
                0,
            ));
        }
    }

    /// Stops taking jobs, lets workers finish what is queued, and closes their sessions.
    pub async fn shutdown(mut self) {
        self.pools.clear();
        while self.workers.join_next().await.is_some() {}
    }
}

fn result(
    recipient: &RecipientData,
    outcome: Outcome,
    code: u16,
    enhanced: Option<(u8, u16, u16)>,
    text: String,
    rendered_bytes: u32,
) -> RecipientResult {
    RecipientResult {
        id: recipient.id,
        outcome,
        code,
        enhanced,
        text,
        rendered_bytes,
        remote: String::new(),
        duration_ms: 0,
    }
}

/// Adds where and how long to a result.
fn timed(mut result: RecipientResult, remote: &str, started: Instant) -> RecipientResult {
    result.remote = remote.to_owned();
    result.duration_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
    result
}

async fn connect(
    target: &str,
    settings: &DeliverySettings,
) -> Result<SmtpClient<TcpStream>, String> {
    let stream = tokio::time::timeout(settings.connect_timeout, TcpStream::connect(target))
        .await
        .map_err(|_| format!("connect to {target} timed out"))?
        .map_err(|e| format!("connect to {target}: {e}"))?;
    let _ = stream.set_nodelay(true);
    SmtpClient::connect(stream, ClientConfig::new(settings.helo_name.clone()))
        .await
        .map_err(|e| format!("{target}: {e}"))
}

async fn worker(
    target: String,
    queue: JobQueue,
    settings: Arc<DeliverySettings>,
    generation: Arc<AtomicU64>,
) {
    let mut session: Option<SmtpClient<TcpStream>> = None;
    let mut sent_on_session = 0u32;
    let mut connect_failures = 0u32;
    loop {
        let next = {
            let mut rx = queue.lock().await;
            tokio::time::timeout(settings.idle_timeout, rx.recv()).await
        };
        let job = match next {
            Ok(Some(job)) => job,
            Ok(None) => break,
            Err(_idle) => {
                if let Some(client) = session.take() {
                    let _ = client.quit().await;
                }
                continue;
            }
        };
        if job.generation != generation.load(Ordering::SeqCst) {
            continue; // its link is gone; the coordinator re-leased the recipient
        }
        let started = Instant::now();
        let recipient = &job.recipient;
        let email_field = job.campaign.bundle.email_field as usize;
        let email = recipient
            .values
            .get(email_field)
            .map(String::as_str)
            .unwrap_or("");
        let message = match job
            .campaign
            .template
            .render(recipient.id, email, &recipient.values)
        {
            Ok(message) => message,
            Err(e) => {
                let _ = job.results.send(result(
                    recipient,
                    Outcome::Failed,
                    0,
                    None,
                    format!("render: {e}"),
                    0,
                ));
                continue;
            }
        };
        let size = u32::try_from(message.data.len()).unwrap_or(u32::MAX);
        if session.as_ref().is_none_or(SmtpClient::is_broken) {
            session = None;
            match connect(&target, &settings).await {
                Ok(client) => {
                    session = Some(client);
                    sent_on_session = 0;
                    connect_failures = 0;
                }
                Err(reason) => {
                    connect_failures += 1;
                    warn!(%target, "{reason}");
                    let _ = job.results.send(timed(
                        result(recipient, Outcome::Deferred, 0, None, reason, size),
                        &target,
                        started,
                    ));
                    // Back off a little so a dead relay does not spin.
                    let pause = Duration::from_millis(50 * u64::from(connect_failures.min(20)));
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
        }
        let Some(client) = session.as_mut() else {
            continue;
        };
        let outcome = client
            .send(&message.return_path, &message.recipient, &message.data)
            .await;
        let report = match outcome {
            Ok(Delivery::Delivered(reply)) => (Outcome::Delivered, reply),
            Ok(Delivery::Deferred(rejection)) => (Outcome::Deferred, rejection.reply),
            Ok(Delivery::Failed(rejection)) => (Outcome::Failed, rejection.reply),
            Err(e) => {
                debug!(%target, "session error: {e}");
                session = None;
                // A session-level refusal (even a 5xx greeting) says nothing final about this
                // recipient: defer it. Only our own bad configuration fails it.
                let outcome = if matches!(e, SmtpError::InvalidHeloName(_)) {
                    Outcome::Failed
                } else {
                    Outcome::Deferred
                };
                let code = match &e {
                    SmtpError::Rejected { reply, .. } => reply.code,
                    _ => 0,
                };
                let _ =
                    job.results
                        .send(result(recipient, outcome, code, None, e.to_string(), size));
                continue;
            }
        };
        let (outcome, reply) = report;
        let enhanced = reply.enhanced.map(|e| (e.class, e.subject, e.detail));
        let _ = job.results.send(result(
            recipient, outcome, reply.code, enhanced, reply.text, size,
        ));
        sent_on_session += 1;
        if sent_on_session >= settings.max_messages_per_connection {
            if let Some(client) = session.take() {
                let _ = client.quit().await;
            }
        }
    }
    if let Some(client) = session.take() {
        let _ = client.quit().await;
    }
}
