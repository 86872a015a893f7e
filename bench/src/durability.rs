//! `durability`: the throughput campaign twice against one smtp-sink, first with the
//! coordinator's state in a durable folder (every results batch committed with fsync), then
//! with the in-memory store, and the ratio between the two: the cost of durability.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::farm_run::StateStore;
use crate::report::{mib, text_of, thousands, write_heading, write_verdict, Side};
use crate::sys::{self, Machine};
use crate::throughput::{build_profile, measure_mailfarm, FarmArgs};
use crate::workload;

/// Options of `durability`.
#[derive(clap::Args, Debug)]
pub struct Durability {
    /// Farm and campaign.
    #[command(flatten)]
    pub farm: FarmArgs,
    /// Folder in which the temporary state folder is created (default: the system's).
    #[arg(long)]
    pub tmp: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What `durability` measured.
#[derive(Debug, Serialize)]
pub struct DurabilityReport {
    /// The machine.
    pub machine: Machine,
    /// `release` or `debug`.
    pub build_profile: &'static str,
    /// Messages per run.
    pub recipients: u64,
    /// Smurfs.
    pub smurfs: u32,
    /// SMTP connections per smurf.
    pub connections_per_smurf: u16,
    /// Credit window of each smurf.
    pub window: u32,
    /// Coordinator batch size.
    pub batch_size: usize,
    /// Campaign folder used.
    pub campaign_dir: String,
    /// Average rendered message size.
    pub avg_message_bytes: u64,
    /// The sink's command line.
    pub sink_command: String,
    /// File system of the durable state folder.
    pub state_fs: String,
    /// Durable state folder run.
    pub durable: Side,
    /// Size of the durable run's state folder at its end.
    pub durable_state_bytes: u64,
    /// In-memory store run.
    pub baseline: Side,
    /// Checks that failed.
    pub problems: Vec<String>,
}

/// Runs the campaign with a durable state folder, then with the in-memory store.
pub fn durability(o: &Durability) -> anyhow::Result<DurabilityReport> {
    let f = &o.farm;
    f.check()?;
    let profile = build_profile();
    let machine = Machine::detect();
    let work = workload::build(&f.campaign, f.recipients, f.connections)?;
    let sink = f.start_sink()?;
    let parent = o.tmp.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&parent)?;

    eprintln!(
        "durable state folder: {} recipients, {} smurfs x {} connections ...",
        f.recipients, f.smurfs, f.connections
    );
    let state = StateStore::Folder {
        dir: dir.path().to_owned(),
        durable: true,
    };
    let durable = measure_mailfarm(
        &f.shape(state),
        &sink,
        work.submission.clone(),
        work.csv.clone(),
        f.recipients,
    )?;
    let durable_state_bytes = sys::disk_bytes(dir.path());
    drop(dir);

    eprintln!("in-memory store: {} recipients ...", f.recipients);
    let baseline = measure_mailfarm(
        &f.shape(StateStore::Memory),
        &sink,
        work.submission,
        work.csv,
        f.recipients,
    )?;

    let mut problems = Vec::new();
    for (label, found) in [
        ("durable", &durable.problems),
        ("baseline", &baseline.problems),
    ] {
        problems.extend(found.iter().map(|p| format!("{label}: {p}")));
    }
    Ok(DurabilityReport {
        machine,
        build_profile: profile,
        recipients: f.recipients,
        smurfs: f.smurfs,
        connections_per_smurf: f.connections,
        window: durable.farm.window,
        batch_size: durable.farm.batch_size,
        campaign_dir: f.campaign_dir(),
        avg_message_bytes: durable.avg_message,
        sink_command: sink.command.clone(),
        state_fs: sys::fs_type(&parent),
        durable: durable.side,
        durable_state_bytes,
        baseline: baseline.side,
        problems,
    })
}

impl DurabilityReport {
    /// The report as text.
    pub fn text(&self) -> String {
        text_of(|out| self.write_text(out))
    }

    /// Writes the text report into `out`.
    fn write_text(&self, out: &mut String) -> std::fmt::Result {
        let (d, b) = (&self.durable, &self.baseline);
        write_heading(
            out,
            "mailfarm-bench durability: durable state folder vs in-memory store",
            &self.machine,
            self.build_profile,
        )?;
        writeln!(
            out,
            "conditions  {} messages per run, 1 recipient each; {} smurfs x {} SMTP connections",
            thousands(self.recipients as f64),
            self.smurfs,
            self.connections_per_smurf
        )?;
        writeln!(
            out,
            "            smurf window {}, batch {}; {} B avg rendered message; templates from {}",
            self.window,
            self.batch_size,
            thousands(self.avg_message_bytes as f64),
            self.campaign_dir
        )?;
        writeln!(
            out,
            "            durable: state folder on {} (redb, fsync per commit), run first; \
             baseline: in-memory store, run second",
            self.state_fs
        )?;
        writeln!(out, "sink        {}", self.sink_command)?;
        writeln!(out)?;
        writeln!(
            out,
            "{:<26}{:>16}{:>16}{:>10}",
            "", "durable", "in-memory", "ratio"
        )?;
        let ratio = |a: f64, b: f64| {
            if b > 0.0 {
                format!("{:.2}", a / b)
            } else {
                "-".into()
            }
        };
        let mut row = |name: &str, a: String, b: String, r: String| {
            let line = format!("{name:<26}{a:>16}{b:>16}{r:>10}");
            writeln!(out, "{}", line.trim_end())
        };
        row(
            "messages (sink count)",
            thousands(d.messages as f64),
            thousands(b.messages as f64),
            String::new(),
        )?;
        row(
            "seconds",
            format!("{:.3}", d.seconds),
            format!("{:.3}", b.seconds),
            ratio(d.seconds, b.seconds),
        )?;
        row(
            "msgs/s",
            thousands(d.msgs_per_sec),
            thousands(b.msgs_per_sec),
            ratio(d.msgs_per_sec, b.msgs_per_sec),
        )?;
        row(
            "CPU seconds (process)",
            format!("{:.2}", d.cpu_seconds),
            format!("{:.2}", b.cpu_seconds),
            ratio(d.cpu_seconds, b.cpu_seconds),
        )?;
        row(
            "peak RSS (VmHWM)",
            mib(d.peak_rss_bytes),
            mib(b.peak_rss_bytes),
            ratio(d.peak_rss_bytes as f64, b.peak_rss_bytes as f64),
        )?;
        row(
            "smtp-sink CPU seconds",
            format!("{:.2}", d.sink_cpu_seconds),
            format!("{:.2}", b.sink_cpu_seconds),
            String::new(),
        )?;
        row(
            "state on disk",
            mib(self.durable_state_bytes),
            "none".into(),
            String::new(),
        )?;
        writeln!(
            out,
            "cost of durability (durable msgs/s / in-memory msgs/s): {}",
            ratio(d.msgs_per_sec, b.msgs_per_sec)
        )?;
        writeln!(out)?;
        write_verdict(
            out,
            &self.problems,
            "both runs delivered every message; sink counts agree",
        )
    }
}
