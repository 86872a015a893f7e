//! The standalone inbound MX, `mailfarm-inbound`, as a separate process: a config written into
//! a temporary folder, the address it prints on its first line, its memory, a kill on drop.
//! Only the smurf package's tests can use it (Cargo builds the binary for those).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::farm::built_binary;

/// A running `mailfarm-inbound`.
pub struct InboundProcess {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its folder (config, mail store).
    pub dir: tempfile::TempDir,
}

impl InboundProcess {
    /// Starts `mailfarm-inbound` on 127.0.0.1 as `mx.example.test`, with `[inbound.limits]`
    /// lines `limits` and `[policy]` lines `policy`.
    pub fn spawn(limits: &str, policy: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("inbound.toml");
        std::fs::write(
            &config,
            format!(
                "[inbound]\nlisten = \"127.0.0.1:0\"\nhostname = \"mx.example.test\"\n\
                 mail_dir = \"mail\"\n[inbound.limits]\n{limits}\n[policy]\n{policy}\n"
            ),
        )
        .expect("writing the config");
        let mut child = Command::new(built_binary("mailfarm-inbound"))
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting mailfarm-inbound");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        Self { child, addr, dir }
    }

    /// Its mail store.
    pub fn mail_dir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("reading /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for InboundProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
