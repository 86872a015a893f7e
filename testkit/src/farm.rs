//! Process farms: the real `mailfarm` binary as coordinator and smurfs (`farm init`, configs,
//! start, crash, restart), the `campaign` commands run against them, and the campaign folders
//! and CSVs the end-to-end scenarios launch.
//!
//! The binary is the one Cargo built next to the running test (`target/<profile>/mailfarm`),
//! or the path in `MAILFARM_BIN` when that is set.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::peers::free_udp_port;
use crate::process::Daemon;

/// The mailfarm binary under test.
pub fn mailfarm() -> Command {
    Command::new(mailfarm_binary())
}

/// Where the `mailfarm` binary is: `MAILFARM_BIN`, else next to the running test executable
/// (see [`built_binary`]).
pub fn mailfarm_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MAILFARM_BIN") {
        return PathBuf::from(path);
    }
    built_binary("mailfarm")
}

/// A binary Cargo built for the running test: next to the test executable (Cargo puts
/// integration tests in `target/<profile>/deps/` and binaries one level up). Panics when it is
/// not there: Cargo builds a package's binaries for that package's integration tests only.
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("locating the running test executable");
    let mut dir = exe
        .parent()
        .expect("the test executable has a folder")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let binary = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "{} is missing: run this from the tests of the package that builds `{name}` \
         (for `mailfarm`, or set MAILFARM_BIN)",
        binary.display()
    );
    binary
}

/// A running farm of real processes: `mailfarm coordinator` and `mailfarm smurf`s.
pub struct ProcessFarm {
    /// The farm folder (`farm init`, configs, state).
    pub dir: PathBuf,
    /// The coordinator process.
    pub coordinator: Daemon,
    /// The coordinator's QUIC address.
    pub addr: SocketAddr,
    /// The smurf processes, in start order.
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

    /// Waits until `farm nodes --json` shows `count` connected smurfs.
    pub fn wait_joined(&mut self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let nodes = self.nodes_json();
            if nodes.iter().filter(|n| n["connected"] == true).count() >= count {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "smurfs did not join: {nodes:?}\n{}",
                self.coordinator.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Counters of a campaign from `campaign status --json`, by the names the text line uses
    /// (`delivered`, `in-flight`, `template-shipments`, `state` in lower case...).
    pub fn status(&self, id: &str) -> std::collections::HashMap<String, String> {
        let json = self.campaign_json(id);
        let mut map = std::collections::HashMap::new();
        for (key, value) in json.as_object().into_iter().flatten() {
            let text = match value {
                serde_json::Value::String(s) => s.to_ascii_lowercase(),
                other => other.to_string(),
            };
            map.insert(key.replace('_', "-"), text);
        }
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
        self.operator("campaign", args)
    }

    /// Runs a `mailfarm farm ...` operator command (nodes, drain, suppress...) against this farm.
    pub fn farm(&self, args: &[&str]) -> std::process::Output {
        self.operator("farm", args)
    }

    /// Runs a `mailfarm forward ...` command (add, remove, list, import) against this farm.
    pub fn forward(&self, args: &[&str]) -> std::process::Output {
        self.operator("forward", args)
    }

    /// Runs `mailfarm GROUP ARGS` with this farm's folder and coordinator address.
    fn operator(&self, group: &str, args: &[&str]) -> std::process::Output {
        mailfarm()
            .arg(group)
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

/// A counter of [`ProcessFarm::status`].
pub fn number(status: &std::collections::HashMap<String, String>, key: &str) -> u64 {
    status.get(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The events a `campaign launch --json` run printed: every line of its stdout, each one JSON
/// object with an `event` field (a line that is not fails the test).
pub fn launch_events(out: &std::process::Output) -> Vec<serde_json::Value> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("launch --json printed a line that is not JSON ({e}): {line}\n{out:?}")
            });
            assert!(
                event["event"].is_string(),
                "an event without a kind: {line}"
            );
            event
        })
        .collect()
}

/// The one event of kind `kind` (`launched`, `summary`...) of a `campaign launch --json` run;
/// the `summary` must also be the last line.
pub fn launch_event(out: &std::process::Output, kind: &str) -> serde_json::Value {
    let events = launch_events(out);
    let mut of_kind = events.iter().filter(|e| e["event"] == kind);
    let event = of_kind
        .next()
        .unwrap_or_else(|| panic!("no {kind:?} event: {out:?}"))
        .clone();
    assert!(
        of_kind.next().is_none(),
        "more than one {kind:?} event: {out:?}"
    );
    if kind == "summary" {
        assert_eq!(
            events.last(),
            Some(&event),
            "the summary comes last: {out:?}"
        );
    }
    event
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
