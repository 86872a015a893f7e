//! How each side of `compare` is run and measured against the one shared sink; the report's
//! columns come out of here.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::farm::{self, FarmSpec, ProcFarm};
use super::report::{BigRun, Coordination, DkimCost, Latency, SideKey, SideReport};
use super::{dkim, haraka, postfix, render};
use crate::farm_run::StateStore;
use crate::procs::{self, ProcCost, TreeWatch};
use crate::sink::SmtpSink;
use crate::source::Load;
use crate::throughput::{measure_mailfarm, secs, FarmArgs};
use crate::workload::{self, Workload};

/// How often the sink's count is sampled for the timeline.
const SAMPLE: Duration = Duration::from_millis(250);
/// How long a side may go without the sink counting a message before it is declared stuck.
const STALL: Duration = Duration::from_secs(60);
/// Messages the DKIM micro-measurement signs per round.
const DKIM_MESSAGES: usize = 200;
/// Files of a campaign folder besides campaign.toml.
const TEMPLATES: [&str; 2] = ["body.txt.hbs", "body.html.hbs"];

/// What every side shares: the sink, the campaign, the options.
pub struct Context<'a> {
    /// The one sink.
    pub sink: SmtpSink,
    /// The campaign with its synthetic recipient list.
    pub work: Workload,
    farm: &'a FarmArgs,
    mailfarm: PathBuf,
    tmp: &'a Path,
}

impl<'a> Context<'a> {
    /// Builds the campaign and starts the sink.
    pub fn new(farm: &'a FarmArgs, mailfarm: PathBuf, tmp: &'a Path) -> anyhow::Result<Self> {
        Ok(Self {
            work: workload::build(&farm.campaign, farm.recipients, farm.connections)?,
            sink: farm.start_sink()?,
            farm,
            mailfarm,
            tmp,
        })
    }

    /// Average size of the campaign's rendered messages (first 200 recipients).
    pub fn message_bytes(&self) -> anyhow::Result<u64> {
        let template = render::compile(&self.work.submission, &self.work.csv)?;
        let sample = render::render_all(&template, &self.work.csv, false, 200)?;
        Ok(sample.iter().map(|m| m.data.len() as u64).sum::<u64>() / sample.len().max(1) as u64)
    }

    /// Runs `work` while sampling the sink's count (from its value now) every 250 ms, calling
    /// `tick` at each sample; returns its result and the timeline.
    fn timed<R>(
        &self,
        mut tick: impl FnMut() + Send,
        work: impl FnOnce() -> R,
    ) -> (R, Vec<(f64, u64)>) {
        let base = self.sink.messages();
        let stop = AtomicBool::new(false);
        let started = Instant::now();
        std::thread::scope(|scope| {
            let sampler = scope.spawn(|| {
                let mut timeline = vec![(0.0, 0)];
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(SAMPLE);
                    tick();
                    let count = self.sink.messages().saturating_sub(base);
                    timeline.push((started.elapsed().as_secs_f64(), count));
                }
                timeline
            });
            let result = work();
            stop.store(true, Ordering::Relaxed);
            (result, sampler.join().unwrap_or_default())
        })
    }

    /// Waits until the sink counted `target` (absolute) messages; fails when it stops moving.
    fn wait_sink(&self, target: u64) -> anyhow::Result<()> {
        let mut last = (self.sink.messages(), Instant::now());
        while self.sink.messages() < target {
            let now = self.sink.messages();
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > STALL {
                bail!("the sink counted {now} of {target} messages and stopped moving");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Checks the sink's count for a side.
    fn check_count(&self, side: &str, counted: u64, problems: &mut Vec<String>) {
        if counted != self.farm.recipients {
            problems.push(format!(
                "{side}: the sink counted {counted} of {} messages",
                self.farm.recipients
            ));
        }
    }

    /// 1. smtp-source → smtp-sink.
    pub fn ceiling(
        &self,
        program: &Path,
        message_bytes: u64,
        problems: &mut Vec<String>,
    ) -> anyhow::Result<SideReport> {
        let (base, sink_cpu) = (self.sink.messages(), self.sink.cpu()?);
        let (run, timeline) = self.timed(
            || {},
            || {
                let load = Load::blast(self.farm.recipients, message_bytes, self.farm.sessions());
                crate::source::run(program, self.sink.addr(), &load)
            },
        );
        let run = run.context("running smtp-source")?;
        let counted = self.sink.wait_messages(base + self.farm.recipients, STALL) - base;
        self.check_count("ceiling", counted, problems);
        let mut side = SideReport::new(
            SideKey::Ceiling,
            "raw ceiling: smtp-source",
            counted,
            secs(run.wall),
            secs(run.cpu),
            secs(self.sink.cpu()?.saturating_sub(sink_cpu)),
            vec![ProcCost {
                name: "smtp-source".into(),
                processes: 1,
                cpu_seconds: secs(run.cpu),
                peak_rss_bytes: run.peak_rss_bytes,
            }],
            None,
            timeline,
        );
        side.note = "one fixed body, no rendering; no per-message latency".into();
        Ok(side)
    }

    /// The campaign's personalised messages, rendered before any clock starts (the relays'
    /// input).
    fn rendered(&self) -> anyhow::Result<Vec<render::Prepared>> {
        let template = render::compile(&self.work.submission, &self.work.csv)?;
        eprintln!(
            "   rendering {} messages (untimed) ...",
            self.farm.recipients
        );
        render::render_all(
            &template,
            &self.work.csv,
            true,
            self.farm.recipients as usize,
        )
    }

    /// Injects `messages` into the relay listening on `addr` (whose processes all descend from
    /// `root`) and waits until the sink has every one: the clock, the CPU of the relay's whole
    /// process tree and its peak RSS per process name.
    fn relay_run(
        &self,
        root: u32,
        addr: std::net::SocketAddr,
        messages: &[render::Prepared],
    ) -> anyhow::Result<RelayRun> {
        let (base, sink_cpu) = (self.sink.messages(), self.sink.cpu()?);
        let cpu_before = procs::tree_cpu(root);
        let mut watch = TreeWatch::default();
        let mut ticks = 0u32;
        let started = Instant::now();
        let (done, timeline) = self.timed(
            || {
                ticks += 1;
                if ticks.is_multiple_of(2) {
                    watch.sample(root);
                }
            },
            || -> anyhow::Result<()> {
                postfix::inject(addr, messages, self.farm.sessions())?;
                self.wait_sink(base + self.farm.recipients)
            },
        );
        let wall = started.elapsed();
        done?;
        watch.sample(root);
        Ok(RelayRun {
            wall: secs(wall),
            cpu: secs(procs::tree_cpu(root).saturating_sub(cpu_before)),
            counted: self.sink.messages() - base,
            sink_cpu: secs(self.sink.cpu()?.saturating_sub(sink_cpu)),
            timeline,
            peaks: watch.peaks(),
        })
    }

    /// 2. The personalised messages injected into a private Postfix relaying to the sink.
    pub fn postfix(
        &self,
        program: &Path,
        problems: &mut Vec<String>,
    ) -> anyhow::Result<SideReport> {
        let messages = self.rendered()?;
        let relay = postfix::PostfixRelay::start(program, self.sink.addr(), self.farm.sessions())?;
        let mut run = self.relay_run(relay.master_pid()?, relay.addr, &messages)?;
        self.check_count("postfix", run.counted, problems);
        drained("postfix", || relay.queued(), problems);
        std::thread::sleep(Duration::from_millis(500)); // postlogd writes asynchronously
        let delays: Vec<f64> = relay.delivery_delays().iter().map(|s| s * 1000.0).collect();
        let mut processes = std::mem::take(&mut run.peaks);
        processes.insert(
            0,
            ProcCost {
                name: "all Postfix processes (CPU)".into(),
                processes: processes.iter().map(|p| p.processes).sum(),
                cpu_seconds: run.cpu,
                peak_rss_bytes: 0,
            },
        );
        let mut side = run.side(
            SideKey::Postfix,
            "Postfix pipeline (inject+relay)",
            processes,
            Latency::of(
                "injection to the sink's 250 (Postfix delay=, 10 ms steps)",
                delays,
            ),
        );
        side.note = "messages rendered before the clock; injector CPU not counted".into();
        Ok(side)
    }

    /// 2b. The same messages injected into a private Haraka (`program`, version `version`)
    /// relaying to the sink through its outbound queue.
    pub fn haraka(
        &self,
        program: &Path,
        version: &str,
        problems: &mut Vec<String>,
    ) -> anyhow::Result<SideReport> {
        let messages = self.rendered()?;
        let mut relay =
            haraka::HarakaRelay::start(program, self.sink.addr(), self.farm.sessions(), self.tmp)
                .with_context(|| format!("starting Haraka ({})", program.display()))?;
        let master = relay.master_pid();
        let pids = procs::tree_pids(master);
        let before: Vec<Duration> = pids
            .iter()
            .map(|&p| crate::sys::process_cpu(p).unwrap_or_default())
            .collect();
        let run = self.relay_run(master, relay.addr, &messages)?;
        self.check_count("haraka", run.counted, problems);
        drained("haraka", || relay.queued(), problems);
        // The workers live through the run: their own CPU and peak RSS, read while they run.
        let processes: Vec<ProcCost> = pids
            .iter()
            .zip(before)
            .enumerate()
            .map(|(i, (&pid, cpu_before))| ProcCost {
                name: if pid == master {
                    "haraka master".into()
                } else {
                    format!("haraka worker {i}")
                },
                processes: 1,
                cpu_seconds: secs(
                    crate::sys::process_cpu(pid)
                        .unwrap_or_default()
                        .saturating_sub(cpu_before),
                ),
                peak_rss_bytes: crate::sys::peak_rss(pid).unwrap_or(0),
            })
            .collect();
        if processes.len() != relay.workers + 1 {
            problems.push(format!(
                "haraka: {} processes in its tree, expected a master and {} workers",
                processes.len(),
                relay.workers
            ));
        }
        relay.stop()?;
        let delays: Vec<f64> = relay.delivery_delays().iter().map(|s| s * 1000.0).collect();
        if delays.len() as u64 != run.counted {
            problems.push(format!(
                "haraka: {} delivered lines in its log for {} messages at the sink",
                delays.len(),
                run.counted
            ));
        }
        let mut side = run.side(
            SideKey::Haraka,
            &format!("Haraka {version} (inject+outbound)"),
            processes,
            Latency::of(
                "queueing to the sink's 250 (Haraka delivered delay=, 1 ms steps)",
                delays,
            ),
        );
        side.note = format!(
            "messages rendered before the clock; injector CPU not counted; {} workers \
             (nodes={}); outbound queue fsynced; one connection per delivery (Haraka 3 has \
             no outbound pooling)",
            relay.workers, relay.workers
        );
        Ok(side)
    }

    /// A campaign folder delivering `recipients` of the synthetic list to the sink.
    fn campaign_dir(&self, name: &str, recipients: u64) -> anyhow::Result<(PathBuf, String)> {
        let dir = self.tmp.join(name);
        std::fs::create_dir_all(&dir)?;
        let toml_path = self.farm.campaign.join("campaign.toml");
        let text = std::fs::read_to_string(&toml_path)
            .with_context(|| format!("reading {}", toml_path.display()))?;
        let mut value: toml::Table = text.parse().context("parsing campaign.toml")?;
        let id = format!("cmp-{name}");
        value.insert("id".into(), toml::Value::String(id.clone()));
        let mut delivery = toml::Table::new();
        delivery.insert(
            "relay".into(),
            toml::Value::String(self.sink.addr().to_string()),
        );
        delivery.insert(
            "connections".into(),
            toml::Value::Integer(i64::from(self.farm.connections)),
        );
        value.insert("delivery".into(), toml::Value::Table(delivery));
        std::fs::write(dir.join("campaign.toml"), toml::to_string(&value)?)?;
        for name in TEMPLATES {
            let from = self.farm.campaign.join(name);
            if from.exists() {
                std::fs::copy(&from, dir.join(name))
                    .with_context(|| format!("copying {}", from.display()))?;
            }
        }
        let csv = if recipients == self.farm.recipients {
            self.work.csv.clone()
        } else {
            crate::csvgen::recipients_csv(recipients).into_bytes()
        };
        std::fs::write(dir.join("recipients.csv"), csv)?;
        Ok((dir, id))
    }

    /// 3./4. mailfarm as separate processes, durable, with `dkim` (a smurf config section)
    /// or without; `recipients` messages.
    pub fn processes(
        &self,
        key: SideKey,
        dkim: Option<&str>,
        recipients: u64,
        problems: &mut Vec<String>,
    ) -> anyhow::Result<(SideReport, Coordination)> {
        let name = format!("{key:?}-{recipients}").to_lowercase();
        let (campaign, id) = self.campaign_dir(&name, recipients)?;
        let listen = ([127, 0, 0, 1], farm::free_udp_port()?).into();
        let mut spec = FarmSpec::local(
            self.mailfarm.clone(),
            self.tmp.join(format!("farm-{name}")),
            listen,
            self.farm.smurfs,
        );
        if let Some(window) = self.farm.window {
            spec.window = window;
        }
        if let Some(batch) = self.farm.batch_size {
            spec.batch_size = batch;
        }
        spec.smurf_extra = dkim.unwrap_or_default().to_owned();
        let mut farm = ProcFarm::start(spec)?;
        let (base, sink_cpu) = (self.sink.messages(), self.sink.cpu()?);
        let mark = farm.cpu_mark()?;
        let cli_before = crate::sys::usage(libc::RUSAGE_CHILDREN)?.cpu;
        let (counters, timeline) = self.timed(
            || {},
            || -> anyhow::Result<_> {
                farm.operator.launch(&campaign)?;
                self.wait_sink(base + recipients)?;
                farm.wait_finished(&id, Duration::from_millis(100))
            },
        );
        let counters = counters?;
        let mut costs = farm.costs_since(&mark)?;
        let cli = crate::sys::usage(libc::RUSAGE_CHILDREN)?
            .cpu
            .saturating_sub(cli_before);
        costs.push(ProcCost {
            name: "operator CLI (launch, status)".into(),
            processes: 1,
            cpu_seconds: secs(cli),
            peak_rss_bytes: 0,
        });
        let counted = self.sink.messages() - base;
        if counted != recipients || counters.delivered != recipients {
            problems.push(format!(
                "{key:?}: the sink counted {counted}, the coordinator {} delivered, of {recipients}",
                counters.delivered
            ));
        }
        let latency = attempt_latency(&farm.accounting_log());
        problems.extend(farm.stop()?.into_iter().map(|p| format!("{key:?}: {p}")));
        let cpu: f64 = costs.iter().map(|c| c.cpu_seconds).sum();
        let label = match key {
            SideKey::MailfarmRsa => "mailfarm procs, DKIM rsa-2048",
            SideKey::MailfarmEd25519 => "mailfarm procs, DKIM ed25519",
            _ => "mailfarm procs (durable)",
        };
        let processed = (counters.delivered + counters.deferred + counters.failed).max(1);
        let coordination = coordination_of(&costs, &counters, processed, recipients);
        let mut side = SideReport::new(
            key,
            label,
            counted,
            counters.elapsed_ms as f64 / 1000.0,
            cpu,
            secs(self.sink.cpu()?.saturating_sub(sink_cpu)),
            costs,
            latency,
            timeline,
        );
        side.note = "seconds: the coordinator's campaign clock (launch, ingest included, to the last result)".into();
        Ok((side, coordination))
    }

    /// 3b. The embedded farm (one process), durable state folder.
    pub fn embedded(&self, problems: &mut Vec<String>) -> anyhow::Result<SideReport> {
        let dir = self.tmp.join("embedded-state");
        std::fs::create_dir_all(&dir)?;
        let shape = self.farm.shape(StateStore::Folder {
            dir: dir.clone(),
            durable: true,
        });
        let (measured, timeline) = self.timed(
            || {},
            || {
                measure_mailfarm(
                    &shape,
                    &self.sink,
                    self.work.submission.clone(),
                    self.work.csv.clone(),
                    self.farm.recipients,
                )
            },
        );
        let m = measured?;
        problems.extend(m.problems.iter().map(|p| format!("embedded: {p}")));
        let latency = attempt_latency(&dir.join("accounting.jsonl"));
        let side = &m.side;
        let mut out = SideReport::new(
            SideKey::Embedded,
            "mailfarm embedded (durable)",
            side.messages,
            side.seconds,
            side.cpu_seconds,
            side.sink_cpu_seconds,
            vec![ProcCost {
                name: "mailfarm-bench (coordinator + smurfs)".into(),
                processes: 1,
                cpu_seconds: side.cpu_seconds,
                peak_rss_bytes: side.peak_rss_bytes,
            }],
            latency,
            timeline,
        );
        out.note = "timeline starts before the farm does (it includes start-up)".into();
        Ok(out)
    }

    /// The DKIM micro-measurement with `key` on rendered messages of this campaign.
    pub fn dkim_micro(
        &self,
        domain: &str,
        key: &dkim::Key,
        rounds: usize,
    ) -> anyhow::Result<DkimCost> {
        let template = render::compile(&self.work.submission, &self.work.csv)?;
        let messages = render::render_all(&template, &self.work.csv, false, DKIM_MESSAGES)?;
        dkim::measure(domain, key, &messages, rounds.max(1))
    }

    /// The big separate-process run: smurf memory and coordinator CPU at `recipients`.
    pub fn big(&self, recipients: u64, problems: &mut Vec<String>) -> anyhow::Result<BigRun> {
        let (side, coord) = self.processes(SideKey::Mailfarm, None, recipients, problems)?;
        let coordinator_peak_rss_bytes = side.processes.first().map_or(0, |c| c.peak_rss_bytes);
        Ok(BigRun {
            recipients,
            msgs_per_sec: side.msgs_per_sec,
            smurf_peak_rss_bytes: coord.smurf_peak_rss_bytes,
            coordinator_peak_rss_bytes,
            coordinator_cpu_seconds_per_million: coord.coordinator_cpu_seconds_per_million,
        })
    }
}

/// Gives a relay up to 10 s to empty its queue once the sink has every message (the last
/// files go after the 250), and notes a problem for what `queued` still counts then.
fn drained(side: &str, queued: impl Fn() -> u64, problems: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while queued() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if queued() > 0 {
        problems.push(format!("{side}: {} queue files left", queued()));
    }
}

/// What [`Context::relay_run`] measured of a relay.
struct RelayRun {
    /// Seconds from the first injection until the sink had every message.
    wall: f64,
    /// CPU seconds of the relay's whole process tree.
    cpu: f64,
    /// Messages the sink counted.
    counted: u64,
    /// CPU seconds of the sink.
    sink_cpu: f64,
    /// The sink's count over time.
    timeline: Vec<(f64, u64)>,
    /// Peak RSS per process name.
    peaks: Vec<ProcCost>,
}

impl RelayRun {
    /// The relay's column, with its `processes` and `latency`.
    fn side(
        self,
        key: SideKey,
        name: &str,
        processes: Vec<ProcCost>,
        latency: Option<Latency>,
    ) -> SideReport {
        SideReport::new(
            key,
            name,
            self.counted,
            self.wall,
            self.cpu,
            self.sink_cpu,
            processes,
            latency,
            self.timeline,
        )
    }
}

/// The coordination figures of a separate-process run (`costs`: coordinator first).
fn coordination_of(
    costs: &[ProcCost],
    counters: &mailfarm_protocol::CampaignCounters,
    processed: u64,
    recipients: u64,
) -> Coordination {
    let quic = (counters.wire_bytes + counters.template_bytes) as f64 / processed as f64;
    let message = counters.rendered_bytes as f64 / processed as f64;
    let coordinator_cpu = costs.first().map_or(0.0, |c| c.cpu_seconds);
    Coordination {
        quic_bytes_per_recipient: quic,
        avg_message_bytes: message,
        quic_percent_of_message: super::report::ratio(quic, message) * 100.0,
        coordinator_cpu_seconds_per_million: coordinator_cpu * 1e6 / recipients.max(1) as f64,
        smurf_peak_rss_bytes: costs
            .iter()
            .filter(|c| c.name.starts_with("smurf"))
            .map(|c| c.peak_rss_bytes)
            .max()
            .unwrap_or(0),
        recipients,
        big: None,
    }
}

/// Percentiles of the delivered attempts' `duration_ms` in an accounting log: from the moment
/// a smurf's delivery worker takes the recipient (render, DKIM, SMTP) to the relay's 250. Time
/// queued on the smurf before that is not included.
fn attempt_latency(log: &Path) -> Option<Latency> {
    let text = std::fs::read_to_string(log).ok()?;
    let samples = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["outcome"] == "delivered")
        .filter_map(|v| v["duration_ms"].as_f64())
        .collect();
    Latency::of(
        "smurf worker takes the job to 250 (accounting duration_ms, 1 ms steps)",
        samples,
    )
}
