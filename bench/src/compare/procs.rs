//! A farm of real processes for benchmarks: `mailfarm farm init`, then `mailfarm coordinator`
//! and N `mailfarm smurf` processes started from generated configs, the way operators run them;
//! campaigns launched and followed with the operator CLI (`--json`); and what each process
//! costs, read from `/proc` (CPU time, peak RSS), also for whole process trees such as a Postfix
//! instance whose workers come and go.
//!
//! It exists apart from `compare` because other benchmarks (the network-namespace mode) start
//! the same processes at other addresses: every process can be started behind a wrapper
//! command (e.g. `ip netns exec NS`), which must `exec` the program so the pid stays the same.
//!
//! Testkit's `ProcessFarm` does the same for tests, but panics on any failure; a benchmark
//! reports errors instead, and measures the processes.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mailfarm_protocol::{CampaignCounters, NodeInfo};
use serde::Serialize;

/// How long the coordinator and smurfs get to come up and join.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// A campaign whose counters stop moving this long is declared stuck.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The `mailfarm` binary next to the running benchmark (Cargo builds both into
/// `target/<profile>/`), unless `MAILFARM_BIN` names another.
pub fn default_mailfarm_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MAILFARM_BIN") {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("mailfarm")))
        .unwrap_or_else(|| PathBuf::from("mailfarm"))
}

/// One smurf of a [`FarmSpec`].
#[derive(Clone, Debug)]
pub struct SmurfSpec {
    /// Node name: `smurf-1` ... as `farm init` made their certificates.
    pub name: String,
    /// Program and arguments put before `mailfarm smurf ...` (empty: none), e.g.
    /// `["ip", "netns", "exec", "ns1"]`.
    pub wrapper: Vec<String>,
}

/// What to start.
#[derive(Clone, Debug)]
pub struct FarmSpec {
    /// The `mailfarm` binary.
    pub mailfarm: PathBuf,
    /// Farm folder: certificates, configs, the coordinator's state (created).
    pub dir: PathBuf,
    /// The coordinator's QUIC address (smurfs and the operator CLI connect there).
    pub listen: SocketAddr,
    /// Wrapper for the coordinator command (empty: none).
    pub coordinator_wrapper: Vec<String>,
    /// Extra lines for coordinator.toml.
    pub coordinator_extra: String,
    /// Most recipients per batch frame.
    pub batch_size: usize,
    /// The smurfs.
    pub smurfs: Vec<SmurfSpec>,
    /// Credit window of each smurf.
    pub window: u32,
    /// Extra lines for every smurf config (appended last, so `[[dkim]]` sections may follow).
    pub smurf_extra: String,
}

impl FarmSpec {
    /// `smurfs` smurfs named `smurf-1` ... on this machine, no wrappers, coordinator on
    /// `listen`, the embedded farm's window (512) and batch size (128).
    pub fn local(mailfarm: PathBuf, dir: PathBuf, listen: SocketAddr, smurfs: u32) -> Self {
        Self {
            mailfarm,
            dir,
            listen,
            coordinator_wrapper: Vec::new(),
            coordinator_extra: String::new(),
            batch_size: 128,
            smurfs: (1..=smurfs)
                .map(|i| SmurfSpec {
                    name: format!("smurf-{i}"),
                    wrapper: Vec::new(),
                })
                .collect(),
            window: 512,
            smurf_extra: String::new(),
        }
    }
}

/// A started process whose output is kept (for error messages).
pub struct Proc {
    /// Its name (`coordinator`, `smurf-1`).
    pub name: String,
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Proc {
    /// Starts `argv` (wrapper included) with `args` appended.
    fn spawn(
        name: &str,
        wrapper: &[String],
        program: &Path,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let mut command = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program);
                c
            }
            None => Command::new(program),
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            std::thread::spawn(move || keep_output(stream, &output));
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            output,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines it printed.
    pub fn tail(&self) -> String {
        let text = self.output.lock().map(|s| s.clone()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Fails when the process has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited with {status}:\n{}", self.name, self.tail());
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends what `stream` prints to `output`, keeping the last 64 KiB.
fn keep_output(mut stream: impl Read, output: &Mutex<String>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            return;
        }
        if let Ok(mut out) = output.lock() {
            out.push_str(&String::from_utf8_lossy(&buf[..n]));
            if out.len() > 128 * 1024 {
                let cut = out.len() - 64 * 1024;
                let cut = (cut..out.len())
                    .find(|&i| out.is_char_boundary(i))
                    .unwrap_or(0);
                out.drain(..cut);
            }
        }
    }
}

/// A running farm: the coordinator and its smurfs, killed when dropped.
pub struct ProcFarm {
    /// What was started.
    pub spec: FarmSpec,
    /// The coordinator.
    pub coordinator: Proc,
    /// The smurfs, in spec order.
    pub smurfs: Vec<Proc>,
}

/// CPU time and peak RSS of one process.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcCost {
    /// Process name (`coordinator`, `smurf-1`, `smtpd` ...).
    pub name: String,
    /// How many processes of that name this entry covers (Postfix starts several smtpd).
    pub processes: u32,
    /// CPU seconds (user + system) over the measured span; 0 in the per-name peaks of a
    /// [`TreeWatch`], whose tree is measured as a whole with [`tree_cpu`].
    pub cpu_seconds: f64,
    /// Peak resident set size (`VmHWM`), the largest of the processes covered.
    pub peak_rss_bytes: u64,
}

/// CPU time of each farm process at one moment, to subtract from a later one.
#[derive(Clone, Debug)]
pub struct CpuMark(Vec<Duration>);

impl ProcFarm {
    /// `farm init`, writes the configs, starts the coordinator and the smurfs, and waits until
    /// every smurf is connected (`farm nodes --json`).
    pub fn start(spec: FarmSpec) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&spec.dir)
            .with_context(|| format!("creating {}", spec.dir.display()))?;
        let dir = spec.dir.to_str().context("farm folder is not UTF-8")?;
        let init = run_ok(
            Command::new(&spec.mailfarm).args([
                "farm",
                "init",
                dir,
                "--smurfs",
                &spec.smurfs.len().to_string(),
                "--listen",
                &spec.listen.to_string(),
            ]),
            "mailfarm farm init",
        )?;
        drop(init);
        let coordinator_toml = spec.dir.join("coordinator.toml");
        std::fs::write(
            &coordinator_toml,
            format!(
                "listen = \"{}\"\nfarm_dir = \".\"\nbatch_size = {}\nstate_dir = \"state\"\n{}\n",
                spec.listen, spec.batch_size, spec.coordinator_extra
            ),
        )
        .context("writing coordinator.toml")?;
        let config = coordinator_toml.to_str().context("path is not UTF-8")?;
        let coordinator = Proc::spawn(
            "coordinator",
            &spec.coordinator_wrapper,
            &spec.mailfarm,
            &["coordinator", "--config", config],
        )?;
        let mut farm = Self {
            coordinator,
            smurfs: Vec::new(),
            spec,
        };
        for smurf in farm.spec.smurfs.clone() {
            let path = farm.spec.dir.join(format!("{}.toml", smurf.name));
            std::fs::write(
                &path,
                format!(
                    "node = \"{name}\"\nfarm_dir = \".\"\nwindow = {window}\n\
                     helo_name = \"{name}.bench.test\"\nstate_dir = \"state/{name}\"\n{extra}\n",
                    name = smurf.name,
                    window = farm.spec.window,
                    extra = farm.spec.smurf_extra
                ),
            )
            .with_context(|| format!("writing {}", path.display()))?;
            let config = path.to_str().context("path is not UTF-8")?;
            let coordinator = farm.spec.listen.to_string();
            farm.smurfs.push(Proc::spawn(
                &smurf.name,
                &smurf.wrapper,
                &farm.spec.mailfarm,
                &["smurf", "--config", config, "--coordinator", &coordinator],
            )?);
        }
        farm.wait_connected()?;
        Ok(farm)
    }

    /// Waits until `farm nodes --json` lists every smurf as connected.
    fn wait_connected(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.coordinator.check_alive()?;
            for smurf in &mut self.smurfs {
                smurf.check_alive()?;
            }
            if let Ok(out) = self.operator(&["farm", "nodes", "--json"]) {
                let nodes: Vec<NodeInfo> = serde_json::from_slice(&out.stdout).unwrap_or_default();
                let connected = nodes.iter().filter(|n| n.connected).count();
                if connected >= self.smurfs.len() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the smurfs did not all connect within {START_TIMEOUT:?}; coordinator:\n{}",
                    self.coordinator.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `mailfarm ARGS --farm DIR --coordinator ADDR` (an operator command).
    pub fn operator(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut command = Command::new(&self.spec.mailfarm);
        command
            .args(args)
            .arg("--farm")
            .arg(&self.spec.dir)
            .arg("--coordinator")
            .arg(self.spec.listen.to_string());
        run_ok(&mut command, &format!("mailfarm {}", args.join(" ")))
    }

    /// Launches the campaign folder `campaign` (`campaign launch --detach`).
    pub fn launch(&self, campaign: &Path) -> anyhow::Result<()> {
        let dir = campaign.to_str().context("campaign folder is not UTF-8")?;
        self.operator(&["campaign", "launch", dir, "--detach"])
            .map(drop)
    }

    /// The campaign's counters (`campaign status ID --json`).
    pub fn status(&self, id: &str) -> anyhow::Result<CampaignCounters> {
        let out = self.operator(&["campaign", "status", id, "--json"])?;
        let mut list: Vec<CampaignCounters> =
            serde_json::from_slice(&out.stdout).context("reading `campaign status --json`")?;
        list.pop()
            .with_context(|| format!("campaign {id} is unknown to the coordinator"))
    }

    /// Polls the campaign's counters every `poll` until it is finished; fails when the
    /// counters stop moving for a minute or a process dies.
    pub fn wait_finished(&mut self, id: &str, poll: Duration) -> anyhow::Result<CampaignCounters> {
        let mut progress = (u64::MAX, Instant::now());
        loop {
            self.coordinator.check_alive()?;
            for smurf in &mut self.smurfs {
                smurf.check_alive()?;
            }
            let counters = self.status(id)?;
            if counters.finished {
                return Ok(counters);
            }
            let done = counters.attempts + counters.delivered + counters.failed;
            if done != progress.0 {
                progress = (done, Instant::now());
            } else if progress.1.elapsed() > STALL_TIMEOUT {
                bail!(
                    "campaign {id} made no progress for {STALL_TIMEOUT:?} ({} of {} delivered)",
                    counters.delivered,
                    counters.total
                );
            }
            std::thread::sleep(poll);
        }
    }

    /// Every process: the coordinator first, then the smurfs.
    pub fn procs(&self) -> impl Iterator<Item = &Proc> {
        std::iter::once(&self.coordinator).chain(&self.smurfs)
    }

    /// Now's CPU time of every process, for [`ProcFarm::costs_since`].
    pub fn cpu_mark(&self) -> anyhow::Result<CpuMark> {
        self.procs()
            .map(|p| crate::sys::process_cpu(p.pid()))
            .collect::<anyhow::Result<_>>()
            .map(CpuMark)
    }

    /// CPU time since `mark` and peak RSS so far of every process, coordinator first.
    pub fn costs_since(&self, mark: &CpuMark) -> anyhow::Result<Vec<ProcCost>> {
        self.procs()
            .zip(&mark.0)
            .map(|(p, before)| {
                let cpu = crate::sys::process_cpu(p.pid())?.saturating_sub(*before);
                Ok(ProcCost {
                    name: p.name.clone(),
                    processes: 1,
                    cpu_seconds: cpu.as_secs_f64(),
                    peak_rss_bytes: peak_rss(p.pid()).unwrap_or(0),
                })
            })
            .collect()
    }

    /// The coordinator's accounting log (one JSON line per delivery attempt).
    pub fn accounting_log(&self) -> PathBuf {
        self.spec.dir.join("state/accounting.jsonl")
    }
}

/// Runs `command` to completion; fails with its output unless it exits 0.
fn run_ok(command: &mut Command, what: &str) -> anyhow::Result<Output> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Peak resident set size (`VmHWM`) of a running process; `None` once it has gone.
pub fn peak_rss(pid: u32) -> Option<u64> {
    crate::sys::peak_rss(pid).ok()
}

/// One process of a `/proc` scan.
#[derive(Clone, Debug)]
struct ProcEntry {
    ppid: u32,
    name: String,
    /// utime + stime + cutime + cstime: its own CPU and that of the children it reaped.
    ticks: u64,
}

/// Every process of the machine, from `/proc/*/stat`.
fn scan() -> HashMap<u32, ProcEntry> {
    let mut table = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return table;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end between the listing and the read: then it is not in the table.
        let Ok(stat) = crate::sys::proc_stat(pid) else {
            continue;
        };
        table.insert(
            pid,
            ProcEntry {
                ppid: stat.ppid,
                name: stat.name,
                ticks: stat.own_ticks + stat.reaped_ticks,
            },
        );
    }
    table
}

/// The processes of `table` that are `root` or descend from it.
fn descendants(table: &HashMap<u32, ProcEntry>, root: u32) -> Vec<u32> {
    table
        .keys()
        .copied()
        .filter(|&pid| {
            let mut p = pid;
            for _ in 0..64 {
                if p == root {
                    return true;
                }
                match table.get(&p) {
                    Some(e) if e.ppid != 0 && e.ppid != p => p = e.ppid,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

/// CPU time of a process and all its descendants, the reaped ones included.
pub fn tree_cpu(root: u32) -> Duration {
    let table = scan();
    let ticks = descendants(&table, root)
        .iter()
        .filter_map(|pid| table.get(pid))
        .map(|e| e.ticks)
        .sum();
    crate::sys::ticks_to_duration(ticks)
}

/// Peak RSS per process name over a process tree whose members come and go (Postfix's smtpd,
/// cleanup, smtp ...): call [`TreeWatch::sample`] now and then while it runs.
#[derive(Debug, Default)]
pub struct TreeWatch {
    /// Per name: the pids seen and the largest VmHWM.
    seen: HashMap<String, (std::collections::HashSet<u32>, u64)>,
}

impl TreeWatch {
    /// Records the peak RSS of every process now in the tree under `root`.
    pub fn sample(&mut self, root: u32) {
        let table = scan();
        for pid in descendants(&table, root) {
            let (Some(entry), Some(rss)) = (table.get(&pid), peak_rss(pid)) else {
                continue;
            };
            let slot = self.seen.entry(entry.name.clone()).or_default();
            slot.0.insert(pid);
            slot.1 = slot.1.max(rss);
        }
    }

    /// One entry per process name (CPU not filled in), largest peak first.
    pub fn peaks(&self) -> Vec<ProcCost> {
        let mut out: Vec<ProcCost> = self
            .seen
            .iter()
            .map(|(name, (pids, rss))| ProcCost {
                name: name.clone(),
                processes: pids.len() as u32,
                cpu_seconds: 0.0,
                peak_rss_bytes: *rss,
            })
            .collect();
        out.sort_by_key(|p| std::cmp::Reverse(p.peak_rss_bytes));
        out
    }
}

/// A free UDP port on 127.0.0.1 (the coordinator's QUIC port).
pub fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .context("finding a free UDP port")?
        .port())
}
