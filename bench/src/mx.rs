//! `mx`: a campaign delivered by MX routing (real DNS from unbound, recipient domains spread
//! over several loopback MX hosts with in-process sinks) under the coordinator's farm-wide
//! shaping, one domain rate-limited; then the same well-behaved load in relay mode to one sink,
//! for the cost of MX routing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use mailfarm_protocol::CampaignSubmission;

use crate::farm_run::{self, FarmRun, FarmShape, Routing, StateStore};
use crate::mx_check;
use crate::mx_report::{HostCount, ModeRun, MxConditions, MxReport, Overall, Throttle};
use crate::mx_sinks::{self, RunningSink};
use crate::mx_zone::{Layout, HOSTS, THROTTLED, THROTTLED_HOST};
use crate::sys::{self, Machine};
use crate::throughput::{build_profile, secs};
use crate::{csvgen, workload};
use mailfarm_testkit::dns::TestDns;

/// Options of `mx`.
#[derive(clap::Args, Debug)]
pub struct Mx {
    /// Recipients spread evenly over the well-behaved domains.
    #[arg(long, default_value_t = 20_000)]
    pub recipients: u64,
    /// Well-behaved recipient domains (d0.test, d1.test, ...).
    #[arg(long, default_value_t = 20)]
    pub domains: u32,
    /// Smurfs in the embedded farm.
    #[arg(long, default_value_t = 2)]
    pub smurfs: u32,
    /// Recipients at throttled.test, on top of --recipients, mixed evenly among them.
    #[arg(long, default_value_t = 1_000)]
    pub throttled: u64,
    /// Farm-wide message rate of throttled.test, per second (its `[domain]` section).
    #[arg(long, default_value_t = 50)]
    pub throttle_rate: u32,
    /// Farm-wide message rate of every other site, per second (`[default] message_rate`).
    #[arg(long, default_value_t = 5_000)]
    pub site_rate: u32,
    /// Farm-wide sessions per site (`[default] max_connections`).
    #[arg(long, default_value_t = 8)]
    pub site_connections: u32,
    /// SMTP connections per smurf in relay mode (the campaign's `connections`).
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
    /// The unbound program.
    #[arg(long, default_value = "/usr/sbin/unbound")]
    pub unbound: PathBuf,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl Mx {
    /// The shaping file given to the coordinator.
    fn shaping(&self) -> String {
        format!(
            "[default]\nmessage_rate = \"{}/s\"\nmax_connections = {}\nramp_up = \"0s\"\n\n\
             [domain.\"{THROTTLED}\"]\nmessage_rate = \"{}/s\"\n",
            self.site_rate, self.site_connections, self.throttle_rate
        )
    }

    /// The farm shape (state in memory).
    fn shape(&self) -> FarmShape {
        FarmShape {
            smurfs: self.smurfs,
            window: self.window,
            batch_size: self.batch_size,
            state: StateStore::Memory,
        }
    }
}

/// One farm run with the moments its sink groups reached their targets.
struct Timed {
    farm: FarmRun,
    /// The well-behaved part: (seconds from launch, CPU seconds from launch).
    main: Option<(f64, f64)>,
    /// Everything the run's sinks expect.
    all: Option<(f64, f64)>,
}

/// Launches `submission` with `csv` on a fresh farm; watches `main` until it has accepted
/// `main_target` messages and `main` plus `extra` until they have accepted `all_target`.
async fn timed_run(
    shape: &FarmShape,
    routing: Routing,
    submission: CampaignSubmission,
    csv: Vec<u8>,
    (main, main_target): (&[&RunningSink], u64),
    (extra, all_target): (&[&RunningSink], u64),
) -> anyhow::Result<Timed> {
    let stats = |s: &[&RunningSink]| s.iter().map(|s| s.stats.clone()).collect::<Vec<_>>();
    let main_watch = mx_sinks::watch(stats(main), main_target);
    let mut all = stats(main);
    all.extend(stats(extra));
    let all_watch = mx_sinks::watch(all, all_target);
    sys::reset_peak_rss();
    let farm = farm_run::run_async(shape, routing, submission, csv).await?;
    let since = |r: mx_sinks::Reached| {
        r.map(|(at, cpu)| {
            (
                secs(at.saturating_duration_since(farm.launched)),
                secs(cpu.saturating_sub(farm.launch_cpu)),
            )
        })
    };
    let main = since(mx_sinks::reached(main_watch).await);
    let all = since(mx_sinks::reached(all_watch).await);
    Ok(Timed { farm, main, all })
}

/// What the two runs left: the timed runs, the per-host counts (throttled.test's last), the
/// throttled sink's and the relay sink's figures, and the problems found.
struct Both {
    mx: Timed,
    relay: Timed,
    hosts: Vec<HostCount>,
    throttled: SinkResult,
    relay_sink: SinkResult,
    problems: Vec<String>,
}

/// A sink's figures that outlive it.
struct SinkResult {
    addr: SocketAddr,
    accepted: u64,
    peak_sessions: u64,
    per_second: Vec<(u64, u64)>,
}

impl SinkResult {
    /// The figures of `sink` now.
    fn of(sink: &RunningSink) -> Self {
        Self {
            addr: sink.addr,
            accepted: sink.accepted(),
            peak_sessions: sink.peak_sessions(),
            per_second: sink.stats.per_second_snapshot().into_iter().collect(),
        }
    }
}

/// Runs the MX benchmark and builds its report.
pub fn mx(o: &Mx) -> anyhow::Result<MxReport> {
    if o.recipients == 0 || o.domains == 0 || o.smurfs == 0 || o.connections == 0 {
        bail!("--recipients, --domains, --smurfs and --connections must be at least 1");
    }
    if o.throttle_rate == 0 || o.site_rate == 0 || o.site_connections == 0 {
        bail!("--throttle-rate, --site-rate and --site-connections must be at least 1");
    }
    let profile = build_profile();
    let machine = Machine::detect();
    let layout = Layout::new(o.domains);
    let dns = TestDns::try_start(&o.unbound, &layout.records)
        .context("starting unbound (pass --unbound PATH if it is elsewhere)")?;
    let (mut submission, template_source_bytes) = workload::campaign(&o.campaign, o.connections)?;
    submission.delivery.relay = None;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(run_both(o, &layout, dns.addr, submission));
    runtime.shutdown_timeout(Duration::from_secs(5));
    let mut b = result?;
    let c = &b.mx.farm.counters;
    let throttle = Throttle::from_histogram(
        f64::from(o.throttle_rate),
        o.smurfs,
        &b.throttled.per_second,
    );
    if o.throttled > 0 && !throttle.within_limit() {
        b.problems.push(format!(
            "{THROTTLED} measured above its limit: peak second {}, average {:.1}/s, limit {}/s \
             (+{} burst allowance)",
            throttle.peak_second, throttle.average_per_sec, o.throttle_rate, throttle.allowance
        ));
    }
    for (label, run) in [("MX", &b.mx), ("relay", &b.relay)] {
        if run.main.is_none() {
            b.problems.push(format!(
                "{label} run: the sinks never counted all {} well-behaved messages",
                o.recipients
            ));
        }
    }
    let well_behaved = &b.hosts[..b.hosts.len().min(HOSTS.len())];
    let mx_accepted = well_behaved.iter().map(|h| h.accepted).sum();
    let mx_peak = well_behaved.iter().map(|h| h.peak_sessions).sum();
    Ok(MxReport {
        machine,
        build_profile: profile,
        conditions: MxConditions {
            recipients: o.recipients,
            domains: o.domains,
            sites: layout.sites(),
            throttled_recipients: o.throttled,
            smurfs: o.smurfs,
            window: b.mx.farm.window,
            batch_size: b.mx.farm.batch_size,
            campaign_dir: std::fs::canonicalize(&o.campaign)
                .unwrap_or_else(|_| o.campaign.clone())
                .display()
                .to_string(),
            template_source_bytes,
            avg_message_bytes: c.rendered_bytes / (c.delivered + c.deferred + c.failed).max(1),
            shaping: o.shaping(),
            site_connections: o.site_connections,
            relay_connections_per_smurf: o.connections,
            dns: format!("{} (on {})", dns.command, dns.addr),
            relay_sink: b.relay_sink.addr.to_string(),
        },
        mx: ModeRun::new(&b.mx.farm, b.mx.main, mx_accepted, mx_peak),
        relay: ModeRun::new(
            &b.relay.farm,
            b.relay.main,
            b.relay_sink.accepted,
            b.relay_sink.peak_sessions,
        ),
        overall: Overall::new(o.recipients + o.throttled, b.mx.all, secs(b.mx.farm.wall)),
        hosts: b.hosts,
        throttle,
        problems: b.problems,
    })
}

/// Starts the sinks, runs the MX campaign, then the relay campaign, and checks every sink.
async fn run_both(
    o: &Mx,
    layout: &Layout,
    nameserver: SocketAddr,
    submission: CampaignSubmission,
) -> anyhow::Result<Both> {
    let sequence = layout.sequence(o.recipients, o.throttled);
    let mx_csv = csvgen::recipients_csv_at(sequence.iter().copied()).into_bytes();
    let relay_csv = csvgen::recipients_csv_at(sequence.into_iter().filter(|d| *d != THROTTLED));
    let mut ips = HOSTS.to_vec();
    ips.push(THROTTLED_HOST);
    let (port, mut sinks) = mx_sinks::start_on_common_port(&ips).await?;
    let throttled = sinks.pop().context("no sink for the throttled host")?;
    let routing = Routing::Mx {
        nameserver,
        smtp_port: port,
        shaping: o.shaping(),
    };
    eprintln!(
        "MX routing: {} recipients over {} domains + {} at {THROTTLED}, {} smurfs ...",
        o.recipients, o.domains, o.throttled, o.smurfs
    );
    let main: Vec<&RunningSink> = sinks.iter().collect();
    let mx = timed_run(
        &o.shape(),
        routing,
        submission.clone(),
        mx_csv,
        (&main, o.recipients),
        (&[&throttled], o.recipients + o.throttled),
    )
    .await?;
    let mut problems = Vec::new();
    let hosts = mx_check::check_mx(
        layout,
        (o.recipients, o.throttled),
        &sinks,
        &throttled,
        &mx.farm.counters,
        &mut problems,
    );
    let throttled_result = SinkResult::of(&throttled);
    for sink in sinks {
        sink.stop().await;
    }
    throttled.stop().await;

    let relay_sink = RunningSink::start(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    eprintln!(
        "relay mode: {} recipients to one sink, {} smurfs x {} connections ...",
        o.recipients, o.smurfs, o.connections
    );
    let relay = timed_run(
        &o.shape(),
        Routing::Relay(relay_sink.addr.to_string()),
        submission,
        relay_csv.into_bytes(),
        (&[&relay_sink], o.recipients),
        (&[], o.recipients),
    )
    .await?;
    mx_check::check_relay(
        o.recipients,
        &relay_sink,
        &relay.farm.counters,
        &mut problems,
    );
    let relay_result = SinkResult::of(&relay_sink);
    relay_sink.stop().await;
    Ok(Both {
        mx,
        relay,
        hosts,
        throttled: throttled_result,
        relay_sink: relay_result,
        problems,
    })
}
