//! A farm of real processes for benchmarks: `mailfarm farm init`, then `mailfarm coordinator`
//! and N `mailfarm smurf` processes started from generated configs in one folder, the way
//! operators run them on one machine; campaigns launched and followed with the operator CLI
//! (`--json`); what each process costs; and the graceful stop (SIGTERM) checked. The processes are started and measured by the
//! benches' one runner, `crate::procs`; `netns` lays its farm out host by host instead
//! (`netns::farm`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use mailfarm_protocol::CampaignCounters;

use crate::farm_run::Progress;
use crate::operator::Operator;
use crate::procs::{run_ok, Proc, ProcCost};

/// What to start.
#[derive(Clone, Debug)]
pub struct FarmSpec {
    /// The `mailfarm` binary.
    pub mailfarm: PathBuf,
    /// Farm folder: certificates, configs, the coordinator's state (created).
    pub dir: PathBuf,
    /// The coordinator's QUIC address (smurfs and the operator CLI connect there).
    pub listen: SocketAddr,
    /// Extra lines for coordinator.toml.
    pub coordinator_extra: String,
    /// Most recipients per batch frame.
    pub batch_size: usize,
    /// How many smurfs: `smurf-1` ..., as `farm init` names their certificates.
    pub smurfs: u32,
    /// Credit window of each smurf.
    pub window: u32,
    /// Extra lines for every smurf config (appended last, so `[[dkim]]` sections may follow).
    pub smurf_extra: String,
}

impl FarmSpec {
    /// `smurfs` smurfs on this machine, coordinator on `listen`, the embedded farm's window
    /// (512) and batch size (128).
    pub fn local(mailfarm: PathBuf, dir: PathBuf, listen: SocketAddr, smurfs: u32) -> Self {
        Self {
            mailfarm,
            dir,
            listen,
            coordinator_extra: String::new(),
            batch_size: 128,
            smurfs,
            window: 512,
            smurf_extra: String::new(),
        }
    }
}

/// A running farm: the coordinator and its smurfs, killed when dropped ([`ProcFarm::stop`]
/// stops them gracefully and checks it).
pub struct ProcFarm {
    /// What was started.
    pub spec: FarmSpec,
    /// The coordinator.
    pub coordinator: Proc,
    /// The smurfs, `smurf-1` first.
    pub smurfs: Vec<Proc>,
    /// The operator CLI for this farm.
    pub operator: Operator,
}

/// CPU time of each farm process at one moment, to subtract from a later one.
#[derive(Clone, Debug)]
pub struct CpuMark(Vec<Duration>);

impl ProcFarm {
    /// `farm init`, writes the configs, starts the coordinator and the smurfs, and waits until
    /// every smurf joined (`farm nodes --json`).
    pub fn start(spec: FarmSpec) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&spec.dir)
            .with_context(|| format!("creating {}", spec.dir.display()))?;
        let dir = spec.dir.to_str().context("farm folder is not UTF-8")?;
        run_ok(Command::new(&spec.mailfarm).args([
            "farm",
            "init",
            dir,
            "--smurfs",
            &spec.smurfs.to_string(),
            "--listen",
            &spec.listen.to_string(),
        ]))?;
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
            &[],
            &spec.mailfarm,
            &["coordinator", "--config", config],
            None,
        )?;
        let operator = Operator {
            mailfarm: spec.mailfarm.clone(),
            wrapper: Vec::new(),
            farm: spec.dir.clone(),
            coordinator: spec.listen,
        };
        let mut farm = Self {
            coordinator,
            smurfs: Vec::new(),
            operator,
            spec,
        };
        for i in 1..=farm.spec.smurfs {
            let name = format!("smurf-{i}");
            let path = farm.spec.dir.join(format!("{name}.toml"));
            std::fs::write(
                &path,
                format!(
                    "node = \"{name}\"\nfarm_dir = \".\"\nwindow = {window}\n\
                     helo_name = \"{name}.bench.test\"\nstate_dir = \"state/{name}\"\n{extra}\n",
                    window = farm.spec.window,
                    extra = farm.spec.smurf_extra
                ),
            )
            .with_context(|| format!("writing {}", path.display()))?;
            let config = path.to_str().context("path is not UTF-8")?;
            let coordinator = farm.spec.listen.to_string();
            farm.smurfs.push(Proc::spawn(
                &name,
                &[],
                &farm.spec.mailfarm,
                &["smurf", "--config", config, "--coordinator", &coordinator],
                None,
            )?);
        }
        let operator = farm.operator.clone();
        let count = farm.smurfs.len();
        operator
            .wait_joined(count, || farm.check_running())
            .with_context(|| format!("coordinator {}", farm.coordinator.tail()))?;
        Ok(farm)
    }

    /// Fails when the coordinator or a smurf has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        self.coordinator.check_running()?;
        self.smurfs.iter_mut().try_for_each(Proc::check_running)
    }

    /// Polls the campaign's counters every `poll` until it is finished; fails when the
    /// counters stop moving for a minute or a process dies.
    pub fn wait_finished(&mut self, id: &str, poll: Duration) -> anyhow::Result<CampaignCounters> {
        let mut progress = Progress::new();
        loop {
            self.check_running()?;
            let counters = self.operator.status(id)?;
            if counters.finished {
                return Ok(counters);
            }
            progress.check(id, Some(&counters))?;
            std::thread::sleep(poll);
        }
    }

    /// Stops the daemons with SIGTERM, smurfs first ([`crate::procs::stop_farm`]); one
    /// problem per daemon that did not exit 0 on its own.
    pub fn stop(mut self) -> anyhow::Result<Vec<String>> {
        crate::procs::stop_farm(&mut self.coordinator, &mut self.smurfs)
    }

    /// Every process: the coordinator first, then the smurfs.
    pub fn procs(&self) -> impl Iterator<Item = &Proc> {
        std::iter::once(&self.coordinator).chain(&self.smurfs)
    }

    /// Now's CPU time of every process, for [`ProcFarm::costs_since`].
    pub fn cpu_mark(&self) -> anyhow::Result<CpuMark> {
        self.procs()
            .map(Proc::cpu)
            .collect::<anyhow::Result<_>>()
            .map(CpuMark)
    }

    /// CPU time since `mark` and peak RSS so far of every process, coordinator first.
    pub fn costs_since(&self, mark: &CpuMark) -> anyhow::Result<Vec<ProcCost>> {
        self.procs()
            .zip(&mark.0)
            .map(|(p, before)| {
                let cpu = p.cpu()?.saturating_sub(*before);
                Ok(ProcCost {
                    name: p.name.clone(),
                    processes: 1,
                    cpu_seconds: cpu.as_secs_f64(),
                    peak_rss_bytes: p.peak_rss().unwrap_or(0),
                })
            })
            .collect()
    }

    /// The coordinator's accounting log (one JSON line per delivery attempt).
    pub fn accounting_log(&self) -> PathBuf {
        self.spec.dir.join("state/accounting.jsonl")
    }
}

/// A free UDP port on 127.0.0.1 (the coordinator's QUIC port).
pub fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .context("finding a free UDP port")?
        .port())
}
