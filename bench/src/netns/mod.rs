//! `netns`: the farm across several "machines" on one host. Each machine is a network
//! namespace with its own address (coordinator, every smurf, the sink), the processes are the
//! real `mailfarm coordinator` and `mailfarm smurf` daemons with certificates from `farm init`,
//! and the campaign is launched with the operator CLI, as on a real deployment. The same
//! campaign runs with 1, 2, 3 and 4 smurfs; the report says how throughput and the
//! coordinator's CPU grow and estimates how many smurfs one coordinator can feed.
//!
//! Modules: `topology` (namespaces, bridge, teardown, running a program in a namespace),
//! `farm` (farm files, configs, operator commands), `report` (JSON and the table). The
//! processes are started, stopped and measured by the benches' one runner, `crate::procs`.

mod farm;
mod report;
mod topology;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};

use self::farm::{FarmFiles, Tuning, SMTP_PORT};
use self::report::{NetnsReport, RunReport};
use self::topology::{ns_exec, Topology};
use crate::procs::{self, check_interrupted, Proc};
use crate::sink::SmtpSink;
use crate::sys::{self, Machine};
use crate::throughput::{build_profile, require_program};

/// Long help of `netns`.
pub const HELP: &str = "\
The farm across network namespaces: coordinator, smurfs and sink on their own \"hosts\".

Needs root and iproute2. Creates one network namespace per host (names mfnb<PID>-*): the \
coordinator at 10.77.0.2, smurf N at 10.77.0.(10+N), Postfix's smtp-sink at 10.77.0.100, each \
with a veth pair to a bridge inside a namespace of its own. Nothing is added to the host's \
namespace and nothing can leave the machine. Then, as an operator would: `mailfarm farm init` \
(CA, node certificates), one folder per host with only that host's files and config, \
`mailfarm coordinator` and `mailfarm smurf` started with `ip netns exec`, and the campaign \
(the example newsletter, --recipients synthetic recipients, relayed to the sink's address) \
launched with `mailfarm campaign launch --detach` and followed with `mailfarm farm watch \
--json` from the coordinator's host. The coordinator's state is durable (redb, fsync) in a \
folder under --dir.

Each count of --smurfs gets a fresh coordinator. Reported per run: msgs/s, the coordinator's \
CPU (total, per recipient, per million), the smurfs' CPU per message, peak RSS per process, \
QUIC bytes per recipient (frames as counted, and bytes on the coordinator's link), the load \
average. Then the estimate: one core-second divided by the coordinator's CPU per recipient, \
against a smurf's messages per core-second. All namespaces share this machine's CPUs, so \
throughput cannot grow with smurfs here; the CPU figures carry over to real machines.

Everything is torn down at the end, on error and on Ctrl-C; namespaces left by a killed run \
are removed at the next start. Exits non-zero when a run did not deliver every message, the \
sink's count disagrees, or a daemon did not stop cleanly on SIGTERM.";

/// Address octet of the coordinator (10.77.0.2).
const COORDINATOR_OCTET: u8 = 2;
/// Address octet of smurf 1 (smurf N is 10 + N).
const SMURF_OCTET: u8 = 10;
/// Address octet of the sink (10.77.0.100).
const SINK_OCTET: u8 = 100;
/// Most smurfs a run may have.
const MAX_SMURFS: u32 = 16;
/// How long the sink gets to count the last messages.
const PATIENCE: Duration = Duration::from_secs(5);

/// Options of `netns`.
#[derive(clap::Args, Debug)]
pub struct Netns {
    /// Smurf counts to run, one run each (each smurf in its own namespace).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4")]
    pub smurfs: Vec<u32>,
    /// Recipients (messages) per run.
    #[arg(long, default_value_t = 20_000)]
    pub recipients: u64,
    /// SMTP connections per smurf (the campaign's `[delivery] connections`).
    #[arg(long, default_value_t = 8)]
    pub connections: u16,
    /// Smurf credit window (default: what `farm init` writes, 512).
    #[arg(long)]
    pub window: Option<u32>,
    /// Coordinator batch size (default: what `farm init` writes, 128).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Campaign folder whose campaign.toml and templates are used (its recipients are not).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/newsletter"))]
    pub campaign: PathBuf,
    /// The `mailfarm` binary (default: MAILFARM_BIN, else next to this program, e.g.
    /// target/release/mailfarm).
    #[arg(long)]
    pub mailfarm: Option<PathBuf>,
    /// Postfix smtp-sink program.
    #[arg(long, default_value = "/usr/sbin/smtp-sink")]
    pub smtp_sink: PathBuf,
    /// Folder for the farm's files and the coordinator's durable state (on disk, not tmpfs).
    #[arg(long, default_value = "/var/tmp")]
    pub dir: PathBuf,
    /// Keep the farm folder (configs, certificates, state, logs) after the run.
    #[arg(long)]
    pub keep: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl Netns {
    /// Checks the options, that this runs as root with `ip`, and finds the programs.
    fn check(&self) -> anyhow::Result<PathBuf> {
        require_program("smtp-sink", &self.smtp_sink)?;
        if !sys::is_root() {
            bail!("netns creates network namespaces: run it as root");
        }
        if self.smurfs.is_empty() || self.smurfs.iter().any(|&k| k == 0 || k > MAX_SMURFS) {
            bail!("--smurfs takes counts from 1 to {MAX_SMURFS}, e.g. 1,2,3,4");
        }
        if self.recipients == 0 || self.connections == 0 {
            bail!("--recipients and --connections must be at least 1");
        }
        let mailfarm = crate::operator::mailfarm_binary(self.mailfarm.as_deref());
        crate::operator::require_mailfarm(&mailfarm)?;
        std::fs::canonicalize(&mailfarm).context("resolving the mailfarm path")
    }
}

/// Runs the bench: sets up the namespaces, runs every smurf count, tears everything down.
pub fn netns(o: &Netns) -> anyhow::Result<NetnsReport> {
    let mailfarm = o.check()?;
    let profile = build_profile();
    let machine = Machine::detect();
    procs::catch_interrupts("netns")?;
    let leftovers = topology::remove_leftovers()?;
    if !leftovers.is_empty() {
        eprintln!("netns: removed leftover namespaces {}", leftovers.join(" "));
    }
    let max = o.smurfs.iter().copied().max().unwrap_or(1);
    let mut roles: Vec<(String, u8)> = vec![
        ("coord".into(), COORDINATOR_OCTET),
        ("sink".into(), SINK_OCTET),
    ];
    roles.extend((1..=max).map(|i| (format!("s{i}"), SMURF_OCTET + i as u8)));
    let roles: Vec<(&str, u8)> = roles.iter().map(|(r, o)| (r.as_str(), *o)).collect();

    let work = tempfile::Builder::new()
        .prefix("mailfarm-netns.")
        .tempdir_in(&o.dir)
        .with_context(|| format!("creating a folder in {}", o.dir.display()))?;
    let root = work.path().to_owned();
    std::fs::create_dir_all(root.join("logs")).context("creating the log folder")?;
    eprintln!("netns: farm folder {}", root.display());
    if o.keep {
        // Kept whatever happens: configs, certificates, state and logs stay for inspection.
        let _ = work.keep();
    }
    let topology = Topology::create(&roles)?;
    let outcome = run_all(o, &mailfarm, &topology, &root);
    drop(topology);
    let (runs, avg_message, problems) = outcome?;
    Ok(NetnsReport::new(
        machine,
        profile,
        o,
        &root,
        runs,
        avg_message,
        problems,
    ))
}

/// Runs of every smurf count, the average message size, and the problems found.
type Runs = (Vec<RunReport>, u64, Vec<String>);

/// Starts the sink, makes the farm's certificates and runs each smurf count.
fn run_all(o: &Netns, mailfarm: &Path, topology: &Topology, root: &Path) -> anyhow::Result<Runs> {
    let coordinator = topology.host("coord")?;
    let sink_host = topology.host("sink")?;
    let sink_addr = SocketAddr::from((sink_host.addr, SMTP_PORT));
    let sessions =
        (o.smurfs.iter().max().copied().unwrap_or(1) as usize * usize::from(o.connections) * 2)
            .max(256);
    let mut sink = SmtpSink::spawn(
        &ns_exec(&sink_host.ns),
        &o.smtp_sink,
        sink_addr,
        sessions,
        Some(&root.join("logs/sink.log")),
    )?;
    let max = o.smurfs.iter().copied().max().unwrap_or(1);
    let files = FarmFiles::init(mailfarm, root, max, coordinator.addr)?;
    let tuning = Tuning {
        window: o.window,
        batch_size: o.batch_size,
    };
    let mut runs = Vec::new();
    let mut problems = Vec::new();
    let mut avg_message = 0;
    for &k in &o.smurfs {
        check_interrupted()?;
        eprintln!(
            "netns: {} recipients, {k} smurf(s) x {} connections ...",
            o.recipients, o.connections
        );
        let id = format!("netns-{k}");
        let campaign = root.join(format!("campaign-{k}"));
        farm::write_campaign(
            &o.campaign,
            &campaign,
            &id,
            sink_addr,
            o.connections,
            o.recipients,
        )?;
        let run = run_one(
            o, &files, topology, root, &mut sink, k, &id, &campaign, tuning,
        )?;
        avg_message = run.avg_message_bytes;
        problems.extend(run.problems.iter().map(|p| format!("{k} smurf(s): {p}")));
        eprintln!(
            "netns: {k} smurf(s): {:.0} msgs/s, coordinator {:.1} us CPU per recipient",
            run.msgs_per_s, run.coordinator_cpu_us_per_recipient
        );
        runs.push(run);
    }
    sink.check_running()?;
    Ok((runs, avg_message, problems))
}

/// One run: a fresh coordinator (new state) and `k` smurfs, the campaign, then a graceful stop.
#[allow(clippy::too_many_arguments)]
fn run_one(
    o: &Netns,
    files: &FarmFiles,
    topology: &Topology,
    root: &Path,
    sink: &mut SmtpSink,
    k: u32,
    id: &str,
    campaign: &Path,
    tuning: Tuning,
) -> anyhow::Result<RunReport> {
    let run = root.join(format!("run-{k}"));
    let log = |name: &str| root.join(format!("logs/run-{k}-{name}.log"));
    let coord_ns = topology.host("coord")?.ns.clone();
    let coordinator_host = files.coordinator_host(&run, tuning)?;
    let operator = files.operator(&coord_ns, &files.operator_host(&run)?);
    let mut coordinator =
        files.start_coordinator(&coord_ns, &coordinator_host, &log("coordinator"))?;
    let mut smurfs = Vec::new();
    for i in 1..=k {
        let name = format!("smurf-{i}");
        let host = files.smurf_host(&run, &name, tuning)?;
        let ns = &topology.host(&format!("s{i}"))?.ns;
        smurfs.push(files.start_smurf(ns, &host, &name, &log(&name))?);
    }
    operator.wait_joined(k as usize, || {
        coordinator.check_running()?;
        smurfs.iter_mut().try_for_each(Proc::check_running)
    })?;

    let load_average = Machine::detect().load_average;
    let sink_start = sink.messages();
    let link_start = topology.link_bytes("coord")?;
    let cpu_start = Cpu::read(&coordinator, &smurfs, sink)?;
    let mut watch = operator.watch(&log("watch"))?;
    operator.launch(campaign)?;
    farm::follow(&mut watch, id, || {
        coordinator.check_running()?;
        smurfs.iter_mut().try_for_each(Proc::check_running)
    })?;
    let cpu_end = Cpu::read(&coordinator, &smurfs, sink)?;
    let link_bytes = topology.link_bytes("coord")?.saturating_sub(link_start);
    let counters = operator.status(id)?;
    let _ = watch.stop(Duration::from_secs(5));

    let sink_counted = sink
        .wait_messages(sink_start + counters.delivered, PATIENCE)
        .saturating_sub(sink_start);

    let peak_coordinator = coordinator.peak_rss()?;
    let peak_smurfs = smurfs
        .iter()
        .map(Proc::peak_rss)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let problems = procs::stop_farm(&mut coordinator, &mut smurfs)?;
    Ok(RunReport::new(
        k,
        load_average,
        &counters,
        sink_counted,
        &cpu_start,
        &cpu_end,
        peak_coordinator,
        peak_smurfs,
        link_bytes,
        o.recipients,
        problems,
    ))
}

/// CPU time of every process at one instant.
pub struct Cpu {
    /// The coordinator.
    pub coordinator: Duration,
    /// Each smurf.
    pub smurfs: Vec<Duration>,
    /// The sink.
    pub sink: Duration,
}

impl Cpu {
    /// Reads the CPU time of each process.
    fn read(coordinator: &Proc, smurfs: &[Proc], sink: &SmtpSink) -> anyhow::Result<Self> {
        Ok(Self {
            coordinator: coordinator.cpu()?,
            smurfs: smurfs
                .iter()
                .map(Proc::cpu)
                .collect::<anyhow::Result<_>>()?,
            sink: sink.cpu()?,
        })
    }
}
