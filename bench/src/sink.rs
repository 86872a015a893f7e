//! The receiving peer: Postfix's `smtp-sink` on a free loopback port (or, for `netns`, at an
//! address in a namespace), with its running counters (`-c`) read from its standard output so
//! each phase can be checked against the number of messages the sink itself accepted. Started
//! and measured by the benches' one runner, `crate::procs`.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::procs::Proc;

/// Listen backlog passed to smtp-sink.
const BACKLOG: &str = "1000";

/// How long smtp-sink gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `smtp-sink`; killed when dropped.
pub struct SmtpSink {
    process: Proc,
    addr: SocketAddr,
    /// The command line, for the report.
    pub command: String,
}

impl SmtpSink {
    /// Starts `program` on a free 127.0.0.1 port, accepting `max_sessions` concurrent sessions,
    /// announcing PIPELINING (the default) and writing nothing to disk; waits until it listens.
    pub fn start(program: &Path, max_sessions: usize) -> anyhow::Result<Self> {
        let port = crate::procs::free_loopback_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut sink = Self::spawn(&[], program, addr, max_sessions, None)?;
        sink.wait_listening()?;
        Ok(sink)
    }

    /// Starts `program` behind `wrapper` (e.g. `ip netns exec NS`) listening on `addr`, its
    /// standard error appended to `log` (None: kept for error messages); does not wait until
    /// it listens.
    pub fn spawn(
        wrapper: &[String],
        program: &Path,
        addr: SocketAddr,
        max_sessions: usize,
        log: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let mut args: Vec<String> = vec!["-c".into(), "-m".into(), max_sessions.to_string()];
        if crate::sys::is_root() {
            args.extend(["-u".into(), "nobody".into()]);
        }
        args.extend([addr.to_string(), BACKLOG.into()]);
        let command = format!("{} {}", program.display(), args.join(" "));
        Ok(Self {
            process: Proc::spawn("smtp-sink", wrapper, program, &args, log)?,
            addr,
            command,
        })
    }

    /// Polls until the port accepts connections, or fails if smtp-sink exits.
    fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.process.check_running().is_err() {
                // Let its last words reach the output reader first.
                std::thread::sleep(Duration::from_millis(100));
                self.process
                    .check_running()
                    .with_context(|| format!("starting {}", self.command))?;
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

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Messages the sink has accepted so far (its latest `mesg=` counter record).
    pub fn messages(&self) -> u64 {
        self.process
            .last_line(|l| l.contains("mesg="))
            .and_then(|l| parse_mesg(&l))
            .unwrap_or(0)
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
        self.process.cpu()
    }

    /// Fails when smtp-sink has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        self.process.check_running()
    }
}

/// The `mesg=` value of one counter record.
fn parse_mesg(record: &str) -> Option<u64> {
    record
        .split_whitespace()
        .find_map(|field| field.strip_prefix("mesg="))
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_message_count_of_a_record() {
        assert_eq!(parse_mesg("sess=1 quit=1 mesg=2"), Some(2));
        assert_eq!(parse_mesg("garbage"), None);
    }
}
