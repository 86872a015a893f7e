//! The peer side of the comparison: Postfix's `smtp-source`, a raw SMTP blaster that sends one
//! fixed body over reused sessions, run against the same sink with the same message count,
//! message size and session count; and the load generator of the receiving benches
//! (`inbound`, `forward`), which choose their own envelope. The one launcher of smtp-source.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Bytes of the headers smtp-source adds besides From and To: `Date:` (about 45),
/// `Message-Id:` (about 45) and the blank line.
const OTHER_HEADERS: u64 = 92;
/// Bytes of smtp-source's own body, sent without `-l`: four lines `La de da de da N.` + CRLF.
const DEFAULT_BODY: u64 = 4 * 19;

/// Who smtp-source says it is and whom it writes to.
#[derive(Clone, Copy, Debug)]
pub struct Envelope<'a> {
    /// HELO name (`-M`); None: smtp-source's default, the machine's host name.
    pub helo: Option<&'a str>,
    /// Envelope sender (`-f`), also the `From:` header.
    pub from: &'a str,
    /// Envelope recipient (`-t`), also the `To:` header.
    pub to: &'a str,
}

/// The throughput benches' envelope: the example newsletter's sender, a recipient of the
/// synthetic list's first domain.
pub const BENCH_ENVELOPE: Envelope<'static> = Envelope {
    helo: Some("source.mailfarm.invalid"),
    from: "news@acme.example",
    to: "reader@d0.example",
};

/// What one smtp-source run sends.
#[derive(Clone, Copy, Debug)]
pub struct Load<'a> {
    /// Messages, one recipient each (`-m`).
    pub messages: u64,
    /// Parallel sessions (`-s`).
    pub sessions: usize,
    /// Whole message size, headers estimated (`-l` gets the rest); None: smtp-source's own
    /// small body.
    pub message_bytes: Option<u64>,
    /// Send a session's messages over one connection (`-d`) instead of one connection each.
    pub reuse_connections: bool,
    /// HELO name, sender and recipient.
    pub envelope: Envelope<'a>,
}

impl Load<'static> {
    /// The raw ceiling's load: `messages` messages of about `message_bytes` bytes each over
    /// `sessions` parallel, reused connections, with [`BENCH_ENVELOPE`].
    pub fn blast(messages: u64, message_bytes: u64, sessions: usize) -> Self {
        Self {
            messages,
            sessions,
            message_bytes: Some(message_bytes),
            reuse_connections: true,
            envelope: BENCH_ENVELOPE,
        }
    }
}
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

/// Sends `load` to `sink` and waits for smtp-source to end.
pub fn run(program: &Path, sink: SocketAddr, load: &Load) -> anyhow::Result<SourceRun> {
    let Envelope { helo, from, to } = load.envelope;
    let headers = format!("From: <{from}>\r\nTo: <{to}>\r\n").len() as u64 + OTHER_HEADERS;
    let mut args: Vec<String> = Vec::new();
    if load.reuse_connections {
        args.push("-d".into());
    }
    args.extend([
        "-s".into(),
        load.sessions.to_string(),
        "-m".into(),
        load.messages.to_string(),
    ]);
    let payload_bytes = match load.message_bytes {
        Some(bytes) => {
            let payload = bytes.saturating_sub(headers).max(1);
            args.extend(["-l".into(), payload.to_string()]);
            payload
        }
        None => DEFAULT_BODY,
    };
    if let Some(helo) = helo {
        args.extend(["-M".into(), helo.into()]);
    }
    args.extend([
        "-f".into(),
        from.into(),
        "-t".into(),
        to.into(),
        sink.to_string(),
    ]);
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
