//! The optional fourth peer of `compare` (issue 12): Haraka (npm), the Node.js MTA listmonk
//! users put behind their newsletter as the outbound relay. A private instance (`haraka -i
//! DIR`, then its configuration written there: its own loopback port, queue and log; no
//! system configuration touched) takes the same pre-rendered messages as the Postfix side, from
//! the same injector, and relays every one to the sink the way Haraka's Outbound docs route
//! mail:
//! - the `relay` plugin's ACL marks connections from 127.0.0.1 as relaying, so every recipient
//!   is accepted and the message goes to Haraka's outbound queue (on disk, fsync per message);
//! - a small plugin written into the instance answers `get_mx` with the sink (a smart host)
//!   and `lookup_rdns` with `localhost`: nothing does a DNS lookup;
//! - Node is single-threaded, so the instance runs one cluster worker per CPU (`nodes=` in
//!   smtp.ini) and splits outbound concurrency between them: at most `sessions` connections
//!   reach the sink, as for Postfix. Haraka 3 has no outbound connection pooling; every
//!   delivery opens its own connection.
//!
//! Latency comes from Haraka's log at its default level: `delay=` of each `delivered` line is
//! the time from queueing (end of DATA) to the sink's 250.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::procs::{self, Proc};

/// How to get Haraka, for messages.
pub const INSTALL: &str =
    "install it with `npm install -g Haraka@3`, or pass --haraka PATH (node_modules/.bin/haraka)";

/// How long the instance gets to start every worker.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the instance gets to stop on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// The plugin that routes everything to the sink and skips the reverse DNS lookup.
const SINK_PLUGIN: &str = "\
'use strict'
// mailfarm-bench: every message to the sink (smart host), no DNS lookups.
exports.register = function () {
    this.register_hook('lookup_rdns', 'no_rdns')
    this.register_hook('get_mx', 'sink')
}
exports.no_rdns = function (next) {
    next(OK, 'localhost')
}
exports.sink = function (next) {
    next(OK, { priority: 0, exchange: '@SINK_HOST@', port: @SINK_PORT@ })
}
";

/// Name of [`SINK_PLUGIN`] in the instance.
const SINK_PLUGIN_NAME: &str = "mailfarm_bench_sink";

/// The program to run: `explicit`, else `haraka` on PATH; None when neither.
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("haraka"))
        .find(|candidate| candidate.is_file())
}

/// Haraka's version (`haraka -v`); fails with installation advice when `program` does not run
/// or is not Haraka.
pub fn version(program: &Path) -> anyhow::Result<String> {
    let out = procs::run_ok(Command::new(program).arg("-v"))
        .with_context(|| format!("Haraka at {} does not run: {INSTALL}", program.display()))?;
    parse_version(&String::from_utf8_lossy(&out.stdout)).with_context(|| {
        format!(
            "{} -v did not print Haraka's version: {INSTALL}",
            program.display()
        )
    })
}

/// The version in `haraka -v` output (`Haraka.js — Version: 3.3.4`, colour codes included).
fn parse_version(text: &str) -> Option<String> {
    let plain = strip_ansi(text);
    let after = plain.split("Version:").nth(1)?;
    let version = after.split_whitespace().next()?;
    plain
        .contains("Haraka")
        .then(|| version.to_owned())
        .filter(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit()))
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What the instance's configuration is made of.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Where it relays.
    pub sink: SocketAddr,
    /// Cluster workers (`nodes=`).
    pub workers: usize,
    /// Outbound connections at once, over all workers.
    pub sessions: usize,
}

impl Shape {
    /// Outbound deliveries at once per worker (`concurrency_max` is per worker).
    pub fn concurrency_per_worker(&self) -> usize {
        self.sessions.div_ceil(self.workers.max(1)).max(1)
    }

    /// The configuration files, relative to the instance's folder, and their contents.
    pub fn files(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "config/smtp.ini",
                format!(
                    "[main]\nlisten={}\nnodes={}\nforce_shutdown_timeout=10\n",
                    self.listen, self.workers
                ),
            ),
            ("config/plugins", format!("relay\n{SINK_PLUGIN_NAME}\n")),
            ("config/relay.ini", "[relay]\nacl=true\n".into()),
            ("config/relay_acl_allow", "127.0.0.1/32\n".into()),
            ("config/me", "relay.bench.test\n".into()),
            (
                "config/outbound.ini",
                format!(
                    "[main]\nenable_tls=false\nlocal_mx_ok=true\nconcurrency_max={}\n",
                    self.concurrency_per_worker()
                ),
            ),
            (
                "plugins/mailfarm_bench_sink.js",
                SINK_PLUGIN
                    .replace("@SINK_HOST@", &self.sink.ip().to_string())
                    .replace("@SINK_PORT@", &self.sink.port().to_string()),
            ),
        ]
    }
}

/// A running private Haraka instance relaying to the sink; stopped when dropped.
pub struct HarakaRelay {
    proc: Proc,
    dir: PathBuf,
    log: PathBuf,
    /// Its SMTP listener.
    pub addr: SocketAddr,
    /// Cluster workers.
    pub workers: usize,
}

impl HarakaRelay {
    /// Creates an instance under `tmp` with `program -i`, writes its configuration (one worker
    /// per CPU, at most `sessions` connections to `sink`), starts it and waits until every
    /// worker listens.
    pub fn start(
        program: &Path,
        sink: SocketAddr,
        sessions: usize,
        tmp: &Path,
    ) -> anyhow::Result<Self> {
        let dir = tmp.join("haraka");
        procs::run_ok(Command::new(program).arg("-i").arg(&dir))
            .context("creating the Haraka instance (haraka -i)")?;
        let port = crate::procs::free_loopback_port()?;
        let shape = Shape {
            listen: ([127, 0, 0, 1], port).into(),
            sink,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            sessions,
        };
        for (name, text) in shape.files() {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        let log = dir.join("haraka.log");
        // The shell execs Haraka (its pid stays the master's) with its output in the log file.
        let wrapper = [
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            "exec \"$0\" -c \"$1\" >>\"$2\" 2>&1".to_owned(),
        ];
        let args = [dir.as_os_str(), log.as_os_str()];
        let proc = Proc::spawn("haraka", &wrapper, program, &args, None)?;
        let mut relay = Self {
            proc,
            dir,
            log,
            addr: shape.listen,
            workers: shape.workers,
        };
        relay.wait_listening()?;
        Ok(relay)
    }

    /// Waits until the log says every worker listens.
    fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let listening = text
                .lines()
                .filter(|l| l.contains("[server] worker ") && l.contains(" listening on "))
                .count();
            if listening >= self.workers {
                return Ok(());
            }
            self.proc
                .check_running()
                .with_context(|| format!("Haraka stopped while starting: {}", self.tail()))?;
            if Instant::now() > deadline {
                bail!(
                    "Haraka did not start {} workers within {START_TIMEOUT:?}: {}",
                    self.workers,
                    self.tail()
                );
            }
            procs::check_interrupted()?;
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of its log.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "(log {}):\n  {}",
            self.log.display(),
            lines[lines.len().saturating_sub(20)..].join("\n  ")
        )
    }

    /// The master's pid: the cluster workers are its children.
    pub fn master_pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Files in the outbound queue (messages not yet delivered, and files being written).
    pub fn queued(&self) -> u64 {
        std::fs::read_dir(self.dir.join("queue"))
            .map(|d| d.flatten().count() as u64)
            .unwrap_or(0)
    }

    /// Seconds from queueing to the relay's 250 of every delivered message, in log order.
    pub fn delivery_delays(&self) -> Vec<f64> {
        parse_delays(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Stops the master with SIGTERM (it stops its workers), then kills any worker left.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let tree = procs::tree_pids(self.master_pid());
        self.proc.stop(STOP_GRACE)?;
        for pid in tree {
            if pid != self.master_pid() && crate::sys::proc_stat(pid).is_ok() {
                crate::sys::kill_hard(pid);
            }
        }
        Ok(())
    }
}

impl Drop for HarakaRelay {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The `delay=` values of outbound `delivered` log lines.
pub fn parse_delays(log: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains(" delivered file="))
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("delay="))
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_come_from_delivered_lines_only() {
        let log = "[NOTICE] [A.1] [core] message mid=<x@y> size=247 rcpts=1/0/0 delay=0 code=CONT\n\
                   [NOTICE] [A.1.1] [outbound]  delivered file=179_0_9723_siXKEf_3_vm domain=example.test \
                   host=127.0.0.1 ip=127.0.0.1 port=40125 mode=SMTP tls=N auth=N response=Ok delay=0.062 \
                   fails=0 rcpts=1/0/0\n\
                   [NOTICE] [B.1.1] [outbound]  delivered file=179_1 domain=d response=\"250 2.0.0 Ok\" delay=1.5 fails=0\n";
        assert_eq!(parse_delays(log), vec![0.062, 1.5]);
    }

    #[test]
    fn the_version_is_read_through_colour_codes() {
        let out = "\u{1b}[32;40mHaraka.js\u{1b}[0m — Version: 3.3.4\n";
        assert_eq!(parse_version(out).as_deref(), Some("3.3.4"));
        assert_eq!(parse_version("Python 3.11.2\n"), None);
        assert_eq!(parse_version("Haraka.js — Version: \n"), None);
    }

    #[test]
    fn the_configuration_relays_everything_to_the_sink_over_the_sessions() {
        let shape = Shape {
            listen: "127.0.0.1:2525".parse().unwrap(),
            sink: "127.0.0.1:4000".parse().unwrap(),
            workers: 3,
            sessions: 16,
        };
        assert_eq!(shape.concurrency_per_worker(), 6);
        let files = shape.files();
        let get = |name: &str| {
            files
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| t.clone())
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        assert!(get("config/smtp.ini").contains("listen=127.0.0.1:2525\nnodes=3\n"));
        assert!(get("config/outbound.ini").contains("concurrency_max=6\n"));
        assert_eq!(get("config/plugins"), "relay\nmailfarm_bench_sink\n");
        let plugin = get("plugins/mailfarm_bench_sink.js");
        assert!(
            plugin.contains("exchange: '127.0.0.1', port: 4000 }"),
            "{plugin}"
        );
        assert!(!plugin.contains('@'), "{plugin}");
        let one = Shape {
            workers: 0,
            sessions: 0,
            ..shape
        };
        assert_eq!(one.concurrency_per_worker(), 1);
    }
}
