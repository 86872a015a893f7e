//! The fault sink as a process: `mailfarm sink` (our fault-injecting SMTP receiver), started
//! on a loopback address and read back from the files it records.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::farm::mailfarm;
use crate::process::Daemon;

/// `mailfarm sink` (our fault-injecting receiver) as a process, recording what it accepted.
pub struct FaultSinkProcess {
    /// The `mailfarm sink` process.
    pub daemon: Daemon,
    /// Where it listens.
    pub addr: SocketAddr,
    /// File of accepted messages: `Message-ID recipient` per line.
    pub record: PathBuf,
    /// File of accepted messages per Unix second.
    pub per_second: PathBuf,
}

impl FaultSinkProcess {
    /// Starts `mailfarm sink` with extra flags, recording into `dir`.
    pub fn start(dir: &Path, flags: &[&str]) -> Self {
        Self::start_at(dir, "127.0.0.1", 0, flags)
    }

    /// Starts `mailfarm sink` on `ip:port` (loopback addresses 127.0.0.x stand in for hosts).
    pub fn start_at(dir: &Path, ip: &str, port: u16, flags: &[&str]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let record = dir.join("accepted.txt");
        let per_second = dir.join("per-second.txt");
        let mut command = mailfarm();
        command
            .args(["sink", "--listen", &format!("{ip}:{port}"), "--record"])
            .arg(&record)
            .arg("--per-second")
            .arg(&per_second)
            .args(flags);
        let mut daemon = Daemon::spawn("sink", command);
        let line = daemon.wait_line("its address", Duration::from_secs(30), |l| {
            l.starts_with("mailfarm sink listening on ")
        });
        let addr = line.rsplit(' ').next().unwrap().parse().unwrap();
        Self {
            daemon,
            addr,
            record,
            per_second,
        }
    }

    /// Stops the sink and returns (Message-ID, recipient) of every accepted message.
    pub fn stop(&mut self) -> Vec<(String, String)> {
        assert!(self.daemon.terminate(Duration::from_secs(20)).success());
        std::fs::read_to_string(&self.record)
            .unwrap()
            .lines()
            .map(|l| {
                let (id, rcpt) = l.split_once(' ').unwrap();
                (id.to_owned(), rcpt.to_owned())
            })
            .collect()
    }

    /// Accepted messages per Unix second (valid after `stop`).
    pub fn per_second(&self) -> Vec<(u64, u64)> {
        std::fs::read_to_string(&self.per_second)
            .unwrap()
            .lines()
            .map(|l| {
                let (s, n) = l.split_once(' ').unwrap();
                (s.parse().unwrap(), n.parse().unwrap())
            })
            .collect()
    }
}
