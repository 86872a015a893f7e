//! The operator CLI as the benches drive it: `mailfarm ARGS --farm DIR --coordinator ADDR`,
//! run on this machine (`compare`) or on the coordinator's host in a namespace (`netns`,
//! behind `ip netns exec`), reading `--json` output. One owner for finding the `mailfarm`
//! binary, waiting until the smurfs joined, launching a campaign, reading its counters and
//! starting `farm watch`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mailfarm_protocol::{CampaignCounters, NodeInfo, NodeState};

use crate::procs::{check_interrupted, command, run_ok, Proc};

/// How long the smurfs get to join the coordinator.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The `mailfarm` binary: `given` (a `--mailfarm` option), else `MAILFARM_BIN`, else the one
/// next to the running benchmark (Cargo builds both into `target/<profile>/`).
pub fn mailfarm_binary(given: Option<&Path>) -> PathBuf {
    if let Some(path) = given {
        return path.to_owned();
    }
    if let Some(path) = std::env::var_os("MAILFARM_BIN") {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("mailfarm")))
        .unwrap_or_else(|| PathBuf::from("mailfarm"))
}

/// Fails, saying how to build it, when `mailfarm` is not a file.
pub fn require_mailfarm(mailfarm: &Path) -> anyhow::Result<()> {
    if !mailfarm.is_file() {
        bail!(
            "{} not found: build it (cargo build --release -p mailfarm) or pass --mailfarm",
            mailfarm.display()
        );
    }
    Ok(())
}

/// Where and how operator commands run.
#[derive(Clone, Debug)]
pub struct Operator {
    /// The `mailfarm` binary.
    pub mailfarm: PathBuf,
    /// Put before the binary (empty: none), e.g. `ip netns exec NS`.
    pub wrapper: Vec<String>,
    /// Folder with the CA and operator certificates (`--farm`).
    pub farm: PathBuf,
    /// The coordinator's QUIC address (`--coordinator`).
    pub coordinator: SocketAddr,
}

impl Operator {
    /// Runs `mailfarm ARGS --farm DIR --coordinator ADDR` to its end; fails with its output
    /// unless it succeeds, or at once when the bench was interrupted.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        check_interrupted()?;
        let mut command = command(&self.wrapper, &self.mailfarm);
        command
            .args(args)
            .arg("--farm")
            .arg(&self.farm)
            .arg("--coordinator")
            .arg(self.coordinator.to_string());
        run_ok(&mut command)
    }

    /// Polls `farm nodes --json` until `count` smurfs are connected and active; `check` fails
    /// when a daemon exited. Until then a failing command (the coordinator not listening yet)
    /// is retried.
    pub fn wait_joined(
        &self,
        count: usize,
        mut check: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + JOIN_TIMEOUT;
        loop {
            check()?;
            let nodes = self.run(&["farm", "nodes", "--json"]).and_then(|out| {
                serde_json::from_slice::<Vec<NodeInfo>>(&out.stdout)
                    .context("reading farm nodes --json")
            });
            let active = match &nodes {
                Ok(nodes) => nodes
                    .iter()
                    .filter(|n| n.connected && n.state == NodeState::Active)
                    .count(),
                Err(_) => 0,
            };
            if active >= count {
                return Ok(());
            }
            if Instant::now() > deadline {
                let last = nodes.err().map(|e| format!(" (last: {e:#})"));
                bail!(
                    "only {active} of {count} smurfs joined within {JOIN_TIMEOUT:?}{}",
                    last.unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Launches the campaign folder `campaign` (`campaign launch DIR --detach`).
    pub fn launch(&self, campaign: &Path) -> anyhow::Result<()> {
        let dir = campaign.to_str().context("campaign folder is not UTF-8")?;
        self.run(&["campaign", "launch", dir, "--detach"]).map(drop)
    }

    /// The campaign's counters (`campaign status ID --json`).
    pub fn status(&self, id: &str) -> anyhow::Result<CampaignCounters> {
        let out = self.run(&["campaign", "status", id, "--json"])?;
        let mut list: Vec<CampaignCounters> =
            serde_json::from_slice(&out.stdout).context("reading campaign status --json")?;
        list.pop()
            .with_context(|| format!("campaign {id} is unknown to the coordinator"))
    }

    /// Starts `farm watch --json` (one snapshot a second over one operator link), its
    /// standard error appended to `log`.
    pub fn watch(&self, log: &Path) -> anyhow::Result<Proc> {
        let farm = self.farm.to_str().context("farm folder is not UTF-8")?;
        let coordinator = self.coordinator.to_string();
        let args = [
            "farm",
            "watch",
            "--json",
            "--farm",
            farm,
            "--coordinator",
            &coordinator,
        ];
        Proc::spawn(
            "farm watch",
            &self.wrapper,
            &self.mailfarm,
            &args,
            Some(log),
        )
    }
}
