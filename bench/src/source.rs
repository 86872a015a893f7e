//! The peer side of the comparison: Postfix's `smtp-source`, a raw SMTP blaster that sends one
//! fixed body over reused sessions, run against the same sink with the same message count,
//! message size and session count.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Envelope sender and recipient given to smtp-source.
const FROM: &str = "news@acme.example";
/// Envelope recipient given to smtp-source.
const TO: &str = "reader@d0.example";
/// HELO name given to smtp-source.
const HELO: &str = "source.mailfarm.invalid";
/// Bytes of the headers smtp-source adds besides From and To: `Date:` (about 45),
/// `Message-Id:` (about 45) and the blank line.
const OTHER_HEADERS: u64 = 92;
/// How often smtp-source is checked on (exit, memory); bounds the wall-time error.
const SAMPLE: Duration = Duration::from_millis(5);

/// What one smtp-source run measured.
pub struct SourceRun {
    /// The command line.
    pub command: String,
    /// Whole message size it sends (headers estimated).
    pub message_bytes: u64,
    /// Wall time of the process.
    pub wall: Duration,
    /// CPU time of the process.
    pub cpu: Duration,
    /// Peak resident set size of the process.
    pub peak_rss_bytes: u64,
}

/// Sends `messages` messages of about `message_bytes` bytes each over `sessions` parallel,
/// reused sessions (`-d`), one recipient per message.
pub fn run(
    program: &Path,
    sink: SocketAddr,
    messages: u64,
    message_bytes: u64,
    sessions: usize,
) -> anyhow::Result<SourceRun> {
    let headers = format!("From: <{FROM}>\r\nTo: <{TO}>\r\n").len() as u64 + OTHER_HEADERS;
    let payload_bytes = message_bytes.saturating_sub(headers).max(1);
    let args: Vec<String> = vec![
        "-d".into(),
        "-s".into(),
        sessions.to_string(),
        "-m".into(),
        messages.to_string(),
        "-l".into(),
        payload_bytes.to_string(),
        "-M".into(),
        HELO.into(),
        "-f".into(),
        FROM.into(),
        "-t".into(),
        TO.into(),
        sink.to_string(),
    ];
    let command = format!("{} {}", program.display(), args.join(" "));
    let before = crate::sys::usage(libc::RUSAGE_CHILDREN)?;
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {command}"))?;
    let stderr = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        })
    });
    // ru_maxrss of children also counts this process's memory from before the exec, so the
    // peak is sampled from /proc while the child runs (VmHWM only grows).
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_rss_bytes = 0;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for smtp-source")? {
            break status;
        }
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            peak_rss_bytes =
                peak_rss_bytes.max(crate::sys::status_kib(&text, "VmHWM:").unwrap_or(0) * 1024);
        }
        std::thread::sleep(SAMPLE);
    };
    let wall = started.elapsed();
    let after = crate::sys::usage(libc::RUSAGE_CHILDREN)?;
    if !status.success() {
        let text = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
        bail!("{command} exited with {status}: {}", text.trim());
    }
    Ok(SourceRun {
        command,
        message_bytes: payload_bytes + headers,
        wall,
        cpu: after.cpu.saturating_sub(before.cpu),
        peak_rss_bytes,
    })
}
