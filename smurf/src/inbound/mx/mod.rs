//! The `in` role: an inbound MX for the farm's own domains, on the shared SMTP
//! server core ([`crate::smtp::server`]).
//!
//! It takes mail for the farm's signed VERP return paths (checked at RCPT
//! time, stored in `bounces/` for bounce processing), for local addresses
//! (`local/`, kept for the operator) and for forwarded addresses
//! (`forward/`), from a live [`InboundPolicy`]; everything else is refused and
//! it is never an open relay. Every message is on disk ([`MailStore`]) before
//! its 250. [`InboundCounters`] count what happens, live, and every accepted
//! message is also reported as an [`InboundEvent`].
//!
//! ```no_run
//! # async fn f(config: mailfarm_smurf::inbound::mx::InboundConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use mailfarm_smurf::inbound::mx::{InboundPolicy, InboundServer};
//! let (policy_tx, policy_rx) = tokio::sync::watch::channel(InboundPolicy::default());
//! let server = InboundServer::bind(&config, policy_rx).await?
//!     .on_message(|event| println!("{event:?}"));
//! let counters = server.counters();
//! let store = server.store();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! server.run(async { let _ = stopped.await; }).await?;
//! # drop((policy_tx, counters, store, stop)); Ok(()) }
//! ```

mod config;
mod policy;
mod store;

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

pub use config::{InboundConfig, InboundLimits};
pub use policy::{classify, Destination, InboundPolicy, Refused};
pub use store::{MailKind, MailStore};

use crate::smtp::policy::{
    Answer, CoreEvent, Envelope, Handler, Rcpt, Refusal, Reply, SessionHandler,
};
use crate::smtp::server::{tls_config_from_pem, SmtpServer, TlsSetupError};

/// Why the inbound MX could not start.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The mail store could not be opened.
    #[error("mail store {path}: {source}")]
    Store {
        /// The folder.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// Only one of `tls_cert` and `tls_key` is set.
    #[error("[inbound] tls_cert and tls_key go together")]
    TlsHalf,
    /// The certificate or key could not be loaded.
    #[error("[inbound] STARTTLS: {0}")]
    Tls(#[from] TlsSetupError),
}

/// Live counters of one inbound MX (read them every second for `/metrics`).
#[derive(Debug, Default)]
pub struct InboundCounters {
    /// TCP connections, refused ones included.
    pub connections: AtomicU64,
    /// Sessions that completed STARTTLS.
    pub tls_sessions: AtomicU64,
    /// Messages accepted (250 to the final dot).
    pub received: AtomicU64,
    /// Copies kept for the operator (`local/`).
    pub kept: AtomicU64,
    /// Copies stored for bounce processing (`bounces/`).
    pub bounces: AtomicU64,
    /// Copies stored for forwarding (`forward/`).
    pub forwarded: AtomicU64,
    /// Bounce messages handed on ([`acknowledge`]).
    pub handed_to_bounce: AtomicU64,
    /// RCPTs refused: not our domain or a relay trick.
    pub refused_relay: AtomicU64,
    /// RCPTs refused: unknown user in one of our domains.
    pub refused_unknown_user: AtomicU64,
    /// RCPTs refused: VERP signature invalid (forged or tampered).
    pub refused_forged_verp: AtomicU64,
    /// RCPTs refused: SRS address invalid or expired.
    pub refused_bad_srs: AtomicU64,
    /// RCPTs beyond the per-message limit (452).
    pub refused_too_many_recipients: AtomicU64,
    /// Messages refused for size (552).
    pub refused_too_big: AtomicU64,
    /// Messages refused for an over-long line (554).
    pub refused_line_too_long: AtomicU64,
    /// Connections refused: the node's session limit.
    pub refused_sessions: AtomicU64,
    /// Connections refused: the per-IP session limit.
    pub refused_per_ip: AtomicU64,
    /// Sessions closed for too many bad commands.
    pub closed_errors: AtomicU64,
    /// Sessions closed for slowness.
    pub closed_timeout: AtomicU64,
    /// Failed TLS handshakes.
    pub tls_failed: AtomicU64,
    /// Messages that could not be stored (451).
    pub store_failed: AtomicU64,
}

/// A snapshot of [`InboundCounters`] as `(name, value)` pairs, e.g. for
/// `/metrics` (`mailfarm_inbound_<name>`) or `farm watch`.
pub type CounterSnapshot = Vec<(&'static str, u64)>;

impl InboundCounters {
    /// Every counter with its name.
    pub fn snapshot(&self) -> CounterSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("connections", g(&self.connections)),
            ("tls_sessions", g(&self.tls_sessions)),
            ("received", g(&self.received)),
            ("kept", g(&self.kept)),
            ("bounces", g(&self.bounces)),
            ("forwarded", g(&self.forwarded)),
            ("handed_to_bounce", g(&self.handed_to_bounce)),
            ("refused_relay", g(&self.refused_relay)),
            ("refused_unknown_user", g(&self.refused_unknown_user)),
            ("refused_forged_verp", g(&self.refused_forged_verp)),
            ("refused_bad_srs", g(&self.refused_bad_srs)),
            (
                "refused_too_many_recipients",
                g(&self.refused_too_many_recipients),
            ),
            ("refused_too_big", g(&self.refused_too_big)),
            ("refused_line_too_long", g(&self.refused_line_too_long)),
            ("refused_sessions", g(&self.refused_sessions)),
            ("refused_per_ip", g(&self.refused_per_ip)),
            ("closed_errors", g(&self.closed_errors)),
            ("closed_timeout", g(&self.closed_timeout)),
            ("tls_failed", g(&self.tls_failed)),
            ("store_failed", g(&self.store_failed)),
        ]
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One accepted message, for the accounting log.
#[derive(Debug, Clone)]
pub struct InboundEvent {
    /// The client.
    pub peer: Option<SocketAddr>,
    /// Its EHLO/HELO name.
    pub helo: String,
    /// Under STARTTLS.
    pub tls: bool,
    /// The envelope sender (empty for `<>`).
    pub from: String,
    /// Each recipient and where its copy went.
    pub rcpts: Vec<(String, Destination)>,
    /// Message size in bytes (as received, dot-unstuffed).
    pub size: usize,
    /// The stored copies: kind and file name in its `new/` folder.
    pub stored: Vec<(MailKind, String)>,
}

/// The callback receiving [`InboundEvent`]s.
type EventHook = Box<dyn Fn(&InboundEvent) + Send + Sync>;

/// State shared by every session.
struct Shared {
    hostname: String,
    policy: watch::Receiver<InboundPolicy>,
    extra_local: HashSet<String>,
    store: Arc<MailStore>,
    counters: Arc<InboundCounters>,
    on_message: OnceLock<EventHook>,
}

/// The MX's [`Handler`].
struct Mx(Arc<Shared>);

impl Handler for Mx {
    type Session = MxSession;

    fn connect(&self, _peer: SocketAddr) -> (MxSession, Answer) {
        bump(&self.0.counters.connections);
        let greeting = format!("{} ESMTP mailfarm", self.0.hostname);
        (
            MxSession {
                shared: Arc::clone(&self.0),
                destinations: Vec::new(),
            },
            Answer::reply(220, greeting),
        )
    }

    fn refused(&self, _peer: SocketAddr, why: Refusal) -> Reply {
        let c = &self.0.counters;
        bump(&c.connections);
        match why {
            Refusal::TooManySessions => {
                bump(&c.refused_sessions);
                Reply::new(421, "4.3.2 Too many connections, try again later")
            }
            Refusal::TooManyFromIp => {
                bump(&c.refused_per_ip);
                Reply::new(421, "4.7.0 Too many connections from your address")
            }
        }
    }
}

/// One MX session: where each accepted recipient of the transaction goes.
struct MxSession {
    shared: Arc<Shared>,
    destinations: Vec<Destination>,
}

impl SessionHandler for MxSession {
    fn note(&mut self, event: CoreEvent) {
        let c = &self.shared.counters;
        bump(match event {
            CoreEvent::MessageTooBig => &c.refused_too_big,
            CoreEvent::LineTooLong => &c.refused_line_too_long,
            CoreEvent::TooManyRecipients => &c.refused_too_many_recipients,
            CoreEvent::TooManyErrors => &c.closed_errors,
            CoreEvent::Timeout => &c.closed_timeout,
            CoreEvent::TlsStarted => &c.tls_sessions,
            CoreEvent::TlsFailed => &c.tls_failed,
        });
    }

    fn mail(&mut self, _envelope: &Envelope) -> Answer {
        self.destinations.clear();
        Answer::reply(250, "2.1.0 Ok")
    }

    fn rcpt(&mut self, _envelope: &Envelope, rcpt: Rcpt<'_>) -> Answer {
        let decided = {
            let policy = self.shared.policy.borrow();
            classify(
                &policy,
                &self.shared.extra_local,
                rcpt.path,
                rcpt.source_route,
            )
        };
        let c = &self.shared.counters;
        match decided {
            Ok(destination) => {
                self.destinations.push(destination);
                Answer::reply(250, "2.1.5 Ok")
            }
            Err(why) => {
                bump(match why {
                    Refused::Relay => &c.refused_relay,
                    Refused::UnknownUser => &c.refused_unknown_user,
                    Refused::ForgedVerp => &c.refused_forged_verp,
                    Refused::BadSrs => &c.refused_bad_srs,
                });
                why.answer()
            }
        }
    }

    async fn message(&mut self, envelope: &Envelope, content: Vec<u8>) -> Answer {
        let shared = Arc::clone(&self.shared);
        let size = content.len();
        let content: Arc<[u8]> = Arc::from(content);
        let rcpts: Vec<(String, Destination)> = envelope
            .rcpts
            .iter()
            .cloned()
            .zip(self.destinations.iter().cloned())
            .collect();
        let mut stored = Vec::new();
        for kind in MailKind::ALL {
            let mine: Vec<&str> = rcpts
                .iter()
                .filter(|(_, d)| kind_of(d) == kind)
                .map(|(r, _)| r.as_str())
                .collect();
            if mine.is_empty() {
                continue;
            }
            let mut header = trace_header(&shared.hostname, envelope, &mine);
            if kind == MailKind::Forward {
                for (rcpt, destination) in &rcpts {
                    match destination {
                        Destination::Forward(new) => header.push_str(&format!(
                            "{}<{rcpt}> <{new}>\r\n",
                            crate::inbound::forward::FORWARD_HEADER
                        )),
                        Destination::SrsReturn(original) => header.push_str(&format!(
                            "{}<{rcpt}> <{original}> srs\r\n",
                            crate::inbound::forward::FORWARD_HEADER
                        )),
                        _ => {}
                    }
                }
            }
            let parts = vec![Arc::from(header.into_bytes()), Arc::clone(&content)];
            match shared.store.store(kind, parts).await {
                Ok(name) => stored.push((kind, name)),
                Err(e) => {
                    tracing::warn!(error = %e, dir = %shared.store.root().display(), "cannot store inbound message");
                    for (kind, name) in &stored {
                        let _ = shared.store.discard(*kind, name);
                    }
                    bump(&shared.counters.store_failed);
                    return Answer::reply(451, "4.3.0 Error: local error storing the message");
                }
            }
        }
        let c = &shared.counters;
        bump(&c.received);
        for (kind, _) in &stored {
            bump(match kind {
                MailKind::Bounce => &c.bounces,
                MailKind::Local => &c.kept,
                MailKind::Forward => &c.forwarded,
            });
        }
        let queue_id = stored.first().map(|(_, n)| n.clone()).unwrap_or_default();
        if let Some(hook) = shared.on_message.get() {
            hook(&InboundEvent {
                peer: envelope.peer,
                helo: envelope.helo.clone(),
                tls: envelope.tls,
                from: envelope.from.clone(),
                rcpts,
                size,
                stored,
            });
        }
        Answer::reply(250, format!("2.0.0 Ok: queued as {queue_id}"))
    }
}

fn kind_of(d: &Destination) -> MailKind {
    match d {
        Destination::Bounce(_) | Destination::Unsubscribe(_) => MailKind::Bounce,
        Destination::Local => MailKind::Local,
        Destination::Forward(_) | Destination::SrsReturn(_) => MailKind::Forward,
    }
}

/// The lines put before a stored message: envelope and where it came from.
fn trace_header(hostname: &str, envelope: &Envelope, rcpts: &[&str]) -> String {
    let mut h = format!("Return-Path: <{}>\r\n", envelope.from);
    for r in rcpts {
        h.push_str(&format!("X-Mailfarm-Envelope-To: <{r}>\r\n"));
    }
    let peer = envelope
        .peer
        .map_or_else(|| "unknown".to_owned(), |p| p.ip().to_string());
    let with = if envelope.tls { "ESMTPS" } else { "ESMTP" };
    let helo: String = envelope
        .helo
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    h.push_str(&format!(
        "X-Mailfarm-Received: from {helo} ([{peer}]) by {hostname} with {with}\r\n"
    ));
    h
}

/// A bound inbound MX (see the module docs).
pub struct InboundServer {
    server: SmtpServer<Mx>,
}

impl std::fmt::Debug for InboundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundServer")
            .field("local_addr", &self.server.local_addr())
            .finish_non_exhaustive()
    }
}

impl InboundServer {
    /// Opens the mail store, loads the STARTTLS certificate if configured
    /// and binds `config.listen`. `policy` is read at every RCPT: update it
    /// and new RCPTs see the change at once.
    pub async fn bind(
        config: &InboundConfig,
        policy: watch::Receiver<InboundPolicy>,
    ) -> Result<Self, InboundError> {
        let mut server_config = config.server_config();
        server_config.tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls_config_from_pem(cert, key)?),
            (None, None) => None,
            _ => return Err(InboundError::TlsHalf),
        };
        let store = MailStore::open(&config.mail_dir).map_err(|source| InboundError::Store {
            path: config.mail_dir.display().to_string(),
            source,
        })?;
        let shared = Arc::new(Shared {
            hostname: config.hostname.clone(),
            policy,
            extra_local: config
                .local_addresses
                .iter()
                .map(|a| a.to_ascii_lowercase())
                .collect(),
            store: Arc::new(store),
            counters: Arc::new(InboundCounters::default()),
            on_message: OnceLock::new(),
        });
        let server = SmtpServer::bind(config.listen, server_config, Mx(shared))
            .await
            .map_err(|source| InboundError::Bind {
                addr: config.listen,
                source,
            })?;
        Ok(Self { server })
    }

    /// Calls `hook` for every accepted message (after it is stored, before
    /// the 250 is sent). Set it before [`run`](Self::run); only the first
    /// hook set is kept.
    pub fn on_message(self, hook: impl Fn(&InboundEvent) + Send + Sync + 'static) -> Self {
        let _ = self.server.handler().0.on_message.set(Box::new(hook));
        self
    }

    /// The bound address (the port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The live counters.
    pub fn counters(&self) -> Arc<InboundCounters> {
        Arc::clone(&self.server.handler().0.counters)
    }

    /// The mail store: list `bounces/new` with
    /// [`MailStore::pending`]`(MailKind::Bounce)`, read each file at
    /// [`MailStore::path`], then [`acknowledge`] it.
    pub fn store(&self) -> Arc<MailStore> {
        Arc::clone(&self.server.handler().0.store)
    }

    /// Serves until `shutdown` resolves; then stops accepting, sends 421 to
    /// idle sessions and lets transfers in progress finish within the
    /// configured grace.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        self.server.run(shutdown).await
    }
}

/// Moves a handed-on message out of `new/` and counts it when it was a
/// bounce (see [`InboundServer::store`]).
pub fn acknowledge(
    store: &MailStore,
    counters: &InboundCounters,
    kind: MailKind,
    name: &str,
) -> io::Result<()> {
    store.acknowledge(kind, name)?;
    if kind == MailKind::Bounce {
        bump(&counters.handed_to_bounce);
    }
    Ok(())
}
