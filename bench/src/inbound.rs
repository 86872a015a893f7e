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
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mailfarm_smurf::inbound::mx::{InboundConfig, InboundLimits, InboundPolicy, InboundServer};
use serde::Serialize;

use crate::sys::Machine;
use crate::throughput::{build_profile, require_program};

/// The recipient `source::run` sends to.
const RCPT: &str = "reader@d0.example";

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
    let pf_dir = tempfile::Builder::new()
        .prefix("mailfarm-pfx.")
        .tempdir_in("/tmp")?;
    let postfix = run_postfix(o, pf_dir.path(), &mut problems)?;
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

fn side(
    name: &str,
    o: &Inbound,
    stored: u64,
    wall: Duration,
    recv: Duration,
    src: Duration,
) -> Side {
    Side {
        name: name.to_owned(),
        messages: o.messages,
        stored,
        wall_secs: wall.as_secs_f64(),
        msgs_per_sec: o.messages as f64 / wall.as_secs_f64().max(1e-9),
        receiver_cpu_secs: recv.as_secs_f64(),
        source_cpu_secs: src.as_secs_f64(),
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
    let before = crate::sys::usage(libc::RUSAGE_SELF)?;
    let run = crate::source::run(
        &o.smtp_source,
        addr,
        o.messages,
        o.message_bytes,
        o.sessions,
    )?;
    let after = crate::sys::usage(libc::RUSAGE_SELF)?;
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
        run.wall,
        after.cpu.saturating_sub(before.cpu),
        run.cpu,
    ))
}

const MAIN_CF: &str = "\
compatibility_level = 3.6
queue_directory = @DIR@/spool
data_directory = @DIR@/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = @DIR@/maillog
maillog_file_prefixes = @DIR@
syslog_name = mailfarm-bench
alias_maps =
alias_database =
biff = no
smtpd_tls_security_level = none
default_process_limit = 400
smtpd_client_connection_count_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_end_of_data_restrictions = check_client_access static:HOLD
";

const MASTER_CF: &str = "\
127.0.0.1:@PORT@ inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

fn run_postfix(o: &Inbound, root: &Path, problems: &mut Vec<String>) -> anyhow::Result<Side> {
    fs::set_permissions(root, fs::Permissions::from_mode(0o755))?;
    for sub in ["etc", "spool", "data"] {
        fs::create_dir(root.join(sub))?;
    }
    let status = Command::new("chown")
        .arg("postfix:postfix")
        .arg(root.join("data"))
        .status()
        .context("chown")?;
    if !status.success() {
        bail!("chown postfix: {status} (the Postfix side needs root and the postfix user)");
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = root.to_str().context("non-UTF-8 temporary path")?;
    fs::write(root.join("etc/main.cf"), MAIN_CF.replace("@DIR@", dir))?;
    fs::write(
        root.join("etc/master.cf"),
        MASTER_CF.replace("@PORT@", &port.to_string()),
    )?;
    let control = |cmd: &str| {
        Command::new(&o.postfix)
            .arg("-c")
            .arg(root.join("etc"))
            .arg(cmd)
            .output()
    };
    let out = control("start")?;
    if !out.status.success() {
        bail!(
            "postfix start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            let _ = control("stop");
            bail!("Postfix does not listen on {addr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let result = (|| -> anyhow::Result<Side> {
        let master = master_pid(root)?;
        let before = tree_cpu(master)?;
        let run = crate::source::run(
            &o.smtp_source,
            addr,
            o.messages,
            o.message_bytes,
            o.sessions,
        )?;
        let after = tree_cpu(master)?;
        let held = count_files(&root.join("spool/hold"));
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
            run.wall,
            after.saturating_sub(before),
            run.cpu,
        ))
    })();
    let _ = control("stop");
    std::thread::sleep(Duration::from_millis(500));
    result
}

pub(crate) fn master_pid(root: &Path) -> anyhow::Result<u32> {
    let path = root.join("spool/pid/master.pid");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.trim().parse().context("master.pid")
}

/// CPU of a process and all its descendants, the reaped ones included (cutime, cstime).
pub(crate) fn tree_cpu(root: u32) -> anyhow::Result<Duration> {
    let mut parent = std::collections::HashMap::new();
    let mut ticks = std::collections::HashMap::new();
    for entry in fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        parent.insert(pid, num(1) as u32);
        ticks.insert(pid, num(11) + num(12) + num(13) + num(14));
    }
    let mut total = 0;
    for (&pid, &t) in &ticks {
        let mut p = pid;
        for _ in 0..64 {
            if p == root {
                total += t;
                break;
            }
            match parent.get(&p) {
                Some(&pp) if pp != 0 && pp != p => p = pp,
                _ => break,
            }
        }
    }
    Ok(crate::sys::ticks_to_duration(total))
}

fn count_files(dir: &Path) -> u64 {
    let mut n = 0;
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => n += count_files(&e.path()),
                Ok(_) => n += 1,
                Err(_) => {}
            }
        }
    }
    n
}
