//! A real DNS server for the `mx` benchmark: an `unbound` process on a free loopback port,
//! answering authoritatively for a static `test.` zone made of the records it is given. Names
//! under `test.` that no record mentions get NXDOMAIN. Errors are returned, never panicked.

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tempfile::TempDir;

/// How long unbound gets to answer its first query.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Tries with a fresh port when unbound could not bind the one found free.
const TRIES: usize = 5;

/// A running unbound serving a `test.` zone; killed when dropped.
pub struct Dns {
    /// Where it listens, on UDP and TCP.
    pub addr: SocketAddr,
    /// The command line, for the report.
    pub command: String,
    child: Option<Child>,
    dir: TempDir,
}

impl Dns {
    /// Starts `program` (unbound) with `records` (zone-file lines such as
    /// `"a.test. 300 IN MX 10 mx1.a.test."`, all under `test.`, without quotes) and waits
    /// until it answers.
    pub fn start(program: &Path, records: &[String]) -> anyhow::Result<Self> {
        if !program.is_file() {
            bail!(
                "unbound not found at {}: install it (Debian/Ubuntu: apt-get install unbound) \
                 or pass --unbound PATH",
                program.display()
            );
        }
        if let Some(bad) = records.iter().find(|r| r.contains(['"', '\n'])) {
            bail!("zone record with a quote or line break: {bad}");
        }
        let mut last_log = String::new();
        // A port found free can be taken before unbound binds it: try a few.
        for _ in 0..TRIES {
            let dir = tempfile::tempdir().context("creating a folder for unbound")?;
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let config_path = dir.path().join("unbound.conf");
            fs::write(&config_path, config(dir.path(), addr, records))
                .context("writing unbound.conf")?;
            let log_path = dir.path().join("unbound.log");
            let log = fs::File::create(&log_path).context("creating unbound's log")?;
            let child = Command::new(program)
                .arg("-d")
                .arg("-c")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().context("cloning unbound's log handle")?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", program.display()))?;
            let mut dns = Dns {
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
        bail!("unbound did not start; its log:\n{last_log}")
    }

    /// Kills unbound. Idempotent.
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
    fn wait_ready(&mut self) -> anyhow::Result<bool> {
        let socket = UdpSocket::bind("127.0.0.1:0").context("binding a UDP socket")?;
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .context("setting a read timeout")?;
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

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port free on 127.0.0.1 for both TCP and UDP right now.
fn free_port() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let tcp = TcpListener::bind("127.0.0.1:0").context("binding a TCP port")?;
        let port = tcp.local_addr().context("reading a local address")?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both TCP and UDP on 127.0.0.1")
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

/// unbound.conf for a server on `addr` with its files in `dir`, serving `records`.
fn config(dir: &Path, addr: SocketAddr, records: &[String]) -> String {
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
"#,
        ip = addr.ip(),
        port = addr.port(),
    );
    for record in records {
        let _ = writeln!(c, "    local-data: \"{record}\"");
    }
    c.push_str("remote-control:\n    control-enable: no\n");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lists_every_record() {
        let records = vec![
            "a.test. 300 IN MX 10 mx.a.test.".to_owned(),
            "mx.a.test. 300 IN A 127.0.0.2".to_owned(),
        ];
        let c = config(
            Path::new("/tmp/x"),
            SocketAddr::from(([127, 0, 0, 1], 5353)),
            &records,
        );
        assert!(c.contains("port: 5353"));
        assert!(c.contains("local-data: \"mx.a.test. 300 IN A 127.0.0.2\""));
    }

    #[test]
    fn a_missing_program_is_an_error() {
        let err = Dns::start(Path::new("/nonexistent/unbound"), &[]).err();
        assert!(err.is_some_and(|e| e.to_string().contains("apt-get install unbound")));
    }
}
