//! The `mx` benchmark's report: one serialisable structure, printed as text or written as
//! JSON.

use std::net::SocketAddr;

use serde::Serialize;

use crate::farm_run::FarmRun;
use crate::sys::Machine;

/// What `mx` measured.
#[derive(Debug, Serialize)]
pub struct MxReport {
    /// The machine.
    pub machine: Machine,
    /// `release` or `debug`.
    pub build_profile: &'static str,
    /// What was run.
    pub conditions: MxConditions,
    /// The well-behaved part of the MX run (its campaign also held throttled.test).
    pub mx: ModeRun,
    /// The same well-behaved load in relay mode to one sink.
    pub relay: ModeRun,
    /// The whole MX run, throttled.test included.
    pub overall: Overall,
    /// Per MX host address (throttled.test's last).
    pub hosts: Vec<HostCount>,
    /// throttled.test: configured against measured.
    pub throttle: Throttle,
    /// Checks that failed.
    pub problems: Vec<String>,
}

/// The conditions of a run.
#[derive(Debug, Serialize)]
pub struct MxConditions {
    /// Messages to the well-behaved domains.
    pub recipients: u64,
    /// Well-behaved domains.
    pub domains: u32,
    /// Sites (distinct MX host sets) of the well-behaved domains.
    pub sites: usize,
    /// Messages to throttled.test (MX run only).
    pub throttled_recipients: u64,
    /// Smurfs.
    pub smurfs: u32,
    /// Credit window of each smurf.
    pub window: u32,
    /// Coordinator batch size.
    pub batch_size: usize,
    /// Campaign folder whose settings and templates were used.
    pub campaign_dir: String,
    /// Bytes of template sources.
    pub template_source_bytes: u64,
    /// Average rendered message size (MX run).
    pub avg_message_bytes: u64,
    /// The shaping file of the MX run.
    pub shaping: String,
    /// Farm-wide sessions per MX site.
    pub site_connections: u32,
    /// Sessions per smurf in relay mode.
    pub relay_connections_per_smurf: u16,
    /// The DNS server's command line and address.
    pub dns: String,
    /// The relay run's sink.
    pub relay_sink: String,
}

/// One column of the comparison: the well-behaved load, timed at its sinks.
#[derive(Debug, Serialize)]
pub struct ModeRun {
    /// Well-behaved messages the sinks counted.
    pub messages: u64,
    /// From the launch call until the sinks counted the last of them.
    pub seconds: f64,
    /// Messages per second.
    pub msgs_per_sec: f64,
    /// Messages per hour.
    pub msgs_per_hour: f64,
    /// CPU seconds of this process (farm and in-process sinks) over `seconds`.
    pub cpu_seconds: f64,
    /// Peak RSS of this process during the run.
    pub peak_rss_bytes: u64,
    /// Sum of the sinks' peak simultaneous sessions.
    pub peak_sessions: u64,
    /// Campaign outcomes (whole campaign).
    pub delivered: u64,
    /// Deferred recipients.
    pub deferred: u64,
    /// Failed recipients.
    pub failed: u64,
}

impl ModeRun {
    /// A column from a farm run, the moment its sinks counted all `messages` (seconds and
    /// CPU seconds from the launch; None: never) and the sinks' peak sessions.
    pub fn new(farm: &FarmRun, main: Option<(f64, f64)>, messages: u64, peak: u64) -> Self {
        let (seconds, cpu_seconds) = main.unwrap_or((0.0, 0.0));
        let rate = per_sec(messages, seconds);
        let c = &farm.counters;
        Self {
            messages,
            seconds,
            msgs_per_sec: rate,
            msgs_per_hour: rate * 3600.0,
            cpu_seconds,
            peak_rss_bytes: farm.peak_rss_bytes,
            peak_sessions: peak,
            delivered: c.delivered,
            deferred: c.deferred,
            failed: c.failed,
        }
    }
}

/// The whole MX run.
#[derive(Debug, Serialize)]
pub struct Overall {
    /// Every message of the campaign.
    pub messages: u64,
    /// From the launch call until the sinks counted the last one.
    pub seconds: f64,
    /// Messages per second.
    pub msgs_per_sec: f64,
    /// Messages per hour.
    pub msgs_per_hour: f64,
    /// The coordinator's campaign clock, until its last result.
    pub campaign_seconds: f64,
}

impl Overall {
    /// The whole run from the moment its sinks counted all `messages`.
    pub fn new(messages: u64, all: Option<(f64, f64)>, campaign_seconds: f64) -> Self {
        let seconds = all.map_or(0.0, |(s, _)| s);
        let rate = per_sec(messages, seconds);
        Self {
            messages,
            seconds,
            msgs_per_sec: rate,
            msgs_per_hour: rate * 3600.0,
            campaign_seconds,
        }
    }
}

/// One MX host address.
#[derive(Debug, Serialize)]
pub struct HostCount {
    /// The sink's address.
    pub addr: SocketAddr,
    /// The MX host names (sites) pointing at it.
    pub mx_hosts: String,
    /// Recipient domains whose MX is here.
    pub domains: usize,
    /// Messages it should get.
    pub expected: u64,
    /// Messages it accepted.
    pub accepted: u64,
    /// Accepted messages for domains whose MX is elsewhere.
    pub misrouted: u64,
    /// Most sessions open at once.
    pub peak_sessions: u64,
}

/// throttled.test's limit and what its sink saw.
#[derive(Debug, Serialize)]
pub struct Throttle {
    /// The farm-wide `message_rate`, per second.
    pub configured_per_sec: f64,
    /// Messages the sink accepted.
    pub messages: u64,
    /// Seconds from its first to its last accepted message, both included.
    pub active_seconds: u64,
    /// Messages in its busiest second.
    pub peak_second: u64,
    /// `messages / active_seconds`.
    pub average_per_sec: f64,
    /// Average over the full seconds (first and last, partial, left out); None under 3 s.
    pub steady_per_sec: Option<f64>,
    /// What a second may hold on top of the rate: one limiter burst per smurf (a twentieth
    /// of its share of the rate, at least 1).
    pub allowance: u64,
    /// Accepted messages per second, first to last.
    pub per_second: Vec<u64>,
}

impl Throttle {
    /// The figures of a sink's per-second histogram under a `configured` farm-wide limit
    /// split over `smurfs`.
    pub fn from_histogram(configured: f64, smurfs: u32, histogram: &[(u64, u64)]) -> Self {
        let per_second = match (histogram.first(), histogram.last()) {
            (Some(&(first, _)), Some(&(last, _))) => {
                let mut seconds = vec![0; (last - first + 1) as usize];
                for &(at, n) in histogram {
                    seconds[(at - first) as usize] = n;
                }
                seconds
            }
            _ => Vec::new(),
        };
        let messages: u64 = per_second.iter().sum();
        let active_seconds = per_second.len() as u64;
        let steady_per_sec = (per_second.len() >= 3).then(|| {
            let inner = &per_second[1..per_second.len() - 1];
            inner.iter().sum::<u64>() as f64 / inner.len() as f64
        });
        let share = configured / f64::from(smurfs.max(1));
        Self {
            configured_per_sec: configured,
            messages,
            active_seconds,
            peak_second: per_second.iter().copied().max().unwrap_or(0),
            average_per_sec: per_sec(messages, active_seconds as f64),
            steady_per_sec,
            allowance: u64::from(smurfs) * ((share / 20.0).floor() as u64).max(1),
            per_second,
        }
    }

    /// Whether the averages stay at or under the limit and no second beyond the allowance.
    pub fn within_limit(&self) -> bool {
        self.average_per_sec <= self.configured_per_sec
            && self
                .steady_per_sec
                .is_none_or(|s| s <= self.configured_per_sec)
            && self.peak_second as f64 <= self.configured_per_sec + self.allowance as f64
    }
}

/// `n / seconds`, 0 for no time.
pub fn per_sec(n: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_fills_gaps_and_averages() {
        let t = Throttle::from_histogram(50.0, 2, &[(100, 10), (101, 50), (103, 50), (104, 5)]);
        assert_eq!(t.per_second, [10, 50, 0, 50, 5]);
        assert_eq!(t.messages, 115);
        assert_eq!(t.peak_second, 50);
        assert_eq!(t.allowance, 2);
        assert!((t.average_per_sec - 23.0).abs() < 1e-9);
        assert!(t.within_limit());
        let over = Throttle::from_histogram(50.0, 2, &[(1, 60), (2, 60), (3, 60)]);
        assert!(!over.within_limit());
    }
}
