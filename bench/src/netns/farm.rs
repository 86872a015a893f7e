//! The farm of the `netns` bench, laid out the way an operator deploys one: `mailfarm farm
//! init` once on the operator's machine (the CA key stays there), then each host gets only its
//! own files (the CA certificate, its certificate and key, its config; the coordinator also
//! the VERP key) in a folder of its own, and runs `mailfarm coordinator` or `mailfarm smurf`
//! from it inside its namespace. The operator's CLI runs on the coordinator's host, so its
//! traffic stays off the coordinator's network link.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use mailfarm_protocol::FarmSnapshot;

use super::topology::ns_exec;
use crate::farm_run::Progress;
use crate::operator::Operator;
use crate::procs::{check_interrupted, run_ok, Proc};

/// QUIC port of the coordinator.
pub const QUIC_PORT: u16 = 4433;
/// SMTP port of the sink.
pub const SMTP_PORT: u16 = 25;
/// How long the coordinator gets to print its listening address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The operator's farm folder (`farm init` output) and the programs.
pub struct FarmFiles {
    /// `mailfarm` binary.
    pub mailfarm: PathBuf,
    /// Folder of `farm init` (CA key included: the operator's machine).
    pub pki: PathBuf,
    /// The coordinator's QUIC address.
    pub coordinator: SocketAddr,
}

/// Config values the bench may override (None: what `farm init` wrote).
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// Smurf credit window.
    pub window: Option<u32>,
    /// Coordinator batch size.
    pub batch_size: Option<usize>,
}

impl FarmFiles {
    /// Runs `mailfarm farm init DIR --smurfs N --listen ADDR`.
    pub fn init(
        mailfarm: &Path,
        dir: &Path,
        smurfs: u32,
        coordinator: Ipv4Addr,
    ) -> anyhow::Result<Self> {
        let pki = dir.join("pki");
        let addr = SocketAddr::from((coordinator, QUIC_PORT));
        run_ok(
            std::process::Command::new(mailfarm)
                .args(["farm", "init"])
                .arg(&pki)
                .args([
                    "--smurfs",
                    &smurfs.to_string(),
                    "--listen",
                    &addr.to_string(),
                ]),
        )?;
        Ok(Self {
            mailfarm: mailfarm.to_owned(),
            pki,
            coordinator: addr,
        })
    }

    /// Copies `files` from the operator's folder into host folder `host` (created).
    fn provision(&self, host: &Path, files: &[String]) -> anyhow::Result<()> {
        std::fs::create_dir_all(host).with_context(|| format!("creating {}", host.display()))?;
        for name in files {
            let from = self.pki.join(name);
            std::fs::copy(&from, host.join(name))
                .with_context(|| format!("copying {}", from.display()))?;
        }
        Ok(())
    }

    /// The coordinator's host folder under `run`: its files and `coordinator.toml`.
    pub fn coordinator_host(&self, run: &Path, tuning: Tuning) -> anyhow::Result<PathBuf> {
        let host = run.join("coordinator");
        let files = ["ca.pem", "coordinator.pem", "coordinator.key", "verp.key"];
        self.provision(&host, &files.map(String::from))?;
        let mut config = read(&self.pki.join("coordinator.toml"))?;
        if let Some(batch) = tuning.batch_size {
            config = set_key(&config, "batch_size", &batch.to_string());
        }
        write(&host.join("coordinator.toml"), &config)?;
        Ok(host)
    }

    /// Smurf `name`'s host folder under `run`: its certificate and `NAME.toml`.
    pub fn smurf_host(&self, run: &Path, name: &str, tuning: Tuning) -> anyhow::Result<PathBuf> {
        let host = run.join(name);
        let files = [
            "ca.pem".to_owned(),
            format!("{name}.pem"),
            format!("{name}.key"),
        ];
        self.provision(&host, &files)?;
        let mut config = read(&self.pki.join(format!("{name}.toml")))?;
        config = set_key(&config, "helo_name", &format!("\"{name}.netns.test\""));
        if let Some(window) = tuning.window {
            config = set_key(&config, "window", &window.to_string());
        }
        write(&host.join(format!("{name}.toml")), &config)?;
        Ok(host)
    }

    /// The operator's folder under `run`: the CA certificate and the operator certificate.
    pub fn operator_host(&self, run: &Path) -> anyhow::Result<PathBuf> {
        let host = run.join("operator");
        let files = ["ca.pem", "operator.pem", "operator.key"];
        self.provision(&host, &files.map(String::from))?;
        Ok(host)
    }

    /// Starts `mailfarm coordinator` in `ns` and waits for its listening line.
    pub fn start_coordinator(&self, ns: &str, host: &Path, log: &Path) -> anyhow::Result<Proc> {
        let config = host.join("coordinator.toml");
        let args = ["coordinator".to_owned(), "--config".into(), path(&config)];
        let mut process = Proc::spawn(
            "coordinator",
            &ns_exec(ns),
            &self.mailfarm,
            &args,
            Some(log),
        )?;
        process.wait_line("its listening address", START_TIMEOUT, |l| {
            l.starts_with("mailfarm coordinator listening on ")
        })?;
        Ok(process)
    }

    /// Starts `mailfarm smurf` `name` in `ns` from its host folder.
    pub fn start_smurf(
        &self,
        ns: &str,
        host: &Path,
        name: &str,
        log: &Path,
    ) -> anyhow::Result<Proc> {
        let config = host.join(format!("{name}.toml"));
        let args = ["smurf".to_owned(), "--config".into(), path(&config)];
        Proc::spawn(name, &ns_exec(ns), &self.mailfarm, &args, Some(log))
    }

    /// The operator CLI run from namespace `ns` with the certificates in `operator` (see
    /// [`FarmFiles::operator_host`]).
    pub fn operator(&self, ns: &str, operator: &Path) -> Operator {
        Operator {
            mailfarm: self.mailfarm.clone(),
            wrapper: ns_exec(ns),
            farm: operator.to_owned(),
            coordinator: self.coordinator,
        }
    }
}

/// Follows `farm watch --json` until campaign `id` is finished; fails when its counters stop
/// moving for a minute, `check` fails (a daemon exited), or the bench is interrupted.
pub fn follow(
    watch: &mut Proc,
    id: &str,
    mut check: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut progress = Progress::new();
    loop {
        let snapshot = match watch.last_line(|l| l.starts_with('{')) {
            Some(line) => Some(
                serde_json::from_str::<FarmSnapshot>(&line).context("reading farm watch --json")?,
            ),
            None => None,
        };
        let counters = snapshot
            .as_ref()
            .and_then(|s| s.campaigns.iter().find(|c| c.id == id));
        if counters.is_some_and(|c| c.finished) {
            return Ok(());
        }
        progress.check(id, counters)?;
        watch.check_running()?;
        check()?;
        check_interrupted()?;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes the campaign folder: the template folder's `campaign.toml` (with `id`, the relay and
/// `connections` set) and templates, and `recipients` synthetic recipients.
pub fn write_campaign(
    template: &Path,
    dir: &Path,
    id: &str,
    relay: SocketAddr,
    connections: u16,
    recipients: u64,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut toml = read(&template.join("campaign.toml"))?;
    for (key, value) in [
        ("id", format!("\"{id}\"")),
        ("relay", format!("\"{relay}\"")),
        ("connections", connections.to_string()),
    ] {
        if !has_key(&toml, key) {
            bail!(
                "{} has no `{key} = ` line",
                template.join("campaign.toml").display()
            );
        }
        toml = set_key(&toml, key, &value);
    }
    write(&dir.join("campaign.toml"), &toml)?;
    for name in ["body.txt.hbs", "body.html.hbs"] {
        let from = template.join(name);
        if from.exists() {
            std::fs::copy(&from, dir.join(name))
                .with_context(|| format!("copying {}", from.display()))?;
        }
    }
    let csv = crate::csvgen::recipients_csv(recipients);
    write(&dir.join("recipients.csv"), &csv)
}

/// Whether `text` has a `key = ...` line.
fn has_key(text: &str, key: &str) -> bool {
    text.lines().any(|l| is_key_line(l, key))
}

/// Whether `line` sets `key` (`key = ...`, `key=...`).
fn is_key_line(line: &str, key: &str) -> bool {
    line.strip_prefix(key)
        .is_some_and(|rest| rest.trim_start().starts_with('='))
}

/// `text` with the line setting `key` replaced by `key = value`, or that line appended (only
/// right for files whose keys are all top-level, like the configs `farm init` writes).
pub fn set_key(text: &str, key: &str, value: &str) -> String {
    let line = format!("{key} = {value}");
    if has_key(text, key) {
        let lines: Vec<String> = text
            .lines()
            .map(|l| {
                if is_key_line(l, key) {
                    line.clone()
                } else {
                    l.to_owned()
                }
            })
            .collect();
        lines.join("\n") + "\n"
    } else {
        format!("{}\n{line}\n", text.trim_end())
    }
}

/// A path as an argument.
fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Reads a text file.
fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes a text file.
fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_replaced_in_place_or_appended() {
        let text = "node = \"smurf-1\"\nwindow = 512\n# helo_name = \"x\"\n";
        let text = set_key(text, "window", "64");
        assert_eq!(
            text,
            "node = \"smurf-1\"\nwindow = 64\n# helo_name = \"x\"\n"
        );
        let text = set_key(&text, "helo_name", "\"s1.test\"");
        assert!(text.ends_with("# helo_name = \"x\"\nhelo_name = \"s1.test\"\n"));
        assert!(!has_key("windows = 1\n", "window"));
        assert!(has_key("window=1\n", "window"));
    }

    #[test]
    fn the_campaign_gets_its_id_relay_and_connections() {
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/newsletter");
        let dir = tempfile::tempdir().unwrap();
        let relay: SocketAddr = "10.77.0.100:25".parse().unwrap();
        write_campaign(&template, dir.path(), "netns-2", relay, 8, 10).unwrap();
        let toml = std::fs::read_to_string(dir.path().join("campaign.toml")).unwrap();
        assert!(toml.contains("id = \"netns-2\"\n"));
        assert!(toml.contains("relay = \"10.77.0.100:25\"\n"));
        assert!(toml.contains("connections = 8\n"));
        let (submission, _) = mailfarm_coordinator::load_campaign_dir(dir.path()).unwrap();
        assert_eq!(submission.id, "netns-2");
        assert_eq!(submission.delivery.connections, 8);
        let csv = std::fs::read_to_string(dir.path().join("recipients.csv")).unwrap();
        assert_eq!(csv.lines().count(), 11);
    }
}
