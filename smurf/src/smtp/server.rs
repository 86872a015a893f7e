//! The one SMTP server core every receiver runs on (the capture receiver, the
//! fault sink, the inbound MX): the accept loop with its session and per-IP
//! limits, graceful shutdown, and STARTTLS. The per-session protocol is in
//! [`super::session`]; the decisions are the receiver's [`Handler`].
//!
//! Shutdown: the listener is closed, idle sessions get `421` and are closed,
//! sessions in the middle of a transaction may finish it within
//! [`ServerConfig::shutdown_grace`], and whatever is left is aborted (a
//! message that got no 250 is not taken).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::policy::{Handler, Refusal, Reply};
use super::session;

/// Protocol limits and timeouts of a server. Every receiver picks its own
/// values; [`ServerConfig::default`] suits a local, trusted peer.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Name in the EHLO reply and shutdown replies.
    pub hostname: String,
    /// Largest message accepted, in bytes (announced as SIZE). Bigger gets 552
    /// and is never held in memory beyond this.
    pub max_message_size: u64,
    /// Most recipients per message (more get 452).
    pub max_recipients: usize,
    /// Most simultaneous sessions (more get 421); `None`: no limit.
    pub max_sessions: Option<usize>,
    /// Most simultaneous sessions from one client IP (more get 421);
    /// `None`: no limit.
    pub max_sessions_per_ip: Option<usize>,
    /// Longest command line, CRLF included.
    pub command_line_max: usize,
    /// Longest message line, CRLF included (a longer one gets the message
    /// refused with 554).
    pub data_line_max: usize,
    /// How long to wait for the next command (and for a reply to be read).
    pub command_timeout: Duration,
    /// How long to wait for each line of the message.
    pub data_line_timeout: Duration,
    /// How long the whole DATA transfer may take (against a slow drip of
    /// lines); `None`: no limit beyond the per-line timeout.
    pub data_timeout: Option<Duration>,
    /// How long a whole session may last (against clients that never QUIT
    /// but keep sending NOOPs); `None`: no limit.
    pub session_timeout: Option<Duration>,
    /// After shutdown, how long sessions in a transaction may take to finish.
    pub shutdown_grace: Duration,
    /// Bad commands tolerated per session before 421 and disconnect.
    pub max_errors: u32,
    /// Strict ESMTP parameters: unknown MAIL/RCPT parameters get 555, a bad
    /// SIZE or BODY 501, a non-ASCII address without SMTPUTF8 553, and DATA
    /// before any RCPT 503. When `false`, every parameter but a valid SIZE is
    /// ignored and DATA without a recipient gets 554 (a lenient test peer).
    pub strict: bool,
    /// STARTTLS: offered when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".to_owned(),
            max_message_size: 32 * 1024 * 1024,
            max_recipients: 100,
            max_sessions: Some(256),
            max_sessions_per_ip: None,
            command_line_max: 4096,
            data_line_max: 64 * 1024,
            command_timeout: Duration::from_secs(300),
            data_line_timeout: Duration::from_secs(300),
            data_timeout: None,
            session_timeout: None,
            shutdown_grace: Duration::from_secs(10),
            max_errors: 20,
            strict: true,
            tls: None,
        }
    }
}

/// Sessions per client IP, for [`ServerConfig::max_sessions_per_ip`].
#[derive(Debug, Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

/// Holds one session's place in [`PerIp`] and the server's session slot.
pub(super) struct Slot {
    per_ip: Option<(Arc<PerIp>, IpAddr)>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Slot {
    /// No slot: a session served outside the accept loop.
    pub(super) fn none() -> Self {
        Self {
            per_ip: None,
            _permit: None,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((per_ip, ip)) = self.per_ip.take() {
            let mut map = per_ip.0.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

/// A bound SMTP server; [`SmtpServer::run`] serves it.
pub struct SmtpServer<H: Handler> {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: Arc<ServerConfig>,
    handler: Arc<H>,
}

impl<H: Handler> std::fmt::Debug for SmtpServer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpServer")
            .field("local_addr", &self.local_addr)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> SmtpServer<H> {
    /// Binds `addr` (e.g. `127.0.0.1:0`).
    pub async fn bind(addr: SocketAddr, config: ServerConfig, handler: H) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Self::from_listener(listener, config, handler)
    }

    /// Serves an already bound listener.
    pub fn from_listener(
        listener: TcpListener,
        config: ServerConfig,
        handler: H,
    ) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
            config: Arc::new(config),
            handler: Arc::new(handler),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The handler, shared with every session.
    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }

    /// The limits in force.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully (see the
    /// module docs). Accept errors (EMFILE...) are logged and retried.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let slots = self
            .config
            .max_sessions
            .map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS))));
        let per_ip = Arc::new(PerIp::default());
        let mut sessions = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(done) = sessions.join_next(), if !sessions.is_empty() => {
                    if let Err(e) = done {
                        if e.is_panic() {
                            tracing::warn!(error = %e, "SMTP session task panicked");
                        }
                    }
                }
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        match self.admit(&slots, &per_ip, peer) {
                            Ok(slot) => {
                                let handler = Arc::clone(&self.handler);
                                let config = Arc::clone(&self.config);
                                let stop = stop_rx.clone();
                                sessions.spawn(async move {
                                    if let Err(e) = session::serve(stream, peer, config, handler, stop, slot).await {
                                        tracing::debug!(%peer, error = %e, "SMTP session ended with an error");
                                    }
                                });
                            }
                            Err(why) => {
                                let reply = self.handler.refused(peer, why);
                                let delay = self.handler.reply_delay();
                                let timeout = self.config.command_timeout;
                                sessions.spawn(refuse(stream, reply, delay, timeout));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "SMTP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(self.listener);
        // Receivers only miss it if every session is already gone.
        let _ = stop_tx.send(true);
        let drain = async { while sessions.join_next().await.is_some() {} };
        if tokio::time::timeout(self.config.shutdown_grace, drain)
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = sessions.len(),
                "SMTP sessions still open after the grace period, aborting them"
            );
            sessions.shutdown().await;
        }
        Ok(())
    }

    /// Takes a session slot and a per-IP place for `peer`, or says why not.
    fn admit(
        &self,
        slots: &Option<Arc<Semaphore>>,
        per_ip: &Arc<PerIp>,
        peer: SocketAddr,
    ) -> Result<Slot, Refusal> {
        let permit = match slots {
            None => None,
            Some(slots) => Some(
                Arc::clone(slots)
                    .try_acquire_owned()
                    .map_err(|_| Refusal::TooManySessions)?,
            ),
        };
        let per_ip = match self.config.max_sessions_per_ip {
            None => None,
            Some(max) => {
                let ip = peer.ip();
                let mut map = per_ip.0.lock().unwrap_or_else(PoisonError::into_inner);
                let n = map.entry(ip).or_insert(0);
                if *n >= max {
                    return Err(Refusal::TooManyFromIp);
                }
                *n += 1;
                Some((Arc::clone(per_ip), ip))
            }
        };
        Ok(Slot {
            per_ip,
            _permit: permit,
        })
    }
}

/// Answers a refused connection and closes it.
async fn refuse(mut stream: TcpStream, reply: Reply, delay: Duration, timeout: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let line = format!("{} {}\r\n", reply.code, reply.text);
    let _ = tokio::time::timeout(timeout, stream.write_all(line.as_bytes())).await;
    let _ = tokio::time::timeout(timeout, stream.shutdown()).await;
}

/// Errors loading a STARTTLS certificate and key.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The certificate or key file could not be read or parsed.
    #[error("{path}: {error}")]
    Pem {
        /// The file.
        path: String,
        /// What went wrong.
        error: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{0}: no certificate in the file")]
    NoCertificate(String),
    /// rustls refused the certificate and key.
    #[error("certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A rustls server configuration (ring provider) from PEM files: the
/// certificate chain and its private key.
pub fn tls_config_from_pem(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let pem = |path: &std::path::Path| {
        let path = path.display().to_string();
        move |error| TlsSetupError::Pem { path, error }
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(pem(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(cert))?;
    if chain.is_empty() {
        return Err(TlsSetupError::NoCertificate(cert.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem(key))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}
