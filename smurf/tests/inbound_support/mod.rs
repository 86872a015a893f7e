//! Shared harness of the inbound MX tests: an in-process server with a fixed
//! policy, the standalone `mailfarm-inbound` binary (the test kit's
//! `InboundProcess`) with that policy, swaks (the test kit's), and a small raw
//! SMTP client. Real peers only: a missing swaks or
//! smtp-source fails the test.
#![allow(dead_code)] // each test binary uses its own part of the harness

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mailfarm_smurf::inbound::mx::{
    InboundConfig, InboundCounters, InboundPolicy, InboundServer, MailKind, MailStore,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";
pub const VERP_KEY: &[u8] = b"farm-verp-key";
pub const BOUNCE_DOMAIN: &str = "bounce.example.test";
pub const POSTMASTER: &str = "postmaster@example.test";

/// The policy every test uses.
pub fn policy() -> InboundPolicy {
    InboundPolicy::new(
        Some(VERP_KEY),
        [BOUNCE_DOMAIN.to_owned()],
        [POSTMASTER.to_owned(), "replies@example.test".to_owned()],
        ["fwd@example.test".to_owned()],
    )
}

pub fn require(peer: &str) {
    assert!(
        Path::new(peer).exists(),
        "{peer} is missing: install it (swaks, postfix) to run this test"
    );
}

/// An in-process inbound MX on 127.0.0.1.
pub struct Running {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub counters: Arc<InboundCounters>,
    pub store: Arc<MailStore>,
    pub events: Arc<std::sync::Mutex<Vec<mailfarm_smurf::inbound::mx::InboundEvent>>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

pub fn test_config(dir: &Path) -> InboundConfig {
    InboundConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        hostname: "mx.example.test".into(),
        mail_dir: dir.join("mail"),
        ..InboundConfig::default()
    }
}

pub async fn start(edit: impl FnOnce(&mut InboundConfig)) -> Running {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(dir.path());
    edit(&mut config);
    let (_tx, rx) = tokio::sync::watch::channel(policy());
    // Keep the policy sender alive for the server's lifetime.
    std::mem::forget(_tx);
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let server = InboundServer::bind(&config, rx)
        .await
        .expect("binding the inbound MX")
        .on_message(move |e| sink.lock().expect("events").push(e.clone()));
    let addr = server.local_addr();
    let counters = server.counters();
    let store = server.store();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        dir,
        counters,
        store,
        events,
        stop,
        task,
    }
}

impl Running {
    pub async fn stop(self) -> tempfile::TempDir {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(40), self.task)
            .await
            .expect("inbound MX did not stop")
            .expect("inbound MX task")
            .expect("inbound MX");
        self.dir
    }

    /// Contents of every file in `new/` of `kind`.
    pub fn stored(&self, kind: MailKind) -> Vec<String> {
        stored(&self.store, kind)
    }
}

pub fn stored(store: &MailStore, kind: MailKind) -> Vec<String> {
    store
        .pending(kind)
        .expect("listing the store")
        .iter()
        .map(|n| std::fs::read_to_string(store.path(kind, n)).expect("reading a stored message"))
        .collect()
}

use mailfarm_testkit::InboundProcess as Process;

/// The standalone server with the policy every test uses, and `limits`.
pub fn spawn_process(limits: &str) -> Process {
    Process::spawn(
        limits,
        &format!(
            "verp_key = \"{}\"\nbounce_domains = [\"{BOUNCE_DOMAIN}\"]\n\
             local_addresses = [\"{POSTMASTER}\"]",
            String::from_utf8_lossy(VERP_KEY)
        ),
    )
}

/// A hand-driven SMTP client.
pub struct Raw {
    pub rd: TokioBufReader<tokio::net::tcp::OwnedReadHalf>,
    pub wr: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connecting");
        let (rd, wr) = stream.into_split();
        Self {
            rd: TokioBufReader::new(rd),
            wr,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.wr.write_all(bytes).await
    }

    /// The next reply's code and last line; `None` when the connection is
    /// closed.
    pub async fn reply(&mut self) -> Option<(u16, String)> {
        loop {
            let mut line = String::new();
            match self.rd.read_line(&mut line).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let code = line.get(..3)?.parse().ok()?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Some((code, line.trim_end().to_owned()));
            }
        }
    }

    pub async fn cmd(&mut self, line: &str) -> Option<u16> {
        self.send(format!("{line}\r\n").as_bytes()).await.ok()?;
        self.reply().await.map(|r| r.0)
    }
}
