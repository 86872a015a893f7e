//! What `netns` measured, as JSON and as a table: per smurf count the rate, the coordinator's
//! CPU per recipient (what limits how many smurfs one coordinator feeds), the smurfs' CPU per
//! message, peak memory per process and QUIC bytes per recipient; then the estimate of smurfs
//! per coordinator core.

use std::fmt::Write as _;
use std::path::Path;

use mailfarm_protocol::CampaignCounters;
use serde::Serialize;

use super::Cpu;
use crate::report::{mib, text_of, thousands, write_heading, write_verdict};
use crate::sys::{self, Machine};

/// The whole report.
#[derive(Debug, Serialize)]
pub struct NetnsReport {
    /// The machine.
    pub machine: Machine,
    /// `release` or `debug`.
    pub build_profile: &'static str,
    /// What every run had in common.
    pub conditions: Conditions,
    /// One entry per smurf count.
    pub runs: Vec<RunReport>,
    /// Smurfs one coordinator core can feed (None without a run that delivered).
    pub estimate: Option<Estimate>,
    /// Checks that failed.
    pub problems: Vec<String>,
}

/// The conditions of every run.
#[derive(Debug, Serialize)]
pub struct Conditions {
    /// Recipients per run.
    pub recipients: u64,
    /// SMTP connections per smurf.
    pub connections_per_smurf: u16,
    /// Smurf window (None: `farm init`'s, 512).
    pub window: Option<u32>,
    /// Coordinator batch size (None: `farm init`'s, 128).
    pub batch_size: Option<usize>,
    /// Campaign folder whose templates were used.
    pub campaign_dir: String,
    /// Average rendered message size (last run).
    pub avg_message_bytes: u64,
    /// File system of the coordinator's durable state.
    pub state_fs: String,
    /// How the hosts are wired.
    pub network: String,
}

/// One run: a fresh coordinator and `smurfs` smurfs sending the campaign to the sink.
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// Smurfs (each in its own namespace).
    pub smurfs: u32,
    /// 1, 5 and 15 minute load averages right before the launch.
    pub load_average: String,
    /// Recipients delivered (2xx from the sink).
    pub delivered: u64,
    /// Recipients deferred.
    pub deferred: u64,
    /// Recipients failed.
    pub failed: u64,
    /// Messages smtp-sink counted during the run.
    pub sink_counted: u64,
    /// The coordinator's campaign clock: launch until the last result.
    pub seconds: f64,
    /// Delivered messages per second.
    pub msgs_per_s: f64,
    /// The same per hour.
    pub msgs_per_hour: f64,
    /// CPU of the coordinator process from right before the launch until the campaign ended
    /// (ingest, leasing, results, durable commits, one `farm watch` request a second).
    pub coordinator_cpu_s: f64,
    /// That per recipient, microseconds.
    pub coordinator_cpu_us_per_recipient: f64,
    /// That per million recipients, CPU seconds.
    pub coordinator_cpu_s_per_million: f64,
    /// Cores the coordinator kept busy on average (CPU / wall).
    pub coordinator_cores_used: f64,
    /// CPU of each smurf process over the same span.
    pub smurf_cpu_s: Vec<f64>,
    /// All smurfs' CPU per delivered message, milliseconds.
    pub smurf_cpu_ms_per_message: f64,
    /// CPU of smtp-sink over the same span.
    pub sink_cpu_s: f64,
    /// Peak resident set size (VmHWM) of the coordinator.
    pub coordinator_peak_rss_bytes: u64,
    /// Peak resident set size of each smurf.
    pub smurf_peak_rss_bytes: Vec<u64>,
    /// QUIC frame bytes (recipient data, results, template shipments) per recipient, as the
    /// coordinator counts them.
    pub quic_frame_bytes_per_recipient: f64,
    /// Bytes on the coordinator's network link (both directions, UDP/IP headers, TLS and QUIC
    /// overhead included; the operator CLI runs on the coordinator's host, off this link) per
    /// recipient.
    pub link_bytes_per_recipient: f64,
    /// Average rendered message size.
    pub avg_message_bytes: u64,
    /// Checks that failed in this run.
    pub problems: Vec<String>,
}

/// Seconds of a duration difference.
fn delta(end: std::time::Duration, start: std::time::Duration) -> f64 {
    end.saturating_sub(start).as_secs_f64()
}

/// Division that gives 0 for an empty divisor.
fn per(value: f64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        value / count as f64
    }
}

impl RunReport {
    /// Builds the run's figures from the final counters and the CPU readings around it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        smurfs: u32,
        load_average: String,
        c: &CampaignCounters,
        sink_counted: u64,
        start: &Cpu,
        end: &Cpu,
        coordinator_peak_rss_bytes: u64,
        smurf_peak_rss_bytes: Vec<u64>,
        link_bytes: u64,
        recipients: u64,
        mut problems: Vec<String>,
    ) -> Self {
        let seconds = c.elapsed_ms as f64 / 1000.0;
        let processed = c.delivered + c.deferred + c.failed;
        let coordinator_cpu_s = delta(end.coordinator, start.coordinator);
        let smurf_cpu_s: Vec<f64> = end
            .smurfs
            .iter()
            .zip(&start.smurfs)
            .map(|(e, s)| delta(*e, *s))
            .collect();
        let msgs_per_s = if seconds > 0.0 {
            c.delivered as f64 / seconds
        } else {
            0.0
        };
        if c.delivered != recipients {
            problems.push(format!(
                "delivered {} of {recipients} ({} deferred, {} failed)",
                c.delivered, c.deferred, c.failed
            ));
        }
        if sink_counted != c.delivered {
            problems.push(format!(
                "smtp-sink counted {sink_counted} messages, the coordinator {} delivered",
                c.delivered
            ));
        }
        Self {
            smurfs,
            load_average,
            delivered: c.delivered,
            deferred: c.deferred,
            failed: c.failed,
            sink_counted,
            seconds,
            msgs_per_s,
            msgs_per_hour: msgs_per_s * 3600.0,
            coordinator_cpu_s,
            coordinator_cpu_us_per_recipient: per(coordinator_cpu_s * 1e6, c.total),
            coordinator_cpu_s_per_million: per(coordinator_cpu_s * 1e6, c.total),
            coordinator_cores_used: if seconds > 0.0 {
                coordinator_cpu_s / seconds
            } else {
                0.0
            },
            smurf_cpu_ms_per_message: per(smurf_cpu_s.iter().sum::<f64>() * 1e3, c.delivered),
            smurf_cpu_s,
            sink_cpu_s: delta(end.sink, start.sink),
            coordinator_peak_rss_bytes,
            smurf_peak_rss_bytes,
            quic_frame_bytes_per_recipient: per(
                (c.wire_bytes + c.template_bytes) as f64,
                processed,
            ),
            link_bytes_per_recipient: per(link_bytes as f64, processed),
            avg_message_bytes: c.rendered_bytes / processed.max(1),
            problems,
        }
    }
}

/// How many smurfs one coordinator can feed before it is the bottleneck.
#[derive(Debug, Serialize)]
pub struct Estimate {
    /// The coordinator's CPU per recipient, median over the runs, microseconds.
    pub coordinator_cpu_us_per_recipient: f64,
    /// Recipients one coordinator core handles per second: one core-second divided by that.
    pub recipients_per_coordinator_core_s: f64,
    /// The smurfs' CPU per message, median over the runs, milliseconds.
    pub smurf_cpu_ms_per_message: f64,
    /// Messages one smurf core sends per second: one core-second divided by that.
    pub messages_per_smurf_core_s: f64,
    /// One-core smurfs one coordinator core feeds (the two rates divided).
    pub smurf_cores_per_coordinator_core: f64,
    /// The rate the one-smurf run measured here (sharing this machine's cores), if it ran.
    pub one_smurf_measured_msgs_per_s: Option<f64>,
    /// Smurfs at that measured rate one coordinator core feeds.
    pub smurfs_at_measured_rate_per_coordinator_core: Option<f64>,
}

impl Estimate {
    /// The estimate from the runs that delivered something: the median of their per-recipient
    /// and per-message CPU figures (robust to one odd run).
    pub fn from_runs(runs: &[RunReport]) -> Option<Self> {
        let good: Vec<&RunReport> = runs.iter().filter(|r| r.delivered > 0).collect();
        let coordinator_us = median(good.iter().map(|r| r.coordinator_cpu_us_per_recipient))?;
        let smurf_ms = median(good.iter().map(|r| r.smurf_cpu_ms_per_message))?;
        if coordinator_us <= 0.0 || smurf_ms <= 0.0 {
            return None;
        }
        let per_core = 1e6 / coordinator_us;
        let smurf_rate = 1e3 / smurf_ms;
        let one = good.iter().find(|r| r.smurfs == 1).map(|r| r.msgs_per_s);
        Some(Self {
            coordinator_cpu_us_per_recipient: coordinator_us,
            recipients_per_coordinator_core_s: per_core,
            smurf_cpu_ms_per_message: smurf_ms,
            messages_per_smurf_core_s: smurf_rate,
            smurf_cores_per_coordinator_core: per_core / smurf_rate,
            one_smurf_measured_msgs_per_s: one,
            smurfs_at_measured_rate_per_coordinator_core: one
                .filter(|r| *r > 0.0)
                .map(|r| per_core / r),
        })
    }
}

/// The median of `values` (the mean of the middle two for an even count); None when empty.
fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

impl NetnsReport {
    /// Assembles the report.
    pub fn new(
        machine: Machine,
        build_profile: &'static str,
        o: &super::Netns,
        root: &Path,
        runs: Vec<RunReport>,
        avg_message_bytes: u64,
        problems: Vec<String>,
    ) -> Self {
        let estimate = Estimate::from_runs(&runs);
        Self {
            machine,
            build_profile,
            conditions: Conditions {
                recipients: o.recipients,
                connections_per_smurf: o.connections,
                window: o.window,
                batch_size: o.batch_size,
                campaign_dir: std::fs::canonicalize(&o.campaign)
                    .unwrap_or_else(|_| o.campaign.clone())
                    .display()
                    .to_string(),
                avg_message_bytes,
                state_fs: sys::fs_type(root),
                network: format!(
                    "one network namespace per host (coordinator 10.77.0.2, smurf N 10.77.0.1N, \
                     sink 10.77.0.100, in {}), veth pairs to a bridge in a switch namespace; no \
                     added latency",
                    super::topology::NETWORK
                ),
            },
            runs,
            estimate,
            problems,
        }
    }

    /// The report as text.
    pub fn text(&self) -> String {
        text_of(|out| self.write_text(out))
    }

    fn write_text(&self, out: &mut String) -> std::fmt::Result {
        let c = &self.conditions;
        write_heading(
            out,
            "mailfarm-bench netns: coordinator, smurfs and sink on separate network namespaces",
            &self.machine,
            self.build_profile,
        )?;
        writeln!(out, "network     {}", c.network)?;
        writeln!(
            out,
            "campaign    {} recipients of {} B (avg, rendered), {} SMTP connections per smurf, \
             window {}, batch {}, durable state on {}",
            thousands(c.recipients as f64),
            thousands(c.avg_message_bytes as f64),
            c.connections_per_smurf,
            c.window.map_or("512 (farm init)".into(), |w| w.to_string()),
            c.batch_size
                .map_or("128 (farm init)".into(), |b| b.to_string()),
            c.state_fs
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "smurfs  msgs/s   msgs/hour   coord CPU  us/rcpt  cores  smurf ms/msg  sink CPU  QUIC B/rcpt  link B/rcpt  RSS coord  RSS smurf max  load"
        )?;
        for r in &self.runs {
            let smurf_rss = r.smurf_peak_rss_bytes.iter().copied().max().unwrap_or(0);
            writeln!(
                out,
                "{:>6}  {:>6.0}  {:>10}  {:>8.2}s  {:>7.1}  {:>5.2}  {:>12.3}  {:>7.2}s  {:>11.0}  {:>11.0}  {:>9}  {:>13}  {}",
                r.smurfs,
                r.msgs_per_s,
                thousands(r.msgs_per_hour),
                r.coordinator_cpu_s,
                r.coordinator_cpu_us_per_recipient,
                r.coordinator_cores_used,
                r.smurf_cpu_ms_per_message,
                r.sink_cpu_s,
                r.quic_frame_bytes_per_recipient,
                r.link_bytes_per_recipient,
                mib(r.coordinator_peak_rss_bytes),
                mib(smurf_rss),
                r.load_average
            )?;
        }
        writeln!(
            out,
            "            (us/rcpt: the coordinator's CPU microseconds per recipient, which is also its \
             CPU seconds per million recipients)"
        )?;
        writeln!(out)?;
        if let Some(e) = &self.estimate {
            writeln!(
                out,
                "estimate    coordinator {:.1} us CPU per recipient -> one coordinator core feeds {} recipients/s",
                e.coordinator_cpu_us_per_recipient,
                thousands(e.recipients_per_coordinator_core_s)
            )?;
            writeln!(
                out,
                "            a smurf spends {:.3} ms CPU per message -> {} msgs/s per smurf core",
                e.smurf_cpu_ms_per_message,
                thousands(e.messages_per_smurf_core_s)
            )?;
            writeln!(
                out,
                "            => one coordinator core keeps about {:.1} one-core smurfs busy before it is the bottleneck",
                e.smurf_cores_per_coordinator_core
            )?;
            if let (Some(rate), Some(n)) = (
                e.one_smurf_measured_msgs_per_s,
                e.smurfs_at_measured_rate_per_coordinator_core,
            ) {
                writeln!(
                    out,
                    "            (a lone smurf reached only {rate:.0} msgs/s here; at that rate one coordinator \
                     core feeds {n:.1} of them)"
                )?;
            }
        }
        writeln!(
            out,
            "note        every namespace shares this machine's {} CPUs, so throughput cannot grow \
             with smurfs here; the CPU per recipient and per message are the figures that carry \
             over to separate machines",
            self.machine.cpus_online
        )?;
        writeln!(out)?;
        write_verdict(
            out,
            &self.problems,
            "every message delivered and counted by the sink",
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn run(smurfs: u32, coordinator_cpu: u64, smurf_cpu: u64) -> RunReport {
        let counters = CampaignCounters {
            total: 1000,
            delivered: 1000,
            elapsed_ms: 2000,
            wire_bytes: 90_000,
            template_bytes: 10_000,
            rendered_bytes: 40_000_000,
            ..CampaignCounters::default()
        };
        let start = Cpu {
            coordinator: Duration::ZERO,
            smurfs: vec![Duration::ZERO; smurfs as usize],
            sink: Duration::ZERO,
        };
        let end = Cpu {
            coordinator: Duration::from_millis(coordinator_cpu),
            smurfs: vec![Duration::from_millis(smurf_cpu); smurfs as usize],
            sink: Duration::from_millis(10),
        };
        RunReport::new(
            smurfs,
            "1.00 1.00 1.00".into(),
            &counters,
            1000,
            &start,
            &end,
            1 << 20,
            vec![1 << 20; smurfs as usize],
            200_000,
            1000,
            Vec::new(),
        )
    }

    #[test]
    fn per_recipient_figures_and_the_estimate() {
        let one = run(1, 50, 300);
        assert_eq!(one.msgs_per_s, 500.0);
        assert!((one.coordinator_cpu_us_per_recipient - 50.0).abs() < 1e-9);
        assert!((one.coordinator_cpu_s_per_million - 50.0).abs() < 1e-9);
        assert!((one.smurf_cpu_ms_per_message - 0.3).abs() < 1e-9);
        assert!((one.quic_frame_bytes_per_recipient - 100.0).abs() < 1e-9);
        assert_eq!(one.avg_message_bytes, 40_000);
        assert!(one.problems.is_empty());
        let two = run(2, 70, 150);
        let e = Estimate::from_runs(&[one, two]).expect("runs delivered");
        // Median coordinator CPU 60 us -> 16,667 recipients per core-second; smurf 0.3 ms ->
        // 3,333 messages per core-second; 5 smurf cores per coordinator core.
        assert!((e.recipients_per_coordinator_core_s - 16_666.67).abs() < 0.1);
        assert!((e.smurf_cores_per_coordinator_core - 5.0).abs() < 1e-6);
        assert_eq!(e.one_smurf_measured_msgs_per_s, Some(500.0));
        assert_eq!(median([3.0, 1.0, 100.0].into_iter()), Some(3.0));
        assert_eq!(median(std::iter::empty()), None);
    }

    #[test]
    fn a_short_delivery_is_a_problem() {
        let counters = CampaignCounters {
            total: 10,
            delivered: 9,
            deferred: 1,
            elapsed_ms: 1000,
            ..CampaignCounters::default()
        };
        let cpu = Cpu {
            coordinator: Duration::ZERO,
            smurfs: vec![],
            sink: Duration::ZERO,
        };
        let r = RunReport::new(
            1,
            String::new(),
            &counters,
            8,
            &cpu,
            &cpu,
            0,
            vec![],
            0,
            10,
            vec![],
        );
        assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
    }
}
