//! A real DNS server for tests: an `unbound` process on a free loopback port, answering
//! authoritatively for a static `test.` zone made of the records a test gives.
//!
//! Besides those records the zone always has:
//! - names under `test.` that no record mentions: NXDOMAIN;
//! - [`SERVFAIL_ZONE`] (`servfail.test.` and everything below it): SERVFAIL, at once (its stub
//!   server is on 127.0.0.1, which unbound refuses to query, so it gives up without waiting);
//! - [`REFUSED_ZONE`] (`refused.test.` and below): REFUSED.
//!
//! Requires `/usr/sbin/unbound` (Debian package `unbound`): [`TestDns::start`] panics, never
//! skips, when it is missing.
#![allow(dead_code)] // each test binary uses its own part of the harness

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The unbound binary the harness runs.
pub const UNBOUND: &str = "/usr/sbin/unbound";
/// Every name in this zone answers SERVFAIL.
pub const SERVFAIL_ZONE: &str = "servfail.test.";
/// Every name in this zone answers REFUSED.
pub const REFUSED_ZONE: &str = "refused.test.";

/// How long unbound gets to answer its first query.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running unbound serving a test zone; killed when dropped.
pub struct TestDns {
    /// Where it listens, on UDP and TCP.
    pub addr: SocketAddr,
    child: Option<Child>,
    dir: TempDir,
}

impl TestDns {
    /// Starts unbound with `zone_records` (zone-file lines such as
    /// `"a.test. 300 IN MX 10 mx1.a.test."`, all under `test.`) and waits until it answers.
    pub fn start(zone_records: &[&str]) -> TestDns {
        assert!(
            Path::new(UNBOUND).exists(),
            "{UNBOUND} is missing: install unbound (Debian package `unbound`); CI's .ci/run does"
        );
        let mut last_log = String::new();
        // A port found free can be taken before unbound binds it: try a few.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("creating a temp dir for unbound");
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let config = config(dir.path(), addr, zone_records);
            let config_path = dir.path().join("unbound.conf");
            fs::write(&config_path, config).expect("writing unbound.conf");
            let log = fs::File::create(dir.path().join("unbound.log")).expect("creating log");
            let child = Command::new(UNBOUND)
                .arg("-d")
                .arg("-c")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("cloning log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {UNBOUND}: {e}"));
            let mut dns = TestDns {
                addr,
                child: Some(child),
                dir,
            };
            if dns.wait_ready() {
                return dns;
            }
            last_log = dns.log();
            dns.stop();
            if !last_log.contains("bind") && !last_log.contains("in use") {
                break;
            }
        }
        panic!("unbound did not start; its log:\n{last_log}");
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
    fn wait_ready(&mut self) -> bool {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("binding a UDP socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("setting a read timeout");
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut id: u16 = 0x4d46;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            id = id.wrapping_add(1);
            if socket.send_to(&soa_query(id), self.addr).is_ok() {
                // Any reply from the server, even to an earlier (slow) probe, shows it is up.
                let mut buf = [0u8; 512];
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    if from == self.addr && n >= 12 && buf[2] & 0x80 != 0 {
                        return true;
                    }
                }
            }
            sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port free on 127.0.0.1 for both TCP and UDP right now.
fn free_port() -> u16 {
    for _ in 0..50 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("binding a TCP port");
        let port = tcp.local_addr().expect("local address").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP on 127.0.0.1");
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

/// unbound.conf for a server on `addr` with its files in `dir`.
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
            assert!(
                !record.contains('\''),
                "record with both quote kinds: {record}"
            );
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
