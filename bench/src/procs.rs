//! The one process runner of the benches: a program started (optionally behind a wrapper such
//! as `ip netns exec NS`), its standard output collected line by line (a `\r` ends a line too,
//! for smtp-sink's counters), its standard error in a log file or kept with the output, waited
//! on for a line, checked on, stopped gracefully (SIGTERM, then SIGKILL after a grace period)
//! and measured from `/proc` (CPU time, peak RSS, through `crate::sys`); one-shot commands run
//! to completion; the CPU and peak memory of whole process trees (a Postfix instance whose
//! workers come and go); and Ctrl-C caught so that wait loops fail and guards clean up.
//!
//! `compare` (`compare::farm`) and `netns` start the same daemons (`mailfarm coordinator`,
//! `mailfarm smurf`) through it. Testkit's `ProcessFarm` does the same for tests, but panics
//! on any failure; a benchmark reports errors instead, and measures the processes.
//!
//! A wrapper must `exec` the program so the child's pid is the program's own and `/proc/PID`
//! describes the program: `ip netns exec` enters the namespace and execs (it only forks in
//! batch mode).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::sys;

/// How long a daemon gets to stop after SIGTERM (the smurf's own limit is 60 s).
const STOP_GRACE: Duration = Duration::from_secs(70);

/// Lines of output kept per process (older ones are dropped in halves): smtp-sink prints a
/// counter record per message.
const KEPT_LINES: usize = 4096;

/// Set when the bench got SIGINT or SIGTERM after [`catch_interrupts`]: every wait loop here
/// checks it and fails, so the callers' guards stop the processes and clean up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Fails when Ctrl-C (or SIGTERM) arrived since [`catch_interrupts`].
pub fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted: stopping the processes and cleaning up");
    }
    Ok(())
}

/// Catches SIGINT and SIGTERM on a background thread from now on (they no longer end the
/// process at once): they only set the flag [`check_interrupted`] reads, and print
/// `BENCH: interrupted`.
pub fn catch_interrupts(bench: &'static str) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal watcher")?;
    // Register both handlers before returning, so a Ctrl-C right after setup is caught.
    let mut term = runtime
        .block_on(async { signal(SignalKind::terminate()) })
        .context("watching SIGTERM")?;
    let mut int = runtime
        .block_on(async { signal(SignalKind::interrupt()) })
        .context("watching SIGINT")?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                eprintln!("{bench}: interrupted, cleaning up ...");
                INTERRUPTED.store(true, Ordering::Relaxed);
            }
        });
    });
    Ok(())
}

/// `wrapper... program` (no wrapper: `program`), arguments to be added.
pub fn command(wrapper: &[String], program: &Path) -> Command {
    match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// The command line of `command`, for messages.
fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `command` to completion (standard input closed); fails with its output unless it
/// exits 0.
pub fn run_ok(command: &mut Command) -> anyhow::Result<Output> {
    let line = command_line(command);
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {line}"))?;
    if !out.status.success() {
        bail!(
            "`{line}` exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// A started process; killed when dropped.
pub struct Proc {
    /// Short name for messages and reports (`coordinator`, `smurf-2`, `smtp-sink`).
    pub name: String,
    child: Child,
    /// Standard output, and standard error when it has no log file, line by line.
    lines: Arc<Mutex<Vec<String>>>,
    /// Where its standard error goes, if not into `lines`.
    log: Option<PathBuf>,
}

impl Proc {
    /// Starts `program args` behind `wrapper` (empty: none), standard input closed, its
    /// standard error appended to `log`, or kept with its output when `log` is None.
    pub fn spawn(
        name: &str,
        wrapper: &[String],
        program: &Path,
        args: &[impl AsRef<OsStr>],
        log: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let mut command = command(wrapper, program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        match log {
            Some(log) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .with_context(|| format!("opening {}", log.display()))?;
                command.stderr(file);
            }
            None => {
                command.stderr(Stdio::piped());
            }
        }
        let line = command_line(&command);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}: {line}"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let streams = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for stream in streams.into_iter().flatten() {
            let lines = lines.clone();
            std::thread::spawn(move || collect_lines(stream, &lines));
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            lines,
            log: log.map(Path::to_owned),
        })
    }

    /// The process id (the program's own, wrapper or not: see the module docs).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last line of output that satisfies `pred`.
    pub fn last_line(&self, pred: impl Fn(&str) -> bool) -> Option<String> {
        let lines = self.lines.lock().ok()?;
        lines.iter().rev().find(|l| pred(l)).cloned()
    }

    /// Waits until a line of output satisfies `pred`; fails when the process exits, `timeout`
    /// passes or the bench is interrupted.
    pub fn wait_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.last_line(&pred) {
                return Ok(line);
            }
            self.check_running()
                .with_context(|| format!("waiting for {what}"))?;
            if Instant::now() > deadline {
                bail!(
                    "{} did not print {what} within {timeout:?}: {}",
                    self.name,
                    self.tail()
                );
            }
            check_interrupted()?;
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fails when the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("checking on a child")? {
            bail!("{} exited ({status}): {}", self.name, self.tail());
        }
        Ok(())
    }

    /// CPU time (user + system, every thread) used so far.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        sys::process_cpu(self.pid())
    }

    /// Peak resident set size so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        sys::peak_rss(self.pid())
    }

    /// Sends SIGTERM (the daemons' graceful stop) and waits up to `grace` for the exit, then
    /// kills it. Returns the exit status and whether it exited on its own.
    pub fn stop(&mut self, grace: Duration) -> anyhow::Result<(ExitStatus, bool)> {
        if let Some(status) = self.child.try_wait().context("checking on a child")? {
            return Ok((status, true));
        }
        sys::terminate(self.pid());
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().context("waiting for a child")? {
                return Ok((status, true));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let status = self.child.wait().context("waiting for a killed child")?;
        Ok((status, false))
    }

    /// The last lines it printed (of its log file, when it has one), for error messages.
    pub fn tail(&self) -> String {
        let (text, label) = match &self.log {
            Some(log) => (
                std::fs::read_to_string(log).unwrap_or_default(),
                format!("(log {})", log.display()),
            ),
            None => (
                self.lines.lock().map(|l| l.join("\n")).unwrap_or_default(),
                "(output)".to_owned(),
            ),
        };
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n  ");
        format!("{label}:\n  {tail}")
    }
}

/// Stops a farm's daemons the project's way: the smurfs first (they finish and say goodbye),
/// then the coordinator, each with SIGTERM and up to 70 s to exit. Returns one problem per
/// daemon that did not exit 0 on its own.
pub fn stop_farm(coordinator: &mut Proc, smurfs: &mut [Proc]) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    for daemon in smurfs.iter_mut().chain(std::iter::once(coordinator)) {
        let (status, clean) = daemon.stop(STOP_GRACE)?;
        if !clean || !status.success() {
            problems.push(format!(
                "{} did not stop cleanly on SIGTERM ({status})",
                daemon.name
            ));
        }
    }
    Ok(problems)
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Splits a stream into lines at `\n` or `\r` and appends each non-empty one to `lines`,
/// keeping the last [`KEPT_LINES`] or so.
fn collect_lines(mut stream: impl Read, lines: &Mutex<Vec<String>>) {
    let mut buf = [0u8; 8192];
    let mut line = Vec::new();
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        for &byte in &buf[..n] {
            if byte == b'\r' || byte == b'\n' {
                if !line.is_empty() {
                    if let Ok(mut lines) = lines.lock() {
                        lines.push(String::from_utf8_lossy(&line).into_owned());
                        if lines.len() > KEPT_LINES {
                            lines.drain(..KEPT_LINES / 2);
                        }
                    }
                }
                line.clear();
            } else {
                line.push(byte);
            }
        }
    }
}

/// CPU time and peak RSS of one process, or of the processes of one name.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcCost {
    /// Process name (`coordinator`, `smurf-1`, `smtpd` ...).
    pub name: String,
    /// How many processes of that name this entry covers (Postfix starts several smtpd).
    pub processes: u32,
    /// CPU seconds (user + system) over the measured span; 0 in the per-name peaks of a
    /// [`TreeWatch`], whose tree is measured as a whole with [`tree_cpu`].
    pub cpu_seconds: f64,
    /// Peak resident set size (`VmHWM`), the largest of the processes covered.
    pub peak_rss_bytes: u64,
}

/// One process of a `/proc` scan.
#[derive(Clone, Debug)]
struct ProcEntry {
    ppid: u32,
    name: String,
    /// utime + stime + cutime + cstime: its own CPU and that of the children it reaped.
    ticks: u64,
}

/// Every process of the machine, from `/proc/*/stat`.
fn scan() -> HashMap<u32, ProcEntry> {
    let mut table = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return table;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end between the listing and the read: then it is not in the table.
        let Ok(stat) = sys::proc_stat(pid) else {
            continue;
        };
        table.insert(
            pid,
            ProcEntry {
                ppid: stat.ppid,
                name: stat.name,
                ticks: stat.own_ticks + stat.reaped_ticks,
            },
        );
    }
    table
}

/// The processes of `table` that are `root` or descend from it.
fn descendants(table: &HashMap<u32, ProcEntry>, root: u32) -> Vec<u32> {
    table
        .keys()
        .copied()
        .filter(|&pid| {
            let mut p = pid;
            for _ in 0..64 {
                if p == root {
                    return true;
                }
                match table.get(&p) {
                    Some(e) if e.ppid != 0 && e.ppid != p => p = e.ppid,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

/// CPU time of a process and all its descendants, the reaped ones included.
pub fn tree_cpu(root: u32) -> Duration {
    let table = scan();
    let ticks = descendants(&table, root)
        .iter()
        .filter_map(|pid| table.get(pid))
        .map(|e| e.ticks)
        .sum();
    sys::ticks_to_duration(ticks)
}

/// The pids of `root` and every process descending from it now, in ascending order (a Haraka
/// master and its cluster workers).
pub fn tree_pids(root: u32) -> Vec<u32> {
    let mut pids = descendants(&scan(), root);
    pids.sort_unstable();
    pids
}

/// Peak RSS per process name over a process tree whose members come and go (Postfix's smtpd,
/// cleanup, smtp ...): call [`TreeWatch::sample`] now and then while it runs.
#[derive(Debug, Default)]
pub struct TreeWatch {
    /// Per name: the pids seen and the largest VmHWM.
    seen: HashMap<String, (HashSet<u32>, u64)>,
}

impl TreeWatch {
    /// Records the peak RSS of every process now in the tree under `root`.
    pub fn sample(&mut self, root: u32) {
        let table = scan();
        for pid in descendants(&table, root) {
            let (Some(entry), Ok(rss)) = (table.get(&pid), sys::peak_rss(pid)) else {
                continue;
            };
            let slot = self.seen.entry(entry.name.clone()).or_default();
            slot.0.insert(pid);
            slot.1 = slot.1.max(rss);
        }
    }

    /// One entry per process name (CPU not filled in), largest peak first.
    pub fn peaks(&self) -> Vec<ProcCost> {
        let mut out: Vec<ProcCost> = self
            .seen
            .iter()
            .map(|(name, (pids, rss))| ProcCost {
                name: name.clone(),
                processes: pids.len() as u32,
                cpu_seconds: 0.0,
                peak_rss_bytes: *rss,
            })
            .collect();
        out.sort_by_key(|p| std::cmp::Reverse(p.peak_rss_bytes));
        out
    }
}

/// A 127.0.0.1 port that is free now, for a daemon the bench starts to listen on.
pub fn free_loopback_port() -> anyhow::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .context("finding a free loopback port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_at_carriage_returns_and_newlines() {
        let lines = Mutex::new(Vec::new());
        collect_lines(
            &b"sess=1 mesg=1\rsess=1 mesg=2\r\nlistening on x\n"[..],
            &lines,
        );
        let lines = lines.into_inner().unwrap();
        assert_eq!(lines, ["sess=1 mesg=1", "sess=1 mesg=2", "listening on x"]);
    }

    #[test]
    fn a_process_is_waited_on_measured_and_stopped_with_sigterm() {
        let mut proc = Proc::spawn(
            "sh",
            &[],
            Path::new("/bin/sh"),
            &["-c", "echo ready; echo oops >&2; exec sleep 30"],
            None,
        )
        .unwrap();
        let line = proc
            .wait_line("ready", Duration::from_secs(10), |l| l == "ready")
            .unwrap();
        assert_eq!(line, "ready");
        proc.check_running().unwrap();
        assert!(proc.peak_rss().unwrap() > 0);
        assert!(proc.cpu().is_ok());
        let (status, on_its_own) = proc.stop(Duration::from_secs(10)).unwrap();
        assert!(on_its_own, "sleep ends on SIGTERM");
        assert!(!status.success(), "killed by SIGTERM: {status}");
        assert!(proc.check_running().is_err());
        assert!(proc.tail().contains("oops"), "{}", proc.tail());
    }

    #[test]
    fn a_tree_lists_the_root_and_its_children() {
        let mut proc = Proc::spawn(
            "sh",
            &[],
            Path::new("/bin/sh"),
            &["-c", "sleep 30 & echo ready; wait"],
            None,
        )
        .unwrap();
        proc.wait_line("ready", Duration::from_secs(10), |l| l == "ready")
            .unwrap();
        let pids = tree_pids(proc.pid());
        for &pid in pids.iter().filter(|&&p| p != proc.pid()) {
            sys::kill_hard(pid);
        }
        assert_eq!(pids.len(), 2, "{pids:?}");
        assert!(pids.contains(&proc.pid()), "{pids:?}");
        assert!(pids.windows(2).all(|w| w[0] < w[1]), "{pids:?}");
    }

    #[test]
    fn a_failing_command_reports_its_output() {
        let err = run_ok(Command::new("/bin/sh").args(["-c", "echo broken >&2; exit 3"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("broken"), "{err}");
        assert!(err.contains("/bin/sh -c"), "{err}");
        let wrapped = run_ok(&mut command(&["env".into()], Path::new("true"))).unwrap();
        assert!(wrapped.status.success());
    }
}
