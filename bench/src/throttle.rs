//! `throttle`: the farm learning a relay's rate (issue 11). An in-process fault sink accepts R
//! messages in any second and answers Amazon SES's `454 Throttling failure` beyond; an
//! embedded farm of two smurfs sends it N = 30 × R recipients. Reported per R: wall time
//! against the target 1.25 × N / R + 5 s, the share of DATA attempts refused (target ≤ 15 %),
//! exactly-once delivery by Message-ID; then a run against a sink limited to 4 connections
//! (target: ≤ 5 % of connection attempts refused after the first 10 s), and a run whose sink
//! limit is raised mid-campaign (target: the learnt rate within 20 % of the new limit in
//! ≤ 30 s). Every run is sampled four times a second for the rate-against-time plot.

use std::collections::HashSet;
use std::fmt::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mailfarm::embedded::EmbeddedFarm;
use mailfarm_protocol::throttle::from_milli;
use mailfarm_smurf::inbound::fault_sink::provider::ProviderRate;
use mailfarm_smurf::inbound::fault_sink::{FaultPlan, FaultSink, SinkStats};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::farm_run::{self, FarmShape, Routing, StateStore};
use crate::sys::Machine;
use crate::throughput::build_profile;
use crate::workload;

/// How often a run is sampled.
const SAMPLE: Duration = Duration::from_millis(250);
/// A run longer than this many times its target is abandoned.
const PATIENCE: f64 = 4.0;

/// Options of `throttle`.
#[derive(clap::Args, Debug)]
pub struct Throttle {
    /// Sink rates R to run (messages per second); each run sends 30 × R recipients.
    #[arg(long, value_delimiter = ',', default_values_t = [20, 50, 200])]
    pub rates: Vec<u32>,
    /// Smurfs in the embedded farm.
    #[arg(long, default_value_t = 2)]
    pub smurfs: u32,
    /// SMTP connections per smurf (the campaign's `connections`).
    #[arg(long, default_value_t = 3)]
    pub connections: u16,
    /// The connection-limit run: the sink's `--max-connections`.
    #[arg(long, default_value_t = 4)]
    pub max_connections: usize,
    /// The raise run: the sink's rate, raised to --raise-to after --raise-after seconds.
    #[arg(long, default_value_t = 50)]
    pub raise_from: u32,
    /// The raise run: the rate after the raise.
    #[arg(long, default_value_t = 100)]
    pub raise_to: u32,
    /// The raise run: seconds before the raise.
    #[arg(long, default_value_t = 15)]
    pub raise_after: u64,
    /// Campaign folder whose campaign.toml and templates are used (its recipients are not).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/newsletter"))]
    pub campaign: PathBuf,
    /// Write the rate-against-time plot (SVG) here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One sample of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Seconds since the launch.
    pub t: f64,
    /// The sink's limit then (messages per second; 0: none).
    pub limit: f64,
    /// Farm-wide learnt rate then (0: none learnt).
    pub learnt: f64,
    /// Messages the sink accepted so far.
    pub accepted: u64,
    /// DATA attempts the sink refused so far.
    pub refused: u64,
    /// Connections the sink saw so far, and refused so far.
    pub connections: (u64, u64),
}

/// One run.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// What it was.
    pub name: String,
    /// Recipients.
    pub recipients: u64,
    /// Launch until the last result, seconds.
    pub seconds: f64,
    /// The target for `seconds` (rate runs), if any.
    pub bound_seconds: Option<f64>,
    /// DATA attempts refused, of all DATA attempts.
    pub refused: u64,
    /// All DATA attempts.
    pub data_attempts: u64,
    /// Connection attempts refused after the first 10 s, of all after the first 10 s.
    pub connections_after_10s: (u64, u64),
    /// Seconds from the raise until the learnt rate was within 20 % of the new limit.
    pub climb_seconds: Option<f64>,
    /// Distinct Message-IDs the sink accepted (must equal `recipients`).
    pub distinct_ids: u64,
    /// Samples, for the plot.
    pub samples: Vec<Sample>,
}

/// The report.
#[derive(Debug, Serialize)]
pub struct ThrottleReport {
    /// Machine.
    pub machine: Machine,
    /// Build profile.
    pub build: String,
    /// Smurfs and connections per smurf.
    pub farm: (u32, u16),
    /// Runs.
    pub runs: Vec<Run>,
    /// Targets missed (empty: all met).
    pub problems: Vec<String>,
}

/// What the sink does in a run.
#[derive(Clone, Copy)]
struct SinkPlan {
    rate: Option<u32>,
    max_connections: Option<usize>,
    /// Raise the rate to this after this long.
    raise: Option<(Duration, u32)>,
}

/// Runs every scenario.
pub fn throttle(o: &Throttle) -> anyhow::Result<ThrottleReport> {
    let machine = Machine::detect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut runs = Vec::new();
    for &rate in &o.rates {
        let plan = SinkPlan {
            rate: Some(rate),
            max_connections: None,
            raise: None,
        };
        let name = format!("R = {rate}/s");
        runs.push(runtime.block_on(run(o, &name, u64::from(rate) * 30, plan))?);
    }
    let plan = SinkPlan {
        rate: Some(50),
        max_connections: Some(o.max_connections),
        raise: None,
    };
    let name = format!("R = 50/s, max {} connections", o.max_connections);
    runs.push(runtime.block_on(run(o, &name, 1500, plan))?);
    let plan = SinkPlan {
        rate: Some(o.raise_from),
        max_connections: None,
        raise: Some((Duration::from_secs(o.raise_after), o.raise_to)),
    };
    let name = format!(
        "R = {}/s raised to {}/s after {} s",
        o.raise_from, o.raise_to, o.raise_after
    );
    let recipients = u64::from(o.raise_from) * o.raise_after + u64::from(o.raise_to) * 40;
    runs.push(runtime.block_on(run(o, &name, recipients, plan))?);
    runtime.shutdown_timeout(Duration::from_secs(5));
    let problems = problems(&runs);
    let report = ThrottleReport {
        machine,
        build: build_profile().to_owned(),
        farm: (o.smurfs, o.connections),
        runs,
        problems,
    };
    if let Some(path) = &o.svg {
        std::fs::write(path, crate::throttle_svg::plot(&report.runs))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// The targets each run missed.
fn problems(runs: &[Run]) -> Vec<String> {
    let mut out = Vec::new();
    for r in runs {
        if r.distinct_ids != r.recipients {
            out.push(format!(
                "{}: {} distinct Message-IDs for {} recipients",
                r.name, r.distinct_ids, r.recipients
            ));
        }
        if let Some(bound) = r.bound_seconds {
            if r.seconds > bound {
                out.push(format!(
                    "{}: {:.1} s, target {bound:.1} s",
                    r.name, r.seconds
                ));
            }
        }
        if r.data_attempts > 0 && r.refused as f64 > 0.15 * r.data_attempts as f64 {
            out.push(format!(
                "{}: {} of {} DATA attempts refused (> 15 %)",
                r.name, r.refused, r.data_attempts
            ));
        }
        let (refused, all) = r.connections_after_10s;
        if all > 0 && refused as f64 > 0.05 * all as f64 {
            out.push(format!(
                "{}: {refused} of {all} connection attempts refused after 10 s (> 5 %)",
                r.name
            ));
        }
        if r.name.contains("raised") && r.climb_seconds.is_none_or(|s| s > 30.0) {
            out.push(format!(
                "{}: learnt rate not within 20 % of the new limit in 30 s ({:?})",
                r.name, r.climb_seconds
            ));
        }
    }
    out
}

/// One campaign against one sink.
async fn run(o: &Throttle, name: &str, recipients: u64, plan: SinkPlan) -> anyhow::Result<Run> {
    let sink_plan = FaultPlan {
        provider_rate: plan.rate.map(f64::from),
        max_connections: plan.max_connections,
        ..FaultPlan::default()
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().context("loopback address")?;
    let sink = FaultSink::bind(addr, sink_plan)
        .await
        .context("binding the sink")?;
    let addr = sink.local_addr();
    let stats = sink.stats();
    let limit = sink.provider_rate();
    let (stop, stopped) = oneshot::channel::<()>();
    let sink_task = tokio::spawn(sink.run(async {
        let _ = stopped.await;
    }));
    let shape = FarmShape {
        smurfs: o.smurfs,
        window: None,
        batch_size: None,
        state: StateStore::Memory,
    };
    let (farm, _, _) = farm_run::start(&shape, Routing::Relay(addr.to_string())).await?;
    let work = workload::build(&o.campaign, recipients, o.connections)?;
    let slowest = f64::from(
        plan.rate
            .unwrap_or(50)
            .min(plan.raise.map_or(u32::MAX, |r| r.1)),
    );
    let give_up = Duration::from_secs_f64((1.25 * recipients as f64 / slowest + 5.0) * PATIENCE);
    let outcome = drive(
        &farm,
        (o.smurfs, give_up),
        work,
        (&stats, limit.as_ref()),
        plan,
    )
    .await;
    farm.shutdown().await;
    let _ = stop.send(());
    let _ = sink_task.await;
    let (seconds, samples) = outcome?;
    let refused = limit.as_ref().map_or(0, |l| l.refused.load(Relaxed));
    let accepted = stats.accepted.load(Relaxed);
    let ids: HashSet<String> = stats
        .messages_snapshot()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let after_10s = |s: &Sample| s.t >= 10.0;
    let connections_after_10s = match (samples.iter().find(|s| after_10s(s)), samples.last()) {
        (Some(first), Some(last)) => (
            last.connections.1 - first.connections.1,
            last.connections.0 - first.connections.0,
        ),
        _ => (0, 0),
    };
    let climb_seconds = plan.raise.and_then(|(after, to)| {
        let at = after.as_secs_f64();
        samples
            .iter()
            .find(|s| s.t >= at && s.learnt >= 0.8 * f64::from(to))
            .map(|s| s.t - at)
    });
    Ok(Run {
        name: name.to_owned(),
        recipients,
        seconds,
        bound_seconds: plan
            .raise
            .is_none()
            .then(|| {
                plan.rate
                    .map(|r| 1.25 * recipients as f64 / f64::from(r) + 5.0)
            })
            .flatten(),
        refused,
        data_attempts: accepted + refused,
        connections_after_10s,
        climb_seconds,
        distinct_ids: ids.len() as u64,
        samples,
    })
}

/// Launches, samples until the campaign finished; the wall time and the samples.
async fn drive(
    farm: &EmbeddedFarm,
    (smurfs, give_up): (u32, Duration),
    work: workload::Workload,
    (stats, limit): (&Arc<SinkStats>, Option<&Arc<ProviderRate>>),
    plan: SinkPlan,
) -> anyhow::Result<(f64, Vec<Sample>)> {
    farm_run::wait_joined(farm, smurfs).await?;
    let handle = farm.handle();
    let id = work.submission.id.clone();
    let started = Instant::now();
    handle
        .launch(work.submission, std::io::Cursor::new(work.csv))
        .await
        .context("launching the campaign")?;
    let mut samples = Vec::new();
    let mut raised = false;
    loop {
        let t = started.elapsed().as_secs_f64();
        if let (Some((after, to)), Some(limit)) = (plan.raise, limit) {
            if !raised && started.elapsed() >= after {
                limit.set_rate(f64::from(to));
                raised = true;
            }
        }
        let learnt = handle
            .farm()
            .throttle()
            .sites()
            .iter()
            .filter_map(|s| s.learnt_milli)
            .map(from_milli)
            .sum();
        samples.push(Sample {
            t,
            limit: limit.map_or(0.0, |l| l.rate()),
            learnt,
            accepted: stats.accepted.load(Relaxed),
            refused: limit.map_or(0, |l| l.refused.load(Relaxed)),
            connections: (stats.connections.load(Relaxed), stats.refused.load(Relaxed)),
        });
        let counters = handle
            .farm()
            .counters(&id)
            .with_context(|| format!("campaign {id} vanished"))?;
        if counters.finished {
            return Ok((t, samples));
        }
        if started.elapsed() > give_up {
            bail!(
                "campaign still running after {t:.0} s ({} of {} delivered)",
                counters.delivered,
                counters.total
            );
        }
        tokio::time::sleep(SAMPLE).await;
    }
}

impl ThrottleReport {
    /// The report as text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = crate::report::write_machine(&mut out, &self.machine, &self.build);
        let _ = writeln!(
            out,
            "farm        {} smurfs, {} connections each, relay = in-process fault sink \
             (454 beyond R per second)\n",
            self.farm.0, self.farm.1
        );
        for r in &self.runs {
            let _ = writeln!(out, "{}: {} recipients", r.name, r.recipients);
            let bound = r
                .bound_seconds
                .map_or(String::new(), |b| format!(" (target ≤ {b:.1} s)"));
            let _ = writeln!(out, "  finished in {:.1} s{bound}", r.seconds);
            let share = 100.0 * r.refused as f64 / r.data_attempts.max(1) as f64;
            let _ = writeln!(
                out,
                "  DATA refused {} of {} ({share:.1} %, target ≤ 15 %)",
                r.refused, r.data_attempts
            );
            let (refused, all) = r.connections_after_10s;
            let _ = writeln!(out, "  connections after 10 s: {refused} of {all} refused");
            if let Some(c) = r.climb_seconds {
                let _ = writeln!(out, "  learnt rate within 20 % of the new limit {c:.1} s after the raise (target ≤ 30 s)");
            }
            if let Some(last) = r.samples.iter().rev().find(|s| s.learnt > 0.0) {
                let _ = writeln!(out, "  last learnt farm-wide rate {:.1}/s", last.learnt);
            }
            let _ = writeln!(
                out,
                "  distinct Message-IDs at the sink {} (of {})\n",
                r.distinct_ids, r.recipients
            );
        }
        if self.problems.is_empty() {
            out.push_str("all targets met\n");
        }
        for p in &self.problems {
            let _ = writeln!(out, "MISSED: {p}");
        }
        out
    }
}
