//! `mailfarm-bench inbound`: how fast the `in` role's MX takes mail, durably, next to Postfix's
//! own smtpd taking the same load into its queue, in the same run on the same machine.
//!
//! Both receive Postfix's `smtp-source` (100 sessions of 10 KB messages by default). The MX
//! runs in this process (its CPU is this process's, smtp-source being a child); Postfix is a
//! private instance (`postfix -c DIR start`) whose smtpd accepts everything from loopback and
//! puts it on hold (`smtpd_end_of_data_restrictions = check_client_access static:HOLD`), so it
//! writes and syncs each queue file like any accepted message but never delivers it. Its CPU
//! is the sum over its master and every descendant (smtpd, cleanup, trivial-rewrite...).

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use mailfarm_smurf::inbound::mx::{InboundConfig, InboundLimits, InboundPolicy, InboundServer};
use serde::Serialize;

use crate::postfix::PrivatePostfix;
use crate::procs::tree_cpu;
use crate::source::{Load, SourceRun, BENCH_ENVELOPE};
use crate::sys::Machine;
use crate::throughput::{build_profile, require_program};

/// The recipient smtp-source sends to.
const RCPT: &str = BENCH_ENVELOPE.to;

/// Options of `inbound`.
#[derive(clap::Args, Debug)]
pub struct Inbound {
    /// Messages per side.
    #[arg(long, default_value_t = 20_000)]
    pub messages: u64,
    /// Parallel smtp-source sessions.
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 10_240)]
    pub message_bytes: u64,
    /// Postfix smtp-source program.
    #[arg(long, default_value = "/usr/sbin/smtp-source")]
    pub smtp_source: PathBuf,
    /// Postfix control program.
    #[arg(long, default_value = "/usr/sbin/postfix")]
    pub postfix: PathBuf,
    /// Folder for the MX's mail store and Postfix's queue (default: a temporary folder under
    /// /var/tmp, on disk, never tmpfs).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One receiver's figures.
#[derive(Debug, Serialize)]
pub struct Side {
    /// Who received.
    pub name: String,
    /// Messages smtp-source sent and got accepted.
    pub messages: u64,
    /// Messages the receiver holds afterwards (files in the store, or queue files).
    pub stored: u64,
    /// Wall time of the smtp-source run.
    pub wall_secs: f64,
    /// Accepted messages per second.
    pub msgs_per_sec: f64,
    /// CPU time of the receiver.
    pub receiver_cpu_secs: f64,
    /// CPU time of smtp-source.
    pub source_cpu_secs: f64,
}

/// The report.
#[derive(Debug, Serialize)]
pub struct InboundReport {
    /// Machine.
    pub machine: Machine,
    /// Build profile.
    pub build: &'static str,
    /// File system of the stores.
    pub fs_type: String,
    /// smtp-source sessions.
    pub sessions: usize,
    /// Message size.
    pub message_bytes: u64,
    /// The MX.
    pub mailfarm: Side,
    /// Postfix smtpd.
    pub postfix: Side,
    /// mailfarm msgs/s over Postfix msgs/s.
    pub ratio: f64,
    /// What went wrong.
    pub problems: Vec<String>,
}

impl InboundReport {
    /// The human report.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = crate::report::write_machine(&mut out, &self.machine, self.build);
        let _ = writeln!(
            out,
            "load        smtp-source, {} sessions, {} B messages, durable stores on {}",
            self.sessions, self.message_bytes, self.fs_type
        );
        let _ = writeln!(
            out,
            "{:<28} {:>9} {:>9} {:>9} {:>11} {:>11} {:>11}",
            "receiver", "messages", "stored", "wall s", "msgs/s", "recv CPU s", "source CPU s"
        );
        for s in [&self.mailfarm, &self.postfix] {
            let _ = writeln!(
                out,
                "{:<28} {:>9} {:>9} {:>9.2} {:>11.0} {:>11.2} {:>11.2}",
                s.name,
                s.messages,
                s.stored,
                s.wall_secs,
                s.msgs_per_sec,
                s.receiver_cpu_secs,
                s.source_cpu_secs
            );
        }
        let _ = writeln!(out, "ratio       mailfarm / Postfix = {:.2}x", self.ratio);
        for p in &self.problems {
            let _ = writeln!(out, "PROBLEM     {p}");
        }
        out
    }
}

/// Runs both sides.
pub fn inbound(o: &Inbound) -> anyhow::Result<InboundReport> {
    require_program("smtp-source", &o.smtp_source)?;
    require_program("postfix", &o.postfix)?;
    let build = build_profile();
    let machine = Machine::detect();
    let base = match &o.dir {
        Some(d) => d.clone(),
        None => PathBuf::from("/var/tmp"),
    };
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let mut problems = Vec::new();

    let ours_dir = tempfile::Builder::new()
        .prefix("mailfarm-in.")
        .tempdir_in(&base)?;
    let mailfarm = run_mailfarm(o, ours_dir.path(), &mut problems)?;
    let postfix = run_postfix(o, &mut problems)?;
    let ratio = if postfix.msgs_per_sec > 0.0 {
        mailfarm.msgs_per_sec / postfix.msgs_per_sec
    } else {
        0.0
    };
    Ok(InboundReport {
        machine,
        build,
        fs_type: crate::sys::fs_type(ours_dir.path()),
        sessions: o.sessions,
        message_bytes: o.message_bytes,
        mailfarm,
        postfix,
        ratio,
        problems,
    })
}

/// Runs smtp-source against `addr` with the options' load, reading the receiver's CPU time
/// with `receiver_cpu` before and after: the source's run and the receiver's CPU time over it.
fn drive(
    o: &Inbound,
    addr: SocketAddr,
    receiver_cpu: impl Fn() -> anyhow::Result<Duration>,
) -> anyhow::Result<(SourceRun, Duration)> {
    let before = receiver_cpu()?;
    let load = Load::blast(o.messages, o.message_bytes, o.sessions);
    let run = crate::source::run(&o.smtp_source, addr, &load)?;
    let after = receiver_cpu()?;
    Ok((run, after.saturating_sub(before)))
}

/// One receiver's figures from its smtp-source run.
fn side(name: &str, o: &Inbound, stored: u64, run: &SourceRun, receiver_cpu: Duration) -> Side {
    Side {
        name: name.to_owned(),
        messages: o.messages,
        stored,
        wall_secs: run.wall.as_secs_f64(),
        msgs_per_sec: o.messages as f64 / run.wall.as_secs_f64().max(1e-9),
        receiver_cpu_secs: receiver_cpu.as_secs_f64(),
        source_cpu_secs: run.cpu.as_secs_f64(),
    }
}

fn run_mailfarm(o: &Inbound, dir: &Path, problems: &mut Vec<String>) -> anyhow::Result<Side> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let config = InboundConfig {
        listen: "127.0.0.1:0".parse()?,
        hostname: "mx.bench.test".into(),
        mail_dir: dir.join("mail"),
        limits: InboundLimits {
            max_sessions_per_ip: o.sessions + 10,
            ..InboundLimits::default()
        },
        ..InboundConfig::default()
    };
    let policy = InboundPolicy::new(None, [], [RCPT.to_owned()], []);
    let (_policy_tx, policy_rx) = tokio::sync::watch::channel(policy);
    let server = runtime.block_on(InboundServer::bind(&config, policy_rx))?;
    let addr = server.local_addr();
    let counters = server.counters();
    let store = server.store();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = runtime.spawn(server.run(async {
        let _ = stop_rx.await;
    }));
    let (run, receiver_cpu) = drive(o, addr, || Ok(crate::sys::usage(libc::RUSAGE_SELF)?.cpu))?;
    let _ = stop_tx.send(());
    runtime.block_on(task)??;
    let received = counters.received.load(std::sync::atomic::Ordering::Relaxed);
    let stored = store
        .pending(mailfarm_smurf::inbound::mx::MailKind::Local)?
        .len() as u64;
    if received != o.messages || stored != o.messages {
        problems.push(format!(
            "mailfarm: {received} received, {stored} stored, {} sent",
            o.messages
        ));
    }
    Ok(side(
        "mailfarm in (fsync, group)",
        o,
        stored,
        &run,
        receiver_cpu,
    ))
}

/// main.cf lines of the inbound side, after the shared base: every accepted message is held.
const MAIN_CF: &str = "\
myhostname = mx.bench.test
smtpd_end_of_data_restrictions = check_client_access static:HOLD
";

fn run_postfix(o: &Inbound, problems: &mut Vec<String>) -> anyhow::Result<Side> {
    let postfix = PrivatePostfix::start(&o.postfix, MAIN_CF)?;
    let master = postfix.master_pid()?;
    let (run, receiver_cpu) = drive(o, postfix.addr, || Ok(tree_cpu(master)))?;
    let held = postfix.queue_files(&["hold"]);
    if held != o.messages {
        problems.push(format!(
            "postfix: {held} messages on hold, {} sent",
            o.messages
        ));
    }
    Ok(side(
        "postfix smtpd (queue, hold)",
        o,
        held,
        &run,
        receiver_cpu,
    ))
}
