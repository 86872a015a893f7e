//! End-to-end harness: starts the real `mailfarm` binary and real peers (Postfix's
//! `smtp-sink`) on loopback port 0 / free ports, and waits on what they print.
//! A peer that is missing fails the test loudly: it never skips.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The mailfarm binary under test.
pub fn mailfarm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mailfarm"))
}

/// Path of a required peer program; panics with an explanation when it is missing.
pub fn require(program: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let path = Path::new(dir).join(program);
        if path.exists() {
            return path;
        }
    }
    panic!(
        "required peer `{program}` is not installed: this test needs it (CI installs it with \
         apt-get; see .ci/run). Refusing to skip."
    );
}

/// Whether this process runs as root (smtp-sink then needs `-u`).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("no free UDP port")
}

/// `mailfarm sink` (our fault-injecting receiver) as a process, recording what it accepted.
pub struct FaultSinkProcess {
    pub daemon: Daemon,
    pub addr: SocketAddr,
    pub record: PathBuf,
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

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A child process whose output lines are collected in the background.
pub struct Daemon {
    pub name: String,
    pub child: Child,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

fn collect(
    stream: impl std::io::Read + Send + 'static,
    name: String,
    sink: Arc<Mutex<Vec<String>>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if std::env::var_os("MAILFARM_TEST_ECHO").is_some() {
                eprintln!("[{name}] {line}");
            }
            sink.lock().unwrap().push(line);
        }
    });
}

impl Daemon {
    /// Starts `command`, collecting its output.
    pub fn spawn(name: &str, mut command: Command) -> Self {
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(
            child.stdout.take().unwrap(),
            name.to_owned(),
            stdout.clone(),
        );
        collect(
            child.stderr.take().unwrap(),
            name.to_owned(),
            stderr.clone(),
        );
        Self {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
        }
    }

    /// Waits until some output line satisfies `pred`, returning it.
    pub fn wait_line(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            for stream in [&self.stdout, &self.stderr] {
                if let Some(line) = stream.lock().unwrap().iter().find(|l| pred(l)) {
                    return line.clone();
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) while waiting for {what}:\n{}",
                    self.name,
                    self.output()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not print {what} within {timeout:?}:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Counts output lines satisfying `pred`.
    pub fn count_lines(&self, pred: impl Fn(&str) -> bool) -> usize {
        [&self.stdout, &self.stderr]
            .iter()
            .map(|s| s.lock().unwrap().iter().filter(|l| pred(l)).count())
            .sum()
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        let out = self.stdout.lock().unwrap().join("\n");
        let err = self.stderr.lock().unwrap().join("\n");
        format!("--- stdout ---\n{out}\n--- stderr ---\n{err}")
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{} ignored SIGTERM for {timeout:?}:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Postfix's smtp-sink accepting everything and dumping each transaction into `dir`.
pub struct SmtpSink {
    pub daemon: Daemon,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl SmtpSink {
    /// Starts smtp-sink on a free loopback port, dumping messages into `dir`.
    pub fn start(dir: &Path) -> Self {
        let binary = require("smtp-sink");
        std::fs::create_dir_all(dir).unwrap();
        let mut command = Command::new(binary);
        if is_root() {
            // smtp-sink drops privileges to -u; that user must be able to write the dumps.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            command.args(["-u", "nobody"]);
        }
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        command.arg("-d").arg(format!("{}/%M.", dir.display()));
        command.arg(addr.to_string()).arg("256");
        let daemon = Daemon::spawn("smtp-sink", command);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "smtp-sink did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            daemon,
            addr,
            dir: dir.to_owned(),
        }
    }

    /// The dumped transactions: (envelope recipient, raw dump).
    pub fn messages(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).unwrap() {
            let path = entry.unwrap().path();
            let raw = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&raw);
            let rcpt = text
                .lines()
                .find_map(|l| l.strip_prefix("X-Rcpt-Args: <"))
                .and_then(|l| l.split('>').next())
                .unwrap_or_else(|| panic!("no X-Rcpt-Args in {}", path.display()))
                .to_owned();
            out.push((rcpt, raw));
        }
        out
    }
}

/// A running farm of real processes: `mailfarm coordinator` and `mailfarm smurf`s.
pub struct ProcessFarm {
    pub dir: PathBuf,
    pub coordinator: Daemon,
    pub addr: SocketAddr,
    pub smurfs: Vec<Daemon>,
}

impl ProcessFarm {
    /// `farm init` in `dir`, then a coordinator on port 0 and `smurfs` smurfs with `window`.
    pub fn start(dir: &Path, smurfs: u32, window: u32) -> Self {
        Self::start_with(dir, smurfs, window, "")
    }

    /// Like [`ProcessFarm::start`], with extra lines for coordinator.toml.
    pub fn start_with(dir: &Path, smurfs: u32, window: u32, coordinator_extra: &str) -> Self {
        Self::start_full(dir, smurfs, window, coordinator_extra, "")
    }

    /// Like [`ProcessFarm::start`], with extra lines for coordinator.toml and each smurf's
    /// config (appended after the generated keys, so sections may follow).
    pub fn start_full(
        dir: &Path,
        smurfs: u32,
        window: u32,
        coordinator_extra: &str,
        smurf_extra: &str,
    ) -> Self {
        let status = mailfarm()
            .args(["farm", "init"])
            .arg(dir)
            .args(["--smurfs", &smurfs.to_string()])
            .output()
            .unwrap();
        assert!(status.status.success(), "farm init failed: {status:?}");
        // A fixed free port, so a restarted coordinator comes back at the same address.
        let port = free_udp_port();
        std::fs::write(
            dir.join("coordinator.toml"),
            format!(
                "listen = \"127.0.0.1:{port}\"\nfarm_dir = \".\"\nbatch_size = 32\n\
                 state_dir = \"state\"\n{coordinator_extra}\n"
            ),
        )
        .unwrap();
        let (coordinator, addr) = Self::spawn_coordinator(dir, "coordinator");
        let mut farm = Self {
            dir: dir.to_owned(),
            coordinator,
            addr,
            smurfs: Vec::new(),
        };
        for i in 1..=smurfs {
            let name = format!("smurf-{i}");
            std::fs::write(
                dir.join(format!("{name}.toml")),
                format!(
                    "node = \"{name}\"\nfarm_dir = \".\"\nwindow = {window}\nhelo_name = \"{name}.test\"\n\
                     state_dir = \"state/{name}\"\n{smurf_extra}\n"
                ),
            )
            .unwrap();
            farm.start_smurf(&name);
        }
        farm.wait_joined(smurfs as usize);
        farm
    }

    fn spawn_coordinator(dir: &Path, name: &str) -> (Daemon, SocketAddr) {
        let mut command = mailfarm();
        command
            .arg("coordinator")
            .arg("--config")
            .arg(dir.join("coordinator.toml"));
        let mut coordinator = Daemon::spawn(name, command);
        let line = coordinator.wait_line("its listening address", Duration::from_secs(30), |l| {
            l.starts_with("mailfarm coordinator listening on ")
        });
        let addr: SocketAddr = line.rsplit(' ').next().unwrap().parse().unwrap();
        (coordinator, addr)
    }

    /// Kills the coordinator with SIGKILL and starts it again on the same address and state.
    pub fn crash_and_restart_coordinator(&mut self) {
        self.coordinator.child.kill().unwrap();
        self.coordinator.child.wait().unwrap();
        let (coordinator, addr) = Self::spawn_coordinator(&self.dir, "coordinator");
        assert_eq!(addr, self.addr);
        self.coordinator = coordinator;
    }

    /// Starts smurf `name` (its config must exist).
    pub fn start_smurf(&mut self, name: &str) {
        let mut command = mailfarm();
        command
            .arg("smurf")
            .arg("--config")
            .arg(self.dir.join(format!("{name}.toml")))
            .arg("--coordinator")
            .arg(self.addr.to_string());
        self.smurfs.push(Daemon::spawn(name, command));
    }

    /// Waits until the coordinator logged `count` smurf joins in total.
    pub fn wait_joined(&mut self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.coordinator.count_lines(|l| l.contains("smurf joined")) < count {
            assert!(
                Instant::now() < deadline,
                "smurfs did not join:\n{}",
                self.coordinator.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Counters of a campaign as `campaign status` prints them, by name.
    pub fn status(&self, id: &str) -> std::collections::HashMap<String, String> {
        let out = self.campaign(&["status", id]);
        assert!(out.status.success(), "status failed: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut map = std::collections::HashMap::new();
        for pair in words.windows(2) {
            map.insert(pair[0].to_owned(), pair[1].to_owned());
        }
        map.insert("state".into(), words.get(1).unwrap_or(&"").to_string());
        map
    }

    /// Polls `campaign status` until `done` holds, failing after `timeout`.
    pub fn wait_status(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&std::collections::HashMap<String, String>) -> bool,
    ) -> std::collections::HashMap<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(id);
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "campaign {id}: no {what} in {timeout:?}: {status:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a `mailfarm campaign ...` command against this farm.
    pub fn campaign(&self, args: &[&str]) -> std::process::Output {
        mailfarm()
            .arg("campaign")
            .args(args)
            .arg("--farm")
            .arg(&self.dir)
            .arg("--coordinator")
            .arg(self.addr.to_string())
            .output()
            .unwrap()
    }
}

/// Writes a campaign folder that delivers directly to each domain's MX hosts.
pub fn write_campaign_direct(dir: &Path, id: &str, csv: &str) {
    write_campaign(dir, id, "127.0.0.1:9".parse().unwrap(), csv);
    std::fs::write(
        dir.join("campaign.toml"),
        format!(
            "id = \"{id}\"\nfrom = \"Test Sender <news@sender.test>\"\nsubject = \"Hi {{{{first_name}}}}\"\n\
             list_id = \"tests.sender.test\"\nbounce_domain = \"bounces.sender.test\"\n\
             [delivery]\nconnections = 3\n"
        ),
    )
    .unwrap();
}

/// A CSV with `count` recipients at each of `domains`.
pub fn domains_csv(domains: &[(&str, usize)]) -> String {
    let mut csv = String::from("email,first_name,code\n");
    for (domain, count) in domains {
        for i in 0..*count {
            csv.push_str(&format!("r{i}@{domain},N{i},{i}\n"));
        }
    }
    csv
}

/// Writes a campaign folder delivering to `relay`.
pub fn write_campaign(dir: &Path, id: &str, relay: SocketAddr, csv: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("campaign.toml"),
        format!(
            "id = \"{id}\"\nfrom = \"Test Sender <news@sender.test>\"\nsubject = \"Hi {{{{first_name}}}}\"\n\
             list_id = \"tests.sender.test\"\nbounce_domain = \"bounces.sender.test\"\n\
             [delivery]\nrelay = \"{relay}\"\nconnections = 3\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("body.txt.hbs"),
        "Hello {{first_name}}, your code is {{code}}.\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("body.html.hbs"),
        "<html><body><p>Hello {{first_name}}</p><p>code {{code}}</p></body></html>\n",
    )
    .unwrap();
    std::fs::write(dir.join("recipients.csv"), csv).unwrap();
}

/// A counter from a parsed `campaign status` line.
pub fn number(status: &std::collections::HashMap<String, String>, key: &str) -> u64 {
    status.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A CSV of `n` recipients with columns email, first_name, code.
pub fn recipients_csv(n: usize, prefix: &str) -> String {
    let mut csv = String::from("email,first_name,code\n");
    for i in 0..n {
        csv.push_str(&format!("{prefix}{i}@d{}.example,N{i},{i}\n", i % 5));
    }
    csv
}

/// Runs a campaign of 6 recipients at `domain` against a farm whose DNS serves `record`, and
/// checks that every one fails at once (one attempt each, no server contacted) with a text
/// containing `needle`. Shared by the null MX and NXDOMAIN scenarios.
pub fn assert_permanent_dns_failure(tmp: &Path, dns_addr: SocketAddr, domain: &str, needle: &str) {
    let farm = ProcessFarm::start_full(
        &tmp.join("farm"),
        1,
        32,
        "retry_schedule = [\"200ms\"]",
        &format!("smtp_port = 2599\n[resolver]\nnameserver = \"{dns_addr}\""),
    );
    let campaign = tmp.join("c");
    write_campaign_direct(&campaign, "dns-failure", &domains_csv(&[(domain, 6)]));
    let out = farm.campaign(&["launch", campaign.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let status = farm.status("dns-failure");
    assert_eq!(number(&status, "failed"), 6, "{status:?}");
    assert_eq!(
        number(&status, "attempts"),
        6,
        "permanent: no retries: {status:?}"
    );
    let log = std::fs::read_to_string(farm.dir.join("state/accounting.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 6);
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["state"], "failed");
        assert!(
            v["text"].as_str().unwrap().to_lowercase().contains(needle),
            "{line}"
        );
        assert_eq!(v["remote"], "", "no server was contacted: {line}");
    }
}

/// The coordinator's `/metrics` page (its config must set `metrics_listen`).
pub fn metrics(farm: &ProcessFarm) -> String {
    use std::io::{Read, Write};
    let line = farm
        .coordinator
        .stdout
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.starts_with("mailfarm metrics on http://"))
        .cloned()
        .expect("metrics address printed");
    let addr = line
        .trim_start_matches("mailfarm metrics on http://")
        .trim_end_matches("/metrics");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}
