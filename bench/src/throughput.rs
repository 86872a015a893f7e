//! `throughput`: mailfarm against Postfix smtp-sink, next to Postfix smtp-source; and the
//! pieces the other benchmarks share with it (options, checks, the measured mailfarm side).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use mailfarm_protocol::CampaignSubmission;

use crate::farm_run::{FarmRun, FarmShape, Routing, StateStore};
use crate::report::{Conditions, Coordination, Report, Side};
use crate::sink::SmtpSink;
use crate::{farm_run, source, sys, workload};

/// How long the sink gets to count the last messages of a side.
const PATIENCE: Duration = Duration::from_secs(5);

/// The farm and campaign options `throughput` and `durability` share.
#[derive(clap::Args, Debug)]
pub struct FarmArgs {
    /// Recipients (messages) per side.
    #[arg(long, default_value_t = 20_000)]
    pub recipients: u64,
    /// Smurfs in the embedded farm.
    #[arg(long, default_value_t = 2)]
    pub smurfs: u32,
    /// SMTP connections per smurf; smtp-source gets smurfs x connections sessions.
    #[arg(long, default_value_t = 8)]
    pub connections: u16,
    /// Credit window of each smurf (default: the embedded farm's).
    #[arg(long)]
    pub window: Option<u32>,
    /// Recipients per coordinator batch (default: the embedded farm's).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Campaign folder whose campaign.toml and templates are used (its recipients are not).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/newsletter"))]
    pub campaign: PathBuf,
    /// Postfix smtp-sink program.
    #[arg(long, default_value = "/usr/sbin/smtp-sink")]
    pub smtp_sink: PathBuf,
}

impl FarmArgs {
    /// Checks the counts, and that smtp-sink exists.
    pub fn check(&self) -> anyhow::Result<()> {
        require_program("smtp-sink", &self.smtp_sink)?;
        if self.recipients == 0 || self.smurfs == 0 || self.connections == 0 {
            bail!("--recipients, --smurfs and --connections must be at least 1");
        }
        Ok(())
    }

    /// SMTP sessions of the whole farm.
    pub fn sessions(&self) -> usize {
        self.smurfs as usize * usize::from(self.connections)
    }

    /// The farm shape with its coordinator state in `state`.
    pub fn shape(&self, state: StateStore) -> FarmShape {
        FarmShape {
            smurfs: self.smurfs,
            window: self.window,
            batch_size: self.batch_size,
            state,
        }
    }

    /// Starts smtp-sink with room for every session of a side.
    pub fn start_sink(&self) -> anyhow::Result<SmtpSink> {
        SmtpSink::start(&self.smtp_sink, (self.sessions() * 2).max(256))
    }

    /// The campaign folder, absolute when it can be resolved.
    pub fn campaign_dir(&self) -> String {
        std::fs::canonicalize(&self.campaign)
            .unwrap_or_else(|_| self.campaign.clone())
            .display()
            .to_string()
    }
}

/// Options of `throughput`.
#[derive(clap::Args, Debug)]
pub struct Throughput {
    /// Farm and campaign.
    #[command(flatten)]
    pub farm: FarmArgs,
    /// Postfix smtp-source program.
    #[arg(long, default_value = "/usr/sbin/smtp-source")]
    pub smtp_source: PathBuf,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Fails with installation advice when a Postfix program is missing.
pub fn require_program(name: &str, path: &Path) -> anyhow::Result<()> {
    if !path.is_file() {
        bail!(
            "Postfix's {name} not found at {}: install Postfix (Debian/Ubuntu: apt-get install \
             postfix) or pass --{name} PATH",
            path.display()
        );
    }
    Ok(())
}

/// `release` or `debug`; warns on standard error for a debug build.
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        eprintln!(
            "WARNING: this is a DEBUG build; rerun with `cargo run --release` for real numbers"
        );
        "debug"
    } else {
        "release"
    }
}

/// Seconds of a duration as a float.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// mailfarm's side of a run against the sink.
pub struct Measured {
    /// What the farm measured.
    pub farm: FarmRun,
    /// The column: sink count, wall, CPU, peak RSS, sink CPU.
    pub side: Side,
    /// Average rendered message size.
    pub avg_message: u64,
    /// Deliveries missing, or sink count disagreeing.
    pub problems: Vec<String>,
}

/// Runs `submission` to the `recipients` of `csv` on an embedded farm of `shape` against
/// `sink` and checks the sink's own count.
pub fn measure_mailfarm(
    shape: &FarmShape,
    sink: &SmtpSink,
    submission: CampaignSubmission,
    csv: Vec<u8>,
    recipients: u64,
) -> anyhow::Result<Measured> {
    let (sink_start, sink_cpu_start) = (sink.messages(), sink.cpu()?);
    let farm = farm_run::run(
        shape,
        Routing::Relay(sink.addr().to_string()),
        submission,
        csv,
    )?;
    let c = &farm.counters;
    let counted = sink.wait_messages(sink_start + c.delivered, PATIENCE) - sink_start;
    let sink_cpu = sink.cpu()?.saturating_sub(sink_cpu_start);
    let processed = (c.delivered + c.deferred + c.failed).max(1);
    let mut problems = Vec::new();
    if c.delivered != recipients {
        problems.push(format!(
            "mailfarm delivered {} of {recipients} ({} deferred, {} failed)",
            c.delivered, c.deferred, c.failed
        ));
    }
    if counted != c.delivered {
        problems.push(format!(
            "smtp-sink counted {counted} mailfarm messages, mailfarm reported {}",
            c.delivered
        ));
    }
    Ok(Measured {
        avg_message: c.rendered_bytes / processed,
        side: Side::new(
            counted,
            secs(farm.wall),
            secs(farm.cpu),
            farm.peak_rss_bytes,
            secs(sink_cpu),
        ),
        farm,
        problems,
    })
}

/// Runs the throughput benchmark and builds its report.
pub fn throughput(o: &Throughput) -> anyhow::Result<Report> {
    let f = &o.farm;
    f.check()?;
    require_program("smtp-source", &o.smtp_source)?;
    let profile = build_profile();
    let machine = sys::Machine::detect();
    let sessions = f.sessions();
    let work = workload::build(&f.campaign, f.recipients, f.connections)?;
    let sink = f.start_sink()?;

    eprintln!(
        "mailfarm: {} recipients, {} smurfs x {} connections ...",
        f.recipients, f.smurfs, f.connections
    );
    let csv_bytes = work.csv.len() as u64;
    let shape = f.shape(StateStore::Memory);
    let mailfarm = measure_mailfarm(&shape, &sink, work.submission, work.csv, f.recipients)?;
    let (farm, counters, avg_message) = (
        &mailfarm.farm,
        &mailfarm.farm.counters,
        mailfarm.avg_message,
    );
    let processed = (counters.delivered + counters.deferred + counters.failed).max(1);

    eprintln!(
        "smtp-source: {} messages of {avg_message} B over {sessions} sessions ...",
        f.recipients
    );
    let (source_start, source_cpu_start) = (sink.messages(), sink.cpu()?);
    let load = source::Load::blast(f.recipients, avg_message, sessions);
    let source = source::run(&o.smtp_source, sink.addr(), &load).context("running smtp-source")?;
    let source_sink = sink.wait_messages(source_start + f.recipients, PATIENCE) - source_start;
    let sink_cpu_source = sink.cpu()?.saturating_sub(source_cpu_start);

    let mut problems = mailfarm.problems.clone();
    if source_sink != f.recipients {
        problems.push(format!(
            "smtp-sink counted {source_sink} smtp-source messages of {}",
            f.recipients
        ));
    }
    Ok(Report {
        machine,
        build_profile: profile,
        conditions: Conditions {
            recipients: f.recipients,
            smurfs: f.smurfs,
            connections_per_smurf: f.connections,
            smtp_sessions: sessions,
            window: farm.window,
            batch_size: farm.batch_size,
            campaign_dir: f.campaign_dir(),
            template_source_bytes: work.template_source_bytes,
            recipient_csv_bytes: csv_bytes,
            mailfarm_avg_message_bytes: avg_message,
            smtp_source_message_bytes: source.message_bytes,
            sink_command: sink.command.clone(),
            source_command: source.command.clone(),
        },
        smtp_source: Side::new(
            source_sink,
            secs(source.wall),
            secs(source.cpu),
            source.peak_rss_bytes,
            secs(sink_cpu_source),
        ),
        coordination: Coordination {
            delivered: counters.delivered,
            deferred: counters.deferred,
            failed: counters.failed,
            wire_bytes: counters.wire_bytes,
            template_bytes: counters.template_bytes,
            template_shipments: counters.template_shipments,
            quic_bytes_per_recipient: (counters.wire_bytes + counters.template_bytes) as f64
                / processed as f64,
            rendered_bytes_per_recipient: counters.rendered_bytes as f64 / processed as f64,
            ingest_seconds: secs(farm.ingest),
            rss_before_launch_bytes: farm.rss_before_bytes,
        },
        mailfarm: mailfarm.side,
        problems,
    })
}
