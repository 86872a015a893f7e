//! `mailfarm-bench`: measures mailfarm end to end against a real SMTP receiver and puts the
//! numbers next to Postfix's own SMTP blaster on the same receiver.

mod farm_run;
mod report;
mod sink;
mod source;
mod sys;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use crate::farm_run::FarmShape;
use crate::report::{Conditions, Coordination, Report, Side};

/// Benchmarks for mailfarm.
#[derive(Parser, Debug)]
#[command(name = "mailfarm-bench", version, about)]
struct Cli {
    /// What to measure.
    #[command(subcommand)]
    command: Command,
}

/// Benchmarks.
#[derive(Subcommand, Debug)]
enum Command {
    /// Throughput of mailfarm against Postfix smtp-sink, next to Postfix smtp-source.
    #[command(long_about = THROUGHPUT_HELP)]
    Throughput(Throughput),
}

/// Long help of `throughput`.
const THROUGHPUT_HELP: &str = "\
Throughput of mailfarm against Postfix smtp-sink, next to Postfix smtp-source.

1. Starts Postfix's smtp-sink on a free 127.0.0.1 port: it announces PIPELINING, accepts \
every message and stores nothing, and its own counter (-c) checks each side's delivery count.
2. Runs an embedded farm in this process (a coordinator and K smurfs over real QUIC with \
mutual TLS on loopback) sending a campaign of N recipients built from the campaign folder's \
templates (default: the ~40 KB example newsletter) and a synthetic recipient list. Every \
message is rendered per recipient and sent over K x C pooled SMTP sessions. Measured: wall time \
from the launch call until the last result, CPU time and peak RSS (VmHWM) of this process, \
QUIC bytes per recipient (recipient data + results + template shipments) against the rendered \
message size.
3. Runs the peer, Postfix's smtp-source, against the same sink: N messages, one recipient \
each, the same message size (the measured average), K x C parallel sessions reused for \
many messages (-d). It sends one fixed body: no rendering, no coordination, no pipelining. The \
difference is what per-recipient personalisation plus QUIC coordination cost.

Build with --release: a debug build's numbers are meaningless. Exits non-zero when a side \
did not deliver every message or the sink's count disagrees.";

/// Options of `throughput`.
#[derive(clap::Args, Debug)]
struct Throughput {
    /// Recipients (messages) per side.
    #[arg(long, default_value_t = 20_000)]
    recipients: u64,
    /// Smurfs in the embedded farm.
    #[arg(long, default_value_t = 2)]
    smurfs: u32,
    /// SMTP connections per smurf; smtp-source gets smurfs x connections sessions.
    #[arg(long, default_value_t = 8)]
    connections: u16,
    /// Credit window of each smurf (default: the embedded farm's).
    #[arg(long)]
    window: Option<u32>,
    /// Recipients per coordinator batch (default: the embedded farm's).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Campaign folder whose campaign.toml and templates are used (its recipients are not).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/newsletter"))]
    campaign: PathBuf,
    /// Postfix smtp-sink program.
    #[arg(long, default_value = "/usr/sbin/smtp-sink")]
    smtp_sink: PathBuf,
    /// Postfix smtp-source program.
    #[arg(long, default_value = "/usr/sbin/smtp-source")]
    smtp_source: PathBuf,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILFARM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let Command::Throughput(options) = cli.command;
    match throughput(&options) {
        Ok(report) => {
            print!("{}", report.text());
            if let Some(path) = &options.json {
                if let Err(e) = report.write_json(path) {
                    eprintln!("error: {e:#}");
                    return ExitCode::FAILURE;
                }
            }
            if report.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Seconds of a duration as a float.
fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Runs the throughput benchmark and builds its report.
fn throughput(o: &Throughput) -> anyhow::Result<Report> {
    for (name, path) in [("smtp-sink", &o.smtp_sink), ("smtp-source", &o.smtp_source)] {
        if !path.is_file() {
            bail!(
                "Postfix's {name} not found at {}: install Postfix (Debian/Ubuntu: apt-get install \
                 postfix) or pass --{name} PATH",
                path.display()
            );
        }
    }
    if o.recipients == 0 || o.smurfs == 0 || o.connections == 0 {
        bail!("--recipients, --smurfs and --connections must be at least 1");
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    if profile == "debug" {
        eprintln!(
            "WARNING: this is a DEBUG build; rerun with `cargo run --release` for real numbers"
        );
    }
    let machine = sys::Machine::detect();
    let sessions = o.smurfs as usize * usize::from(o.connections);
    let work = workload::build(&o.campaign, o.recipients, o.connections)?;
    let sink = sink::SmtpSink::start(&o.smtp_sink, (sessions * 2).max(256))?;
    let patience = Duration::from_secs(5);

    eprintln!(
        "mailfarm: {} recipients, {} smurfs x {} connections ...",
        o.recipients, o.smurfs, o.connections
    );
    let (sink_start, sink_cpu_start) = (sink.messages(), sink.cpu()?);
    let shape = FarmShape {
        smurfs: o.smurfs,
        window: o.window,
        batch_size: o.batch_size,
    };
    let csv_bytes = work.csv.len() as u64;
    let farm = farm_run::run(&shape, sink.addr().to_string(), work.submission, work.csv)?;
    let counters = &farm.counters;
    let farm_sink = sink.wait_messages(sink_start + counters.delivered, patience) - sink_start;
    let sink_cpu_farm = sink.cpu()?;
    let processed = (counters.delivered + counters.deferred + counters.failed).max(1);
    let avg_message = counters.rendered_bytes / processed;

    eprintln!(
        "smtp-source: {} messages of {avg_message} B over {sessions} sessions ...",
        o.recipients
    );
    let source_start = sink.messages();
    let source = source::run(
        &o.smtp_source,
        sink.addr(),
        o.recipients,
        avg_message,
        sessions,
    )
    .context("running smtp-source")?;
    let source_sink = sink.wait_messages(source_start + o.recipients, patience) - source_start;
    let sink_cpu_source = sink.cpu()?;

    let mut problems = Vec::new();
    if counters.delivered != o.recipients {
        problems.push(format!(
            "mailfarm delivered {} of {} ({} deferred, {} failed)",
            counters.delivered, o.recipients, counters.deferred, counters.failed
        ));
    }
    if farm_sink != counters.delivered {
        problems.push(format!(
            "smtp-sink counted {farm_sink} mailfarm messages, mailfarm reported {}",
            counters.delivered
        ));
    }
    if source_sink != o.recipients {
        problems.push(format!(
            "smtp-sink counted {source_sink} smtp-source messages of {}",
            o.recipients
        ));
    }
    Ok(Report {
        machine,
        build_profile: profile,
        conditions: Conditions {
            recipients: o.recipients,
            smurfs: o.smurfs,
            connections_per_smurf: o.connections,
            smtp_sessions: sessions,
            window: farm.window,
            batch_size: farm.batch_size,
            campaign_dir: std::fs::canonicalize(&o.campaign)
                .unwrap_or_else(|_| o.campaign.clone())
                .display()
                .to_string(),
            template_source_bytes: work.template_source_bytes,
            recipient_csv_bytes: csv_bytes,
            mailfarm_avg_message_bytes: avg_message,
            smtp_source_message_bytes: source.message_bytes,
            sink_command: sink.command.clone(),
            source_command: source.command.clone(),
        },
        mailfarm: Side::new(
            farm_sink,
            secs(farm.wall),
            secs(farm.cpu),
            farm.peak_rss_bytes,
            secs(sink_cpu_farm.saturating_sub(sink_cpu_start)),
        ),
        smtp_source: Side::new(
            source_sink,
            secs(source.wall),
            secs(source.cpu),
            source.peak_rss_bytes,
            secs(sink_cpu_source.saturating_sub(sink_cpu_farm)),
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
        problems,
    })
}
