//! The coordinator daemon's network side: accepts QUIC connections, tells smurfs from
//! operators by their hello and certificate, feeds smurfs work and answers operators.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use mailfarm_pki::wire::{write_frame, FrameReader, WireError};
use mailfarm_pki::{peer_has_name, smurf_dns_name, Identity};
use mailfarm_protocol::{
    Assignment, CampaignSubmission, CoordinatorLink, CoordinatorMessage, Hello, InboundPolicy,
    Role, SmurfMessage, DEFAULT_MAX_FRAME,
};
use tracing::{debug, error, info, warn};

mod commits;
mod forward_link;
mod role_link;

use crate::accounting::AccountingLog;
use crate::farm::{Farm, FarmError, RetryPolicy};
use crate::launch::{launch, LaunchError, Launched};
use crate::links::{answer_hello, refuse};
use crate::store::Store;
use commits::PendingCommits;

/// Largest frame a smurf may send: a results batch is far smaller.
const SMURF_MAX_FRAME: usize = 4 * 1024 * 1024;
/// Time a client has to open its stream and say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a coordinator; [`CoordinatorSettings::new`] documents the defaults.
pub struct CoordinatorSettings {
    /// QUIC listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Certificates and key.
    pub identity: Identity,
    /// Key that signs VERP return paths.
    pub verp_key: Vec<u8>,
    /// Most recipients per batch frame (default 128).
    pub batch_size: usize,
    /// Folder of the state database, rejects reports and accounting log; None keeps state in
    /// memory only (default None).
    pub state_dir: Option<PathBuf>,
    /// Commit every state change to disk before acknowledging it (default true; false is the
    /// benchmark baseline).
    pub durable: bool,
    /// Retry policy for temporary failures (default [`RetryPolicy::default`]).
    pub retry: RetryPolicy,
    /// Address of the Prometheus `/metrics` endpoint (default none).
    pub metrics_listen: Option<SocketAddr>,
    /// Accounting log rotation size (default 64 MiB).
    pub accounting_max_bytes: u64,
    /// How long a shutdown waits for in-flight results (default 30 s).
    pub shutdown_grace: Duration,
    /// The shaping file's text, sent to every smurf (default empty: smurf defaults).
    pub shaping: String,
    /// Addresses `in` nodes accept for the operator besides postmaster@, abuse@ and the
    /// campaigns' Reply-To addresses (default none).
    pub inbound_local_addresses: Vec<String>,
    /// Forwarding: SRS domain, notices' From, the no-notice list (default: no SRS domain).
    pub forward: crate::forward::ForwardConfig,
}

impl CoordinatorSettings {
    /// Settings with the defaults.
    pub fn new(listen: SocketAddr, identity: Identity, verp_key: Vec<u8>) -> Self {
        Self {
            listen,
            identity,
            verp_key,
            batch_size: 128,
            state_dir: None,
            durable: true,
            retry: RetryPolicy::default(),
            metrics_listen: None,
            accounting_max_bytes: 64 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            shaping: String::new(),
            inbound_local_addresses: Vec::new(),
            forward: crate::forward::ForwardConfig::default(),
        }
    }
}

/// Why a coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The coordinator's certificates do not make a TLS configuration.
    #[error("building the coordinator's TLS configuration: {0}")]
    Tls(String),
    /// QUIC could not listen (address in use, no permission).
    #[error("starting QUIC on {addr}: {source}")]
    Quic {
        /// The listen address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
    /// The state folder cannot be created.
    #[error("creating the state folder {dir}: {source}")]
    StateDir {
        /// The folder.
        dir: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The state database cannot be opened or read (already open by another coordinator?).
    #[error("opening the state database: {0}")]
    State(#[from] FarmError),
    /// The accounting log cannot be opened.
    #[error("opening the accounting log: {0}")]
    Accounting(#[source] std::io::Error),
    /// The thread that commits results cannot be started.
    #[error("starting the results committer: {0}")]
    Committer(#[source] std::io::Error),
    /// The metrics endpoint cannot listen.
    #[error("binding the metrics endpoint on {addr}: {source}")]
    Metrics {
        /// The metrics address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
}

/// A running coordinator.
pub struct Coordinator {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    metrics: Option<tokio::net::TcpListener>,
    shutdown_grace: Duration,
}

struct Shared {
    farm: Farm,
    verp_key: Vec<u8>,
    inbound_local_addresses: Vec<String>,
    batch_size: usize,
    state_dir: Option<PathBuf>,
    accounting: Option<Mutex<AccountingLog>>,
    /// Group commit of every link's results frames.
    commits: commits::Committer,
    /// The forwarding rule set and notice grants.
    forward: crate::forward::Forwarding,
}

/// A cheap handle for launching campaigns and reading counters in-process.
#[derive(Clone)]
pub struct CoordinatorHandle {
    shared: Arc<Shared>,
}

impl CoordinatorHandle {
    /// Checks, stores and ingests a campaign whose CSV is read from `csv`.
    pub async fn launch(
        &self,
        submission: CampaignSubmission,
        csv: impl std::io::Read + Send + 'static,
    ) -> Result<Launched, LaunchError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.launch(submission, csv))
            .await
            .map_err(|e| LaunchError::Id(format!("ingest task failed: {e}")))?
    }

    /// The farm state.
    pub fn farm(&self) -> &Farm {
        &self.shared.farm
    }

    /// The forwarding rule set and notice grants.
    pub fn forwarding(&self) -> &crate::forward::Forwarding {
        &self.shared.forward
    }
}

impl Shared {
    fn launch(
        &self,
        submission: CampaignSubmission,
        csv: impl std::io::Read,
    ) -> Result<Launched, LaunchError> {
        let rejects_dir = self.state_dir.as_ref().map(|d| d.join("rejects"));
        launch(
            &self.farm,
            submission,
            csv,
            &self.verp_key,
            rejects_dir.as_deref(),
        )
    }
}

/// Derives the QUIC stateless-reset key from the node key, so that a restarted coordinator
/// can reset its predecessor's connections and smurfs reconnect at once.
fn endpoint_config(identity: &Identity) -> quinn::EndpointConfig {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        &[
            b"mailfarm stateless reset".as_slice(),
            identity.key.secret_der(),
        ]
        .concat(),
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, digest.as_ref());
    let mut config = quinn::EndpointConfig::new(Arc::new(key));
    // Connection ids must also validate across restarts, or packets for the predecessor's
    // connections are dropped as invalid instead of being answered with a reset.
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&digest.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

impl Coordinator {
    /// Opens the state, binds the QUIC endpoint (and the metrics listener).
    pub async fn bind(settings: CoordinatorSettings) -> Result<Self, CoordinatorError> {
        let server_config = mailfarm_pki::server_config(&settings.identity)
            .map_err(|e| CoordinatorError::Tls(e.to_string()))?;
        let quic = |source| CoordinatorError::Quic {
            addr: settings.listen,
            source,
        };
        let socket = std::net::UdpSocket::bind(settings.listen).map_err(quic)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| quic(std::io::Error::other("no async runtime for QUIC")))?;
        let endpoint = quinn::Endpoint::new(
            endpoint_config(&settings.identity),
            Some(server_config),
            socket,
            runtime,
        )
        .map_err(quic)?;
        let db_path = settings.state_dir.as_ref().map(|d| d.join("state.redb"));
        if let Some(dir) = &settings.state_dir {
            std::fs::create_dir_all(dir).map_err(|source| CoordinatorError::StateDir {
                dir: dir.clone(),
                source,
            })?;
        }
        let store = Store::open(db_path.as_deref(), settings.durable && db_path.is_some())
            .map_err(FarmError::from)?;
        let forward = crate::forward::Forwarding::open(&store, settings.forward.clone())
            .map_err(FarmError::from)?;
        let farm = Farm::open(store, settings.retry)?;
        farm.set_shaping(&settings.shaping);
        let accounting = match &settings.state_dir {
            Some(dir) => Some(Mutex::new(
                AccountingLog::open(&dir.join("accounting.jsonl"), settings.accounting_max_bytes)
                    .map_err(CoordinatorError::Accounting)?,
            )),
            None => None,
        };
        let metrics = match settings.metrics_listen {
            Some(addr) => Some(
                crate::metrics::bind(addr)
                    .await
                    .map_err(|source| CoordinatorError::Metrics { addr, source })?,
            ),
            None => None,
        };
        let (commits, committer) = commits::Committer::new();
        let shared = Arc::new(Shared {
            farm,
            verp_key: settings.verp_key,
            inbound_local_addresses: settings.inbound_local_addresses,
            batch_size: settings.batch_size.max(1),
            state_dir: settings.state_dir,
            accounting,
            commits,
            forward,
        });
        committer
            .start(Arc::downgrade(&shared))
            .map_err(CoordinatorError::Committer)?;
        Ok(Self {
            endpoint,
            shared,
            metrics,
            shutdown_grace: settings.shutdown_grace,
        })
    }

    /// The bound QUIC address.
    pub fn local_addr(&self) -> Result<SocketAddr, CoordinatorError> {
        self.endpoint
            .local_addr()
            .map_err(|source| CoordinatorError::Quic {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })
    }

    /// The bound metrics address, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// A handle for in-process use.
    pub fn handle(&self) -> CoordinatorHandle {
        CoordinatorHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves until `shutdown` resolves; then stops leasing, waits (up to the grace period)
    /// for in-flight results, and closes every link.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), CoordinatorError> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        if let Some(listener) = self.metrics {
            let shared = self.shared.clone();
            let mut stop = stop_rx.clone();
            let render = Arc::new(move || crate::metrics::render(&shared.farm));
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = crate::metrics::serve(listener, render, stopped).await {
                    error!("metrics endpoint failed: {e}");
                }
            });
        }
        let ticker = {
            let shared = self.shared.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                    let farm_shared = shared.clone();
                    let due = tokio::task::spawn_blocking(move || {
                        farm_shared.farm.flush_skips()?;
                        farm_shared.farm.release_due_retries()
                    })
                    .await;
                    match due {
                        Ok(Ok(n)) if n > 0 => {
                            debug!(count = n, "deferred recipients due for retry")
                        }
                        Ok(Err(e)) => error!("retry scheduler: {e}"),
                        _ => {}
                    }
                    if shared.farm.has_waiting_work() {
                        shared.farm.signal_work();
                    }
                }
            })
        };
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let shared = self.shared.clone();
                    tokio::spawn(async move {
                        let remote = incoming.remote_address();
                        if let Err(e) = serve_connection(incoming, shared).await {
                            info!(%remote, "link closed: {e:#}");
                        }
                    });
                }
                () = &mut shutdown => break,
            }
        }
        info!(
            in_flight = self.shared.farm.in_flight(),
            "coordinator shutting down: no new work, waiting for in-flight results"
        );
        self.shared.farm.stop_leasing();
        let deadline = tokio::time::Instant::now() + self.shutdown_grace;
        while self.shared.farm.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = self.shared.farm.in_flight();
        if left > 0 {
            warn!(
                left,
                "shutdown grace over: these stay pending and are sent after restart"
            );
        }
        let _ = stop_tx.send(true);
        let _ = ticker.await;
        self.endpoint
            .close(0u32.into(), b"coordinator shutting down");
        self.endpoint.wait_idle().await;
        Ok(())
    }
}

async fn serve_connection(incoming: quinn::Incoming, shared: Arc<Shared>) -> anyhow::Result<()> {
    let connection = incoming.await.context("QUIC/TLS handshake")?;
    let (mut send, recv) = tokio::time::timeout(HELLO_TIMEOUT, connection.accept_bi())
        .await
        .context("no stream opened in time")?
        .context("accepting the first stream")?;
    let mut reader = FrameReader::new(recv, DEFAULT_MAX_FRAME);
    let first = tokio::time::timeout(HELLO_TIMEOUT, reader.next::<Hello>())
        .await
        .context("no hello in time")?;
    let hello = match first {
        Ok(Some((hello, _))) => hello,
        Ok(None) => anyhow::bail!("stream closed before the hello"),
        Err(e) => {
            refuse(&mut send, &connection, "the first frame must be a hello").await;
            anyhow::bail!("bad hello: {e}");
        }
    };
    match &hello.role {
        Role::Smurf { .. } => serve_smurf(connection, send, reader, hello, shared).await,
        Role::Operator { .. } => {
            crate::operator::serve(connection, send, reader, hello, shared.handle()).await
        }
    }
}

impl Shared {
    fn handle(self: &Arc<Self>) -> CoordinatorHandle {
        CoordinatorHandle {
            shared: self.clone(),
        }
    }
}

async fn serve_smurf(
    connection: quinn::Connection,
    mut send: quinn::SendStream,
    mut reader: FrameReader,
    hello: Hello,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    reader.set_max_frame(SMURF_MAX_FRAME);
    let mut link = CoordinatorLink::new();
    let (window, held_results, initial_role, software) = match &hello.role {
        Role::Smurf {
            window,
            held_results,
            initial_role,
            software,
            ..
        } => (*window, *held_results, *initial_role, software.clone()),
        Role::Operator { .. } => (0, 0, None, String::new()),
    };
    let judged = link.on_hello(hello, |node| {
        peer_has_name(&connection, &smurf_dns_name(node))
    });
    answer_hello(&mut send, &connection, "smurf", judged).await?;
    let node = link.node().unwrap_or_default().to_owned();
    info!(%node, remote = %connection.remote_address(), "smurf joined");
    shared
        .farm
        .smurf_joined(&node, window, initial_role, &software)
        .context("recording the node")?;
    let mut commits = PendingCommits::default();
    let result = async {
        if held_results > 0 {
            receive_held_results(&node, held_results, &mut send, &mut reader, &shared).await?;
        }
        feed_smurf(
            &node,
            &mut link,
            &mut send,
            &mut reader,
            &shared,
            &mut commits,
        )
        .await
    }
    .await;
    // Frames handed to the committer are recorded whatever became of the link; acknowledge
    // what can still be acknowledged (the smurf sends the rest again as late results).
    let mut acknowledging = result.is_ok();
    while !commits.is_empty() {
        let committed = commits.next().await.is_ok();
        if acknowledging && committed {
            acknowledging = write_frame(&mut send, &CoordinatorMessage::ResultsCommitted)
                .await
                .is_ok();
        }
    }
    let returned = link.take_in_flight();
    if !returned.is_empty() {
        warn!(%node, count = returned.len(), "link lost with recipients in flight: requeued");
    }
    shared.farm.requeue(&node, &returned);
    shared.farm.return_bounces(&node);
    shared.farm.smurf_left(&node);
    shared.farm.throttle().forget(&node);
    info!(%node, "smurf left");
    result
}

/// Most time a reconnecting smurf gets to report what it holds while leasing waits.
const HELD_RESULTS_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the late results a reconnecting smurf announced, with leasing on hold farm-wide, so
/// none of those recipients is leased again before its result is known.
async fn receive_held_results(
    node: &str,
    announced: u32,
    send: &mut quinn::SendStream,
    reader: &mut FrameReader,
    shared: &Arc<Shared>,
) -> anyhow::Result<()> {
    let _hold = shared.farm.hold_leasing();
    let mut commits = PendingCommits::default();
    let mut received = 0usize;
    let deadline = tokio::time::Instant::now() + HELD_RESULTS_TIMEOUT;
    while received < announced as usize {
        let next = tokio::time::timeout_at(deadline, reader.next::<SmurfMessage>()).await;
        let Ok(next) = next else {
            warn!(%node, received, announced, "held results did not all arrive in time");
            return Ok(());
        };
        match next? {
            Some((SmurfMessage::LateResults(results), _)) => {
                received += results.len();
                commits.late(shared, node, results);
                let count = commits.next().await?;
                info!(%node, count, "late results from an earlier link applied");
                write_frame(send, &CoordinatorMessage::ResultsCommitted).await?;
            }
            Some((SmurfMessage::Load(load), _)) => shared.farm.report_load(node, load),
            Some((SmurfMessage::Status(status), _)) => shared.farm.report_status(node, status),
            Some((SmurfMessage::SiteThrottles(sites), _)) => {
                shared.farm.throttle().report(node, sites);
            }
            Some((other, _)) => anyhow::bail!("expected late results, got {other:?}"),
            None => anyhow::bail!("smurf closed the link"),
        }
    }
    Ok(())
}

async fn feed_smurf(
    node: &str,
    link: &mut CoordinatorLink,
    send: &mut quinn::SendStream,
    reader: &mut FrameReader,
    shared: &Arc<Shared>,
    commits: &mut PendingCommits,
) -> anyhow::Result<()> {
    let mut work = shared.farm.work_signal();
    let mut shaping = shared.farm.shaping_signal();
    shaping.borrow_and_update();
    let mut throttle = shared.farm.throttle().subscribe();
    throttle.borrow_and_update();
    write_frame(
        send,
        &CoordinatorMessage::Shaping(shared.farm.shaping_for(node)),
    )
    .await?;
    let mut roles = shared.farm.nodes_signal();
    let mut bounce_credit = role_link::BounceCredit::default();
    let mut view_tick = tokio::time::interval(Duration::from_secs(1));
    let mut told = ToldNode::default();
    told.update(node, send, shared).await?;
    let mut forward_rules = shared.forward.subscribe();
    forward_rules.borrow_and_update();
    let mut forward_told = forward_link::ForwardTold::default();
    forward_told.update(send, shared).await?;
    let mut was_idle_draining = false;
    loop {
        work.borrow_and_update();
        for forget in link.forget_ended(|hash| shared.farm.template_live(hash)) {
            write_frame(send, &forget).await?;
        }
        while link.credit() > 0 {
            let Some(lease) = shared
                .farm
                .lease(node, link.credit().min(shared.batch_size))
            else {
                break;
            };
            let ids: Vec<u64> = lease.recipients.iter().map(|r| r.id).collect();
            let messages = match link.dispatch(&lease.bundle, lease.recipients) {
                Ok(m) => m,
                Err(e) => {
                    shared.farm.requeue(node, &ids);
                    return Err(e.into());
                }
            };
            for message in &messages {
                let bytes = write_frame(send, message).await?;
                match message {
                    CoordinatorMessage::Template(b) => {
                        shared.farm.record_template_shipment(&b.campaign_id, bytes);
                    }
                    _ => shared
                        .farm
                        .record_batch_bytes(&lease.bundle.campaign_id, bytes),
                }
            }
        }
        bounce_credit.feed(node, send, shared).await?;
        let idle_draining = link.in_flight() == 0 && shared.farm.is_draining(node);
        if idle_draining && !was_idle_draining {
            info!(%node, "drained: node is idle and may be stopped");
        }
        was_idle_draining = idle_draining;
        tokio::select! {
            next = reader.next::<SmurfMessage>() => match next {
                Ok(Some((SmurfMessage::Results(results), bytes))) => {
                    link.on_results(&results)?;
                    commits.live(shared, node, results, bytes);
                }
                Ok(Some((SmurfMessage::Load(load), _))) => shared.farm.report_load(node, load),
                Ok(Some((SmurfMessage::LateResults(results), _))) => {
                    commits.late(shared, node, results);
                }
                Ok(Some((SmurfMessage::HandBack(ids), _))) => {
                    link.on_hand_back(&ids)?;
                    info!(%node, count = ids.len(), "recipients handed back: leased again at once");
                    shared.farm.requeue(node, &ids);
                }
                Ok(Some((SmurfMessage::Status(status), _))) => {
                    info!(%node, role = %status.role, state = status.state.as_str(),
                          serving = ?status.serving, problem = ?status.problem, "node status");
                    shared.farm.report_status(node, status);
                }
                Ok(Some((SmurfMessage::InboundReceived(records), _))) => {
                    role_link::write_accounting(shared, &records);
                }
                Ok(Some((SmurfMessage::NoticeClaims(claims), _))) => {
                    forward_link::on_claims(node, claims, send, shared).await?;
                }
                Ok(Some((SmurfMessage::Forwarded(records), _))) => {
                    forward_link::on_forwarded(node, &records, shared);
                }
                Ok(Some((SmurfMessage::Returned(mails), _))) => {
                    role_link::on_returned(mails, send, shared).await?;
                }
                Ok(Some((SmurfMessage::Unsubscribes(events), _))) => {
                    role_link::on_unsubscribes(node, events, send, shared).await?;
                }
                Ok(Some((SmurfMessage::BounceVerdicts(verdicts), _))) => {
                    bounce_credit.on_verdicts(node, verdicts, shared).await?;
                }
                Ok(Some((SmurfMessage::TemplateRejected { hash, reason }, _))) => {
                    warn!(template = %hash, "smurf could not compile a template: {reason}");
                }
                Ok(Some((SmurfMessage::SiteThrottles(sites), _))) => {
                    shared.farm.throttle().report(node, sites);
                }
                Ok(Some((SmurfMessage::Goodbye, _))) => {
                    debug!("smurf said goodbye");
                    link.close();
                    if link.in_flight() == 0 {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(WireError::Frame(e)) => anyhow::bail!("garbage from smurf: {e}"),
                Err(e) => return Err(e.into()),
            },
            committed = commits.next() => {
                committed?;
                write_frame(send, &CoordinatorMessage::ResultsCommitted).await?;
            }
            _ = work.changed() => {}
            _ = view_tick.tick() => role_link::send_farm_view(node, send, shared).await?,
            _ = forward_rules.changed() => {
                forward_rules.borrow_and_update();
                forward_told.update(send, shared).await?;
            }
            _ = roles.changed() => {
                roles.borrow_and_update();
                told.update(node, send, shared).await?;
            }
            _ = throttle.changed() => {
                throttle.borrow_and_update();
                let shares = shared.farm.throttle().shares();
                if !shares.is_empty() {
                    debug!(%node, sites = shares.len(), "sending learnt site rates");
                    write_frame(send, &CoordinatorMessage::SiteRates(shares)).await?;
                }
            }
            _ = shaping.changed() => {
                shaping.borrow_and_update();
                let update = shared.farm.shaping_for(node);
                debug!(%node, share = update.share(), "sending shaping update");
                write_frame(send, &CoordinatorMessage::Shaping(update)).await?;
            }
        }
    }
}

/// What a smurf link was last told about its role and the inbound policy, so that only
/// changes are sent.
#[derive(Default)]
struct ToldNode {
    assignment: Option<Assignment>,
    policy: Option<InboundPolicy>,
}

impl ToldNode {
    /// Sends the node its assignment and the inbound policy where they changed.
    async fn update(
        &mut self,
        node: &str,
        send: &mut quinn::SendStream,
        shared: &Arc<Shared>,
    ) -> anyhow::Result<()> {
        // The policy first: a role starting on the assignment finds the farm's keys in it.
        let policy = shared
            .farm
            .inbound_policy(&shared.verp_key, &shared.inbound_local_addresses);
        if self.policy.as_ref() != Some(&policy) {
            write_frame(send, &CoordinatorMessage::InboundPolicy(policy.clone())).await?;
            self.policy = Some(policy);
        }
        let assignment = shared.farm.assignment(node);
        if self.assignment.as_ref() != Some(&assignment) {
            write_frame(send, &CoordinatorMessage::Assign(assignment.clone())).await?;
            self.assignment = Some(assignment);
        }
        Ok(())
    }
}
