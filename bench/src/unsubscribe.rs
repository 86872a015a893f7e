//! `mailfarm-bench unsubscribe`: how many RFC 8058 one-click POSTs per second the web role
//! takes with its durable journal (every 200 after an fsync), and proof that none is lost when
//! the node is killed mid-burst. The server runs as a child process (this binary's hidden
//! `unsubscribe-server` command), so it can be killed with SIGKILL and its CPU measured apart
//! from the load generator's.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mailfarm_smurf::web::{DashboardSnapshot, UnsubscribeJournal, WebConfig, WebServer};
use mailfarm_templates::{derive_unsubscribe_key, UnsubscribeSigner};
use serde::Serialize;
use std::fmt::Write as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::report::{thousands, write_machine};
use crate::sys::{fs_type, process_cpu, Machine};
use crate::throughput::build_profile;

const VERP_KEY: &[u8] = b"mailfarm-bench unsubscribe key!!";
const CAMPAIGN: &str = "bench";
const LIST: &str = "bench.example";

/// Options of `unsubscribe`.
#[derive(clap::Args, Debug)]
pub struct Unsubscribe {
    /// One-click POSTs in the burst (distinct recipients).
    #[arg(long, default_value_t = 50_000)]
    pub requests: u64,
    /// Concurrent keep-alive connections of the load generator.
    #[arg(long, default_value_t = 64)]
    pub connections: u64,
    /// Folder in which the journal folders are created (default: the system's temporary
    /// folder; it must be a real disk for the fsyncs to mean anything).
    #[arg(long)]
    pub tmp: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Options of the hidden `unsubscribe-server` command (the child process).
#[derive(clap::Args, Debug)]
pub struct UnsubscribeServer {
    /// Journal folder.
    #[arg(long)]
    pub dir: PathBuf,
}

/// One burst's figures.
#[derive(Debug, Default, Serialize)]
pub struct Burst {
    /// POSTs answered 200.
    pub ok: u64,
    /// Wall time of the burst, seconds.
    pub seconds: f64,
    /// 200s per second.
    pub per_second: f64,
    /// Latency percentiles of the 200s, milliseconds (p50, p99, max).
    pub latency_ms: (f64, f64, f64),
    /// CPU seconds the server used.
    pub server_cpu_seconds: f64,
    /// Entries found in the journal when it was reopened after the server was killed.
    pub on_record: u64,
    /// Recipients answered 200 that are not in the journal (must be 0).
    pub lost: u64,
}

/// What `unsubscribe` measured.
#[derive(Debug, Serialize)]
pub struct UnsubscribeReport {
    /// The machine.
    pub machine: Machine,
    /// `release` or `debug`.
    pub build_profile: &'static str,
    /// File system of the journal.
    pub journal_fs: String,
    /// Connections of the load generator.
    pub connections: u64,
    /// Full burst, server killed with SIGKILL after it.
    pub full: Burst,
    /// Burst interrupted by SIGKILL once 40 % were answered, requests in flight.
    pub killed: Burst,
    /// Checks that failed.
    pub problems: Vec<String>,
}

impl UnsubscribeReport {
    /// The human report.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = write_machine(&mut out, &self.machine, self.build_profile);
        let _ = writeln!(
            out,
            "journal     {} (fsync before every 200, group commit)\nload        {} keep-alive \
             connections, one-click POSTs (RFC 8058 body), client and server on the same CPUs",
            self.journal_fs, self.connections
        );
        for (name, b) in [("full burst", &self.full), ("killed at ~40%", &self.killed)] {
            let _ = writeln!(
                out,
                "{name:<15} {} x 200 in {:.2} s = {} POST/s  latency p50 {:.1} ms p99 {:.1} ms \
                 max {:.1} ms  server CPU {:.2} s\n                on record after kill -9 and \
                 reopen: {}  lost: {}",
                thousands(b.ok as f64),
                b.seconds,
                thousands(b.per_second),
                b.latency_ms.0,
                b.latency_ms.1,
                b.latency_ms.2,
                b.server_cpu_seconds,
                thousands(b.on_record as f64),
                b.lost
            );
        }
        for p in &self.problems {
            let _ = writeln!(out, "PROBLEM: {p}");
        }
        out
    }
}

/// The child: a web role on loopback with a durable journal, printing its address.
pub fn serve(args: &UnsubscribeServer) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let (_tx, rx) = tokio::sync::watch::channel(DashboardSnapshot::default());
        let server = WebServer::start(
            WebConfig {
                listen: "127.0.0.1:0".parse()?,
                tls: None,
                journal_dir: args.dir.clone(),
                unsubscribe_key: derive_unsubscribe_key(VERP_KEY),
                dashboard_hash: None,
                undo_window: Duration::from_secs(3600),
            },
            rx,
        )
        .await?;
        println!("listening on {}", server.local_addr());
        std::future::pending::<()>().await;
        Ok(true)
    })
}

fn spawn_server(dir: &Path) -> anyhow::Result<(Child, SocketAddr)> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["unsubscribe-server", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the web server child")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected first line {line:?}"))?
        .parse()?;
    Ok((child, addr))
}

/// Sends POSTs for recipients `0..requests`; with `kill`, SIGKILLs that process when that many
/// 200s have come back, in the middle of the burst. Returns the ids answered 200, their
/// latencies and the wall time.
async fn burst(
    addr: SocketAddr,
    requests: u64,
    connections: u64,
    kill: Option<(u64, u32)>,
) -> (Vec<u64>, Vec<Duration>, Duration) {
    let signer = Arc::new(UnsubscribeSigner::from_verp_key(VERP_KEY));
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let results = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (signer, next, done, results) =
            (signer.clone(), next.clone(), done.clone(), results.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await else {
                return;
            };
            let _ = conn.set_nodelay(true);
            let mut buf = vec![0u8; 16 * 1024];
            let (mut ids, mut lat) = (Vec::new(), Vec::new());
            loop {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if id >= requests {
                    break;
                }
                let token = signer.url_token(CAMPAIGN, LIST, id);
                let request = format!(
                    "POST /u/{token} HTTP/1.1\r\nHost: bench\r\nContent-Type: \
                     application/x-www-form-urlencoded\r\nContent-Length: 26\r\n\r\n\
                     List-Unsubscribe=One-Click"
                );
                let sent = Instant::now();
                if conn.write_all(request.as_bytes()).await.is_err() {
                    break;
                }
                match read_status(&mut conn, &mut buf).await {
                    Some(200) => {
                        ids.push(id);
                        lat.push(sent.elapsed());
                        let count = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if let Some((at, pid)) = kill {
                            if count == at {
                                // SAFETY: kill(2) with a pid of our own child and SIGKILL.
                                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                            }
                        }
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            if let Ok(mut r) = results.lock() {
                r.0.extend(ids);
                r.1.extend(lat);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    let (ids, lat) = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    (ids, lat, elapsed)
}

/// Reads one response; its status, or `None` when the connection ended.
async fn read_status(conn: &mut tokio::net::TcpStream, buf: &mut [u8]) -> Option<u16> {
    let mut have = 0;
    loop {
        let n = conn.read(&mut buf[have..]).await.ok()?;
        if n == 0 {
            return None;
        }
        have += n;
        let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") else {
            if have == buf.len() {
                return None;
            }
            continue;
        };
        let head = std::str::from_utf8(&buf[..end]).ok()?;
        let status = head.get(9..12)?.parse().ok()?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = have - end - 4;
        while body < length {
            let n = conn.read(buf).await.ok()?;
            if n == 0 {
                return None;
            }
            body += n;
        }
        return Some(status);
    }
}

fn run_one(
    runtime: &tokio::runtime::Runtime,
    base: &Path,
    name: &str,
    opts: &Unsubscribe,
    kill_at: Option<u64>,
    problems: &mut Vec<String>,
) -> anyhow::Result<Burst> {
    let dir = base.join(name);
    let (mut child, addr) = spawn_server(&dir)?;
    let kill = kill_at.map(|at| (at, child.id()));
    let (ids, mut lat, elapsed) =
        runtime.block_on(burst(addr, opts.requests, opts.connections, kill));
    let cpu = process_cpu(child.id()).unwrap_or_default();
    // kill -9 (again, for the full burst): whatever got its 200 must be on disk.
    let _ = child.kill();
    child.wait()?;
    let journal = UnsubscribeJournal::open(&dir)?;
    let pending = journal.pending();
    let recorded: std::collections::HashSet<u64> = pending.iter().map(|e| e.recipient_id).collect();
    let lost = ids.iter().filter(|id| !recorded.contains(id)).count() as u64;
    if lost > 0 {
        problems.push(format!(
            "{name}: {lost} POSTs answered 200 are not in the journal"
        ));
    }
    if kill_at.is_none() && ids.len() as u64 != opts.requests {
        problems.push(format!(
            "{name}: {} of {} POSTs answered 200",
            ids.len(),
            opts.requests
        ));
    }
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(Burst {
        ok: ids.len() as u64,
        seconds: elapsed.as_secs_f64(),
        per_second: ids.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        latency_ms: (pct(0.5), pct(0.99), pct(1.0)),
        server_cpu_seconds: cpu.as_secs_f64(),
        on_record: pending.len() as u64,
        lost,
    })
}

/// Runs the benchmark.
pub fn unsubscribe(opts: &Unsubscribe) -> anyhow::Result<UnsubscribeReport> {
    if opts.connections == 0 || opts.requests == 0 {
        bail!("--requests and --connections must be at least 1");
    }
    let base = match &opts.tmp {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut problems = Vec::new();
    let full = run_one(&runtime, base.path(), "full", opts, None, &mut problems)?;
    let killed = run_one(
        &runtime,
        base.path(),
        "killed",
        opts,
        Some(opts.requests * 2 / 5),
        &mut problems,
    )?;
    Ok(UnsubscribeReport {
        machine: Machine::detect(),
        build_profile: build_profile(),
        journal_fs: fs_type(base.path()),
        connections: opts.connections,
        full,
        killed,
        problems,
    })
}
