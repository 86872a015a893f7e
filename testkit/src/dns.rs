//! A real DNS server for tests and benchmarks: an `unbound` process on a free loopback port,
//! answering authoritatively for a static `test.` zone made of the records a caller gives.
//!
//! Besides those records the zone always has:
//! - names under `test.` that no record mentions: NXDOMAIN;
//! - [`SERVFAIL_ZONE`] (`servfail.test.` and everything below it): SERVFAIL, at once (its stub
//!   server is on 127.0.0.1, which unbound refuses to query, so it gives up without waiting);
//! - [`REFUSED_ZONE`] (`refused.test.` and below): REFUSED.
//!
//! Requires `/usr/sbin/unbound` (Debian package `unbound`): [`TestDns::start`] panics, never
//! skips, when it is missing. Programs that must not panic (the `mx` benchmark) use
//! [`TestDns::try_start`], which returns a [`DnsError`] instead.

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::peers::free_tcp_udp_port;

/// The unbound binary the harness runs.
pub const UNBOUND: &str = "/usr/sbin/unbound";
/// Every name in this zone answers SERVFAIL.
pub const SERVFAIL_ZONE: &str = "servfail.test.";
/// Every name in this zone answers REFUSED.
pub const REFUSED_ZONE: &str = "refused.test.";

/// How long unbound gets to answer its first query.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Tries with a fresh port when unbound could not bind the one found free.
const TRIES: usize = 5;

/// Why unbound could not be started.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The program is not there.
    #[error(
        "unbound not found at {}: install it (Debian/Ubuntu: apt-get install unbound); CI's .ci/run does",
        .0.display()
    )]
    Missing(PathBuf),
    /// A record that cannot be written into unbound.conf.
    #[error("zone record that cannot be quoted for unbound.conf: {0}")]
    BadRecord(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No port free for both TCP and UDP.
    #[error("no port free for both TCP and UDP on 127.0.0.1")]
    NoPort,
    /// unbound ran but never answered.
    #[error("unbound did not start; its log:\n{0}")]
    NotReady(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DnsError {
    let what = what.into();
    move |source| DnsError::Io { what, source }
}

/// A running unbound serving a test zone; killed when dropped.
pub struct TestDns {
    /// Where it listens, on UDP and TCP.
    pub addr: SocketAddr,
    /// The command line, for reports.
    pub command: String,
    child: Option<Child>,
    dir: TempDir,
}

impl TestDns {
    /// The smurf config lines that send MX delivery through this server to port `smtp_port`
    /// (`smtp_port`, then a `[resolver]` section: append more resolver keys right after).
    pub fn smurf_config(&self, smtp_port: u16) -> String {
        format!(
            "smtp_port = {smtp_port}\n[resolver]\nnameserver = \"{}\"",
            self.addr
        )
    }

    /// Starts [`UNBOUND`] with `zone_records` (zone-file lines such as
    /// `"a.test. 300 IN MX 10 mx1.a.test."`, all under `test.`) and waits until it answers.
    /// Panics, with the reason, when it cannot.
    pub fn start(zone_records: &[&str]) -> TestDns {
        Self::try_start(Path::new(UNBOUND), zone_records).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `program` (unbound) with `zone_records` and waits until it answers.
    pub fn try_start<R: AsRef<str>>(
        program: &Path,
        zone_records: &[R],
    ) -> Result<TestDns, DnsError> {
        if !program.is_file() {
            return Err(DnsError::Missing(program.to_owned()));
        }
        let records: Vec<&str> = zone_records.iter().map(AsRef::as_ref).collect();
        if let Some(bad) = records
            .iter()
            .find(|r| r.contains('\n') || (r.contains('"') && r.contains('\'')))
        {
            return Err(DnsError::BadRecord((*bad).to_owned()));
        }
        let mut last_log = String::new();
        // A port found free can be taken before unbound binds it: try a few.
        for _ in 0..TRIES {
            let dir = tempfile::tempdir().map_err(io("creating a temp dir for unbound"))?;
            let port = free_tcp_udp_port().ok_or(DnsError::NoPort)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let config_path = dir.path().join("unbound.conf");
            fs::write(&config_path, config(dir.path(), addr, &records))
                .map_err(io("writing unbound.conf"))?;
            let log = fs::File::create(dir.path().join("unbound.log"))
                .map_err(io("creating unbound's log"))?;
            let child = Command::new(program)
                .arg("-d")
                .arg("-c")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(io("cloning the log handle"))?)
                .stderr(log)
                .spawn()
                .map_err(io(format!("starting {}", program.display())))?;
            let mut dns = TestDns {
                addr,
                command: format!("{} -d -c {}", program.display(), config_path.display()),
                child: Some(child),
                dir,
            };
            if dns.wait_ready()? {
                return Ok(dns);
            }
            last_log = dns.log();
            dns.stop();
            if !last_log.contains("bind") && !last_log.contains("in use") {
                break;
            }
        }
        Err(DnsError::NotReady(last_log))
    }

    /// Kills unbound (the next queries to [`TestDns::addr`] fail). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whatever unbound has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("unbound.log")).unwrap_or_default()
    }

    /// Polls with a `test. SOA` query until unbound answers; false if it exits or times out.
    fn wait_ready(&mut self) -> Result<bool, DnsError> {
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(io("binding a UDP socket"))?;
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(io("setting a read timeout"))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut id: u16 = 0x4d46;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return Ok(false);
                }
            }
            id = id.wrapping_add(1);
            if socket.send_to(&soa_query(id), self.addr).is_ok() {
                // Any reply from the server, even to an earlier (slow) probe, shows it is up.
                let mut buf = [0u8; 512];
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    if from == self.addr && n >= 12 && buf[2] & 0x80 != 0 {
                        return Ok(true);
                    }
                }
            }
            sleep(Duration::from_millis(20));
        }
        Ok(false)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `test. IN SOA` query with recursion desired.
fn soa_query(id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(22);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; 1 question
    q.extend_from_slice(b"\x04test\x00");
    q.extend_from_slice(&[0, 6, 0, 1]); // SOA, IN
    q
}

/// unbound.conf for a server on `addr` with its files in `dir`. Records holding both quote
/// kinds or a line break are refused before this is called.
fn config(dir: &Path, addr: SocketAddr, zone_records: &[&str]) -> String {
    let dir = dir.display();
    let mut c = format!(
        r#"server:
    interface: {ip}
    port: {port}
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    so-reuseport: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    msg-cache-size: 1m
    rrset-cache-size: 1m
    prefetch: no
    do-not-query-localhost: yes
    local-zone: "test." static
    local-data: "test. 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 1"
    local-zone: "{SERVFAIL_ZONE}" transparent
    local-zone: "{REFUSED_ZONE}" always_refuse
"#,
        ip = addr.ip(),
        port = addr.port(),
    );
    for record in zone_records {
        let quoted = if record.contains('"') {
            format!("'{record}'")
        } else {
            format!("\"{record}\"")
        };
        let _ = writeln!(c, "    local-data: {quoted}");
    }
    let _ = write!(
        c,
        r#"remote-control:
    control-enable: no
stub-zone:
    name: "{SERVFAIL_ZONE}"
    stub-addr: 127.0.0.1@9
"#
    );
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_every_record_with_the_right_quotes() {
        let c = config(
            Path::new("/tmp/x"),
            "127.0.0.1:5353".parse().expect("address"),
            &[
                "a.test. 300 IN MX 10 mx.a.test.",
                "s._domainkey.a.test. 300 IN TXT \"v=DKIM1\"",
            ],
        );
        assert!(c.contains("    port: 5353\n"), "{c}");
        assert!(c.contains("local-data: \"a.test. 300 IN MX 10 mx.a.test.\""));
        assert!(c.contains("local-data: 's._domainkey.a.test. 300 IN TXT \"v=DKIM1\"'"));
    }

    #[test]
    fn refuses_a_missing_program_and_an_unquotable_record() {
        let missing = TestDns::try_start(Path::new("/nonexistent/unbound"), &["a.test. 1 IN A 1"]);
        assert!(matches!(missing, Err(DnsError::Missing(_))));
        let bad = TestDns::try_start(Path::new("/bin/sh"), &["a \"b\" 'c'"]);
        assert!(matches!(bad, Err(DnsError::BadRecord(_))));
    }
}
