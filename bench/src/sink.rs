//! The receiving peer: Postfix's `smtp-sink` on a free loopback port, with its running
//! counters (`-c`) read from its standard output so each phase can be checked against the
//! number of messages the sink itself accepted.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Listen backlog passed to smtp-sink.
const BACKLOG: &str = "1000";

/// How long smtp-sink gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `smtp-sink`; killed when dropped.
pub struct SmtpSink {
    child: Child,
    addr: SocketAddr,
    messages: Arc<AtomicU64>,
    stderr: Arc<Mutex<String>>,
    /// The command line, for the report.
    pub command: String,
}

impl SmtpSink {
    /// Starts `program` on a free 127.0.0.1 port, accepting `max_sessions` concurrent sessions,
    /// announcing PIPELINING (the default) and writing nothing to disk.
    pub fn start(program: &Path, max_sessions: usize) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free loopback port")?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut args: Vec<String> = vec!["-c".into(), "-m".into(), max_sessions.to_string()];
        if crate::sys::is_root() {
            args.extend(["-u".into(), "nobody".into()]);
        }
        args.extend([addr.to_string(), BACKLOG.into()]);
        let command = format!("{} {}", program.display(), args.join(" "));
        let mut child = Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {command}"))?;
        let messages = Arc::new(AtomicU64::new(0));
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(out) = child.stdout.take() {
            let messages = messages.clone();
            std::thread::spawn(move || read_counters(out, &messages));
        }
        if let Some(mut err) = child.stderr.take() {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = err.read_to_string(&mut text);
                if let Ok(mut s) = stderr.lock() {
                    s.push_str(&text);
                }
            });
        }
        let mut sink = Self {
            child,
            addr,
            messages,
            stderr,
            command,
        };
        sink.wait_listening()?;
        Ok(sink)
    }

    /// Polls until the port accepts connections, or fails if smtp-sink exits.
    fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("checking on smtp-sink")? {
                std::thread::sleep(Duration::from_millis(100));
                bail!(
                    "{} exited with {status}: {}",
                    self.command,
                    self.stderr_text().trim()
                );
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} did not listen within {START_TIMEOUT:?}", self.command);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What smtp-sink wrote on standard error so far.
    fn stderr_text(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Messages the sink has accepted so far (its `mesg=` counter).
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    /// Waits (up to `patience`) for the sink's counter to reach `target`; returns the count.
    pub fn wait_messages(&self, target: u64, patience: Duration) -> u64 {
        let deadline = Instant::now() + patience;
        while self.messages() < target && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.messages()
    }

    /// CPU time the sink has used so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        crate::sys::process_cpu(self.child.id())
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `sess=N quit=N mesg=N\r` records and keeps the latest `mesg` value.
fn read_counters(mut out: impl Read, messages: &AtomicU64) {
    let mut buf = [0u8; 4096];
    let mut record = Vec::new();
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        for &byte in &buf[..n] {
            if byte == b'\r' || byte == b'\n' {
                if let Some(count) = parse_mesg(&record) {
                    messages.store(count, Ordering::Relaxed);
                }
                record.clear();
            } else {
                record.push(byte);
            }
        }
    }
}

/// The `mesg=` value of one counter record.
pub(crate) fn parse_mesg(record: &[u8]) -> Option<u64> {
    std::str::from_utf8(record)
        .ok()?
        .split_whitespace()
        .find_map(|field| field.strip_prefix("mesg="))
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_last_message_count() {
        let input = b"sess=0 quit=0 mesg=1\rsess=0 quit=0 mesg=2\rsess=1 quit=1 mesg=2\r";
        let messages = AtomicU64::new(0);
        read_counters(&input[..], &messages);
        assert_eq!(messages.load(Ordering::Relaxed), 2);
        assert_eq!(parse_mesg(b"garbage"), None);
    }
}
