//! The capture receiver: a small, strict, in-process SMTP server that writes
//! every accepted message to a directory as a `.eml` file.
//!
//! It exists so that `mailfarm campaign launch --local N --capture DIR` works
//! on a machine with nothing installed: the sender nodes deliver to it like to
//! any MTA, and a newcomer can open the rendered messages as files. It is
//! also the reference peer for testing the outbound client.
//!
//! Each accepted message becomes `DIR/<8-digit sequence>.eml`: a
//! `Return-Path: <sender>` line and one `X-Mailfarm-Envelope-To: <rcpt>` line
//! per recipient, then the message as received (dot-unstuffed, CRLF line
//! endings). Files are written under a hidden temporary name and renamed, so
//! a `*.eml` file is always complete. Numbering continues after the highest
//! existing file; one server per directory at a time.
//!
//! The protocol is the shared server core's ([`crate::smtp::server`]); this
//! module only decides what to do with an accepted message.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::smtp::policy::{Answer, Envelope, Handler, Rcpt, SessionHandler};
use crate::smtp::server::{ServerConfig, SmtpServer};

/// Longest command line accepted, CRLF included (RFC 5321 says 512; room is
/// left for long SMTPUTF8 addresses and parameters).
pub const COMMAND_LINE_MAX: usize = 4096;

/// Longest message line accepted, CRLF included. RFC 5322 caps lines at
/// 1000; we are lenient so a sloppy template is still captured, but a longer
/// line gets the message refused with 554 5.6.0.
pub const DATA_LINE_MAX: usize = 64 * 1024;

/// Tunables of the capture server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Name in the greeting and EHLO reply. Default `mailfarm-capture`.
    pub hostname: String,
    /// Largest message accepted, in bytes (announced as SIZE). Default 32 MiB.
    pub max_message_size: u64,
    /// Most recipients per message (more get 452). Default 100.
    pub max_recipients: usize,
    /// Most simultaneous sessions (more get 421). Default 256.
    pub max_sessions: usize,
    /// How long a session may wait for the client's next line. Default 5 min.
    pub idle_timeout: Duration,
    /// After shutdown, how long open sessions may take to finish. Default 10 s.
    pub shutdown_grace: Duration,
    /// Bad commands tolerated per session before 421 and disconnect.
    /// Default 20.
    pub max_errors: u32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            hostname: "mailfarm-capture".to_owned(),
            max_message_size: 32 * 1024 * 1024,
            max_recipients: 100,
            max_sessions: 256,
            idle_timeout: Duration::from_secs(5 * 60),
            shutdown_grace: Duration::from_secs(10),
            max_errors: 20,
        }
    }
}

impl CaptureConfig {
    /// The server core's settings for these tunables.
    fn server_config(&self) -> ServerConfig {
        ServerConfig {
            hostname: self.hostname.clone(),
            max_message_size: self.max_message_size,
            max_recipients: self.max_recipients,
            max_sessions: Some(self.max_sessions),
            max_sessions_per_ip: None,
            command_line_max: COMMAND_LINE_MAX,
            data_line_max: DATA_LINE_MAX,
            command_timeout: self.idle_timeout,
            data_line_timeout: self.idle_timeout,
            data_timeout: None,
            session_timeout: None,
            shutdown_grace: self.shutdown_grace,
            max_errors: self.max_errors,
            strict: true,
            tls: None,
        }
    }
}

/// State shared by all sessions of one server.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    hostname: String,
    written: Arc<AtomicU64>,
    next_seq: AtomicU64,
    next_tmp: AtomicU64,
}

/// One session of the capture server.
#[derive(Debug)]
struct CaptureSession(Arc<Shared>);

/// A bound capture server; call [`CaptureServer::run`] to serve.
#[derive(Debug)]
pub struct CaptureServer {
    server: SmtpServer<Capture>,
}

/// The capture's [`Handler`]: an `Arc` of the shared state, so that sessions
/// can write files after their server task moved on.
#[derive(Debug)]
struct Capture(Arc<Shared>);

impl Handler for Capture {
    type Session = CaptureSession;

    fn connect(&self, _peer: SocketAddr) -> (CaptureSession, Answer) {
        let greeting = format!("{} ESMTP mailfarm capture", self.0.hostname);
        (
            CaptureSession(Arc::clone(&self.0)),
            Answer::reply(220, greeting),
        )
    }
}

impl CaptureServer {
    /// Binds `addr` (e.g. `127.0.0.1:0`) with [`CaptureConfig::default`],
    /// creating `dir` if needed. [`local_addr`](Self::local_addr) gives the
    /// actual port.
    pub async fn bind(addr: SocketAddr, dir: PathBuf) -> io::Result<Self> {
        Self::bind_with(addr, dir, CaptureConfig::default()).await
    }

    /// Like [`bind`](Self::bind) with explicit settings.
    pub async fn bind_with(
        addr: SocketAddr,
        dir: PathBuf,
        config: CaptureConfig,
    ) -> io::Result<Self> {
        tokio::fs::create_dir_all(&dir).await?;
        let last = highest_sequence(&dir).await?;
        let shared = Arc::new(Shared {
            dir,
            hostname: config.hostname.clone(),
            written: Arc::new(AtomicU64::new(0)),
            next_seq: AtomicU64::new(last + 1),
            next_tmp: AtomicU64::new(0),
        });
        let server = SmtpServer::bind(addr, config.server_config(), Capture(shared)).await?;
        Ok(Self { server })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The capture directory.
    pub fn dir(&self) -> &Path {
        &self.server.handler().0.dir
    }

    /// Number of messages written so far by this server (shared, live):
    /// take it before calling [`run`](Self::run).
    pub fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.server.handler().0.written)
    }

    /// Serves until `shutdown` resolves; then stops accepting, tells idle
    /// sessions to close (421), lets sessions busy with a message finish for
    /// up to [`CaptureConfig::shutdown_grace`], and aborts the rest (their
    /// partial messages are discarded).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        self.server.run(shutdown).await
    }
}

/// Highest `NNNNNNNN.eml` sequence number already in `dir` (0 if none).
async fn highest_sequence(dir: &Path) -> io::Result<u64> {
    let mut highest = 0;
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".eml")) else {
            continue;
        };
        if !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = stem.parse::<u64>() {
                highest = highest.max(n);
            }
        }
    }
    Ok(highest)
}

/// Deletes a temporary file unless disarmed, including when the session task
/// is aborted mid-write.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl SessionHandler for CaptureSession {
    fn rcpt(&mut self, _envelope: &Envelope, _rcpt: Rcpt<'_>) -> Answer {
        Answer::reply(250, "2.1.5 Ok")
    }

    async fn message(&mut self, envelope: &Envelope, content: Vec<u8>) -> Answer {
        let shared = &self.0;
        match store(shared, envelope, &content).await {
            Ok(name) => {
                shared.written.fetch_add(1, Ordering::Relaxed);
                Answer::reply(250, format!("2.0.0 Ok: queued as {name}"))
            }
            Err(e) => {
                tracing::warn!(error = %e, dir = %shared.dir.display(), "cannot store captured message");
                Answer::reply(451, "4.3.0 Error: local error writing the message")
            }
        }
    }
}

/// Writes one message under a temporary name, then renames it to its
/// sequence number; returns the file name.
async fn store(shared: &Shared, envelope: &Envelope, content: &[u8]) -> io::Result<String> {
    let tmp_path = shared.dir.join(format!(
        ".capture-{}-{}.tmp",
        std::process::id(),
        shared.next_tmp.fetch_add(1, Ordering::Relaxed)
    ));
    let mut guard = TempFile(Some(tmp_path.clone()));
    let mut header = format!("Return-Path: <{}>\r\n", envelope.from);
    for rcpt in &envelope.rcpts {
        header.push_str(&format!("X-Mailfarm-Envelope-To: <{rcpt}>\r\n"));
    }
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp_path)
        .await?;
    file.write_all(header.as_bytes()).await?;
    file.write_all(content).await?;
    file.flush().await?;
    drop(file);
    let seq = shared.next_seq.fetch_add(1, Ordering::Relaxed);
    let name = format!("{seq:08}.eml");
    tokio::fs::rename(&tmp_path, shared.dir.join(&name)).await?;
    guard.0 = None;
    Ok(name)
}

#[cfg(test)]
#[path = "capture_tests.rs"]
mod tests;
