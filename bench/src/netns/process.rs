//! A program started inside a network namespace (`ip netns exec NS PROGRAM ...`), the way the
//! `netns` bench runs the coordinator, the smurfs and the sink: its standard output collected
//! line by line (a `\r` ends a line too, for smtp-sink's counters), its standard error in a log
//! file, its CPU time and peak memory read from `/proc`, and a graceful stop (SIGTERM, then
//! SIGKILL after a grace period). Dropping it kills the process.
//!
//! It is deliberately small and self-contained: `compare` has its own runner for the same
//! daemons outside namespaces, and the two are meant to be unified later.
//!
//! `ip netns exec` enters the namespace and then execs the program in the same process (it
//! only forks in batch mode), so the child's pid is the program's own pid and `/proc/PID`
//! describes the program, not `ip`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::sys;

/// Set when the bench got SIGINT or SIGTERM: every wait loop checks it and fails, so the
/// guards' `Drop` stops the processes and removes the namespaces.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C (or SIGTERM) arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Fails when Ctrl-C (or SIGTERM) arrived.
pub fn check_interrupted() -> anyhow::Result<()> {
    if interrupted() {
        bail!("interrupted: stopping the farm and removing the namespaces");
    }
    Ok(())
}

/// Catches SIGINT and SIGTERM on a background thread from now on (they no longer end the
/// process at once): they only set the flag [`check_interrupted`] reads.
pub fn catch_interrupts() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal watcher")?;
    // Register both handlers before returning, so a Ctrl-C right after setup is caught.
    let mut term = runtime
        .block_on(async {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        })
        .context("watching SIGTERM")?;
    let mut int = runtime
        .block_on(async {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        })
        .context("watching SIGINT")?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                eprintln!("netns: interrupted, cleaning up ...");
                INTERRUPTED.store(true, Ordering::Relaxed);
            }
        });
    });
    Ok(())
}

/// A process running in a network namespace.
pub struct NsProcess {
    /// Short name for messages (`coordinator`, `smurf-2`, `sink`).
    pub name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// Where its standard error goes.
    pub log: PathBuf,
}

impl NsProcess {
    /// Starts `program args` in namespace `ns`, its standard error appended to `log`.
    pub fn spawn(
        name: &str,
        ns: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .with_context(|| {
                format!("starting {name}: ip netns exec {ns} {}", program.display())
            })?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            let lines = lines.clone();
            std::thread::spawn(move || collect_lines(out, &lines));
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            lines,
            log: log.to_owned(),
        })
    }

    /// The process id (the program's own: see the module docs).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last line of standard output that satisfies `pred`.
    pub fn last_line(&self, pred: impl Fn(&str) -> bool) -> Option<String> {
        let lines = self.lines.lock().ok()?;
        lines.iter().rev().find(|l| pred(l)).cloned()
    }

    /// Waits until a line of standard output satisfies `pred`; fails when the process exits,
    /// `timeout` passes or the bench is interrupted.
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
            if let Some(status) = self.child.try_wait().context("checking on a child")? {
                bail!(
                    "{} exited ({status}) before printing {what}: {}",
                    self.name,
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not print {what} within {timeout:?}: {}",
                    self.name,
                    self.log_tail()
                );
            }
            check_interrupted()?;
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fails when the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("checking on a child")? {
            bail!("{} exited ({status}): {}", self.name, self.log_tail());
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
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
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

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(8)..].join("\n  ");
        format!("(log {}):\n  {tail}", self.log.display())
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `program args` in namespace `ns` to its end; fails with its output unless it succeeds.
pub fn run_in(ns: &str, program: &Path, args: &[String]) -> anyhow::Result<String> {
    check_interrupted()?;
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running ip netns exec {ns} {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "`{} {}` in {ns} failed ({}): {}{}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Splits a stream into lines at `\n` or `\r` and appends each non-empty one to `lines`.
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
                        // smtp-sink prints a counter record per message: keep the list short.
                        if lines.len() > 4096 {
                            lines.drain(..2048);
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
}
