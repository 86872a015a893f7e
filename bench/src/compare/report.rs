//! `compare`'s report: one column per side (rate, CPU per 1,000 messages over all of the
//! side's processes, peak RSS per process, latency percentiles), the ratios between them and
//! the targets, printed as text and written as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::procs::ProcCost;
use crate::report::{mib, thousands, write_machine};
use crate::sys::Machine;

/// Which side a column is, as a stable key (JSON, the plot, the ratios).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SideKey {
    /// smtp-source → smtp-sink.
    Ceiling,
    /// Rendered messages injected into Postfix, relayed to the sink.
    Postfix,
    /// `mailfarm coordinator` + `mailfarm smurf` processes, durable, DKIM off.
    Mailfarm,
    /// The embedded farm (one process), durable.
    Embedded,
    /// Processes, durable, DKIM rsa-sha256 2048.
    MailfarmRsa,
    /// Processes, durable, DKIM ed25519-sha256.
    MailfarmEd25519,
    /// Rendered messages injected into Haraka, relayed to the sink by its outbound.
    Haraka,
}

impl SideKey {
    /// Line colour in the plot.
    pub fn colour(self) -> &'static str {
        match self {
            Self::Ceiling => "#888",
            Self::Postfix => "#c33",
            Self::Mailfarm => "#2a7",
            Self::Embedded => "#27c",
            Self::MailfarmRsa => "#d90",
            Self::MailfarmEd25519 => "#a4c",
            Self::Haraka => "#963",
        }
    }
}

/// Latency percentiles over every delivered message of a side.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    /// What was timed, from where to where.
    pub what: String,
    /// Messages timed.
    pub samples: usize,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    /// Exact nearest-rank percentiles of `samples_ms`; None when there are none.
    pub fn of(what: &str, mut samples_ms: Vec<f64>) -> Option<Self> {
        samples_ms.retain(|v| v.is_finite());
        if samples_ms.is_empty() {
            return None;
        }
        samples_ms.sort_by(f64::total_cmp);
        let at = |p: f64| {
            // The small epsilon keeps 99.9 % of 1,000 at rank 999 despite float rounding.
            let rank = (p * samples_ms.len() as f64 / 100.0 - 1e-9).ceil() as usize;
            samples_ms[rank.clamp(1, samples_ms.len()) - 1]
        };
        Some(Self {
            what: what.to_owned(),
            samples: samples_ms.len(),
            p50_ms: at(50.0),
            p90_ms: at(90.0),
            p99_ms: at(99.0),
            p999_ms: at(99.9),
            max_ms: at(100.0),
        })
    }
}

/// One side's column.
#[derive(Clone, Debug, Serialize)]
pub struct SideReport {
    /// Stable key.
    pub key: SideKey,
    /// What ran.
    pub name: String,
    /// Messages the sink counted for this side.
    pub messages: u64,
    /// Wall time: first hand-off until the last message was at the sink.
    pub seconds: f64,
    /// Messages per second.
    pub msgs_per_sec: f64,
    /// Messages per hour.
    pub msgs_per_hour: f64,
    /// CPU seconds of all the side's processes (the sink excluded).
    pub cpu_seconds: f64,
    /// CPU seconds per 1,000 messages.
    pub cpu_seconds_per_1000: f64,
    /// CPU seconds the sink spent receiving this side.
    pub sink_cpu_seconds: f64,
    /// CPU and peak RSS per process (or per process name).
    pub processes: Vec<ProcCost>,
    /// Hand-off to 250, when the side can tell.
    pub latency: Option<Latency>,
    /// Seconds since start and the sink's count for this side, sampled.
    pub timeline: Vec<(f64, u64)>,
    /// Anything the reader must know to read this column.
    pub note: String,
}

impl SideReport {
    /// A column from its measurements (rates and per-1,000 figures derived).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: SideKey,
        name: &str,
        messages: u64,
        seconds: f64,
        cpu_seconds: f64,
        sink_cpu_seconds: f64,
        processes: Vec<ProcCost>,
        latency: Option<Latency>,
        timeline: Vec<(f64, u64)>,
    ) -> Self {
        let rate = if seconds > 0.0 {
            messages as f64 / seconds
        } else {
            0.0
        };
        Self {
            key,
            name: name.to_owned(),
            messages,
            seconds,
            msgs_per_sec: rate,
            msgs_per_hour: rate * 3600.0,
            cpu_seconds,
            cpu_seconds_per_1000: if messages > 0 {
                cpu_seconds * 1000.0 / messages as f64
            } else {
                0.0
            },
            sink_cpu_seconds,
            processes,
            latency,
            timeline,
            note: String::new(),
        }
    }
}

/// Where DKIM signing time goes, measured with the smurf's own signer on rendered messages.
#[derive(Clone, Debug, Serialize)]
pub struct DkimCost {
    /// `rsa-sha256` (2048 bits) or `ed25519-sha256`.
    pub algorithm: String,
    /// The library that makes the signature in this build: `ring`, or `openssl` for RSA in a
    /// build with the `openssl-dkim` feature.
    pub library: String,
    /// Messages signed per measurement.
    pub messages: usize,
    /// Average body bytes hashed.
    pub body_bytes: u64,
    /// Whole signing of a full message, microseconds of CPU per message.
    pub total_us: f64,
    /// The same headers with an empty body: header canonicalisation and the signature.
    pub signature_us: f64,
    /// The difference: canonicalising and hashing the body.
    pub body_hash_us: f64,
}

/// The farm's coordination figures, from the separate-process run (DKIM off).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Coordination {
    /// Recipient data, results and template bytes on QUIC per recipient.
    pub quic_bytes_per_recipient: f64,
    /// Average rendered message.
    pub avg_message_bytes: f64,
    /// The first as a percentage of the second.
    pub quic_percent_of_message: f64,
    /// Coordinator CPU seconds per million recipients.
    pub coordinator_cpu_seconds_per_million: f64,
    /// Largest smurf peak RSS at the run's size.
    pub smurf_peak_rss_bytes: u64,
    /// Recipients of that run.
    pub recipients: u64,
    /// The `--big-recipients` run, when asked.
    pub big: Option<BigRun>,
}

/// The large campaign that shows whether smurf memory grows with campaign size.
#[derive(Clone, Debug, Serialize)]
pub struct BigRun {
    /// Recipients.
    pub recipients: u64,
    /// Messages per second.
    pub msgs_per_sec: f64,
    /// Largest smurf peak RSS.
    pub smurf_peak_rss_bytes: u64,
    /// Coordinator peak RSS.
    pub coordinator_peak_rss_bytes: u64,
    /// Coordinator CPU seconds per million recipients.
    pub coordinator_cpu_seconds_per_million: f64,
}

/// One of the targets against what this run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is compared.
    pub what: String,
    /// The target, as text.
    pub target: String,
    /// The measured value.
    pub measured: f64,
    /// Whether the target is met.
    pub met: bool,
}

/// mailfarm against a peer that is none of the targets (informational).
#[derive(Clone, Debug, Serialize)]
pub struct PeerRatio {
    /// `mailfarm / Haraka`.
    pub what: String,
    /// mailfarm's msgs/s over the peer's.
    pub msgs_per_sec: f64,
    /// The peer's CPU per message over mailfarm's (how many times less CPU mailfarm spends).
    pub cpu_per_message: f64,
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct CompareReport {
    /// The machine, with the load average at the start.
    pub machine: Machine,
    /// Load average at the end.
    pub load_average_end: String,
    /// UTC date and time of the start.
    pub started: String,
    /// `release` or `debug`.
    pub build_profile: &'static str,
    /// Messages per side.
    pub recipients: u64,
    /// SMTP sessions per side (smurfs × connections).
    pub sessions: usize,
    /// Smurfs of the mailfarm sides.
    pub smurfs: u32,
    /// Average rendered message size.
    pub message_bytes: u64,
    /// The sink's command line.
    pub sink_command: String,
    /// The columns, in run order.
    pub sides: Vec<SideReport>,
    /// Coordination figures.
    pub coordination: Coordination,
    /// DKIM micro-measurements.
    pub dkim: Vec<DkimCost>,
    /// The targets.
    pub targets: Vec<Target>,
    /// mailfarm against the optional peers (Haraka), informational.
    pub peer_ratios: Vec<PeerRatio>,
    /// Sides that did not run although not skipped, and why.
    pub not_run: Vec<String>,
    /// Checks that failed.
    pub problems: Vec<String>,
}

/// `a / b`, or 0 when `b` is not positive.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

impl CompareReport {
    /// The column of `key`, if it ran.
    pub fn side(&self, key: SideKey) -> Option<&SideReport> {
        self.sides.iter().find(|s| s.key == key)
    }

    /// mailfarm against the optional peers that ran.
    pub fn compute_peer_ratios(&self) -> Vec<PeerRatio> {
        let (Some(mf), Some(h)) = (self.side(SideKey::Mailfarm), self.side(SideKey::Haraka)) else {
            return Vec::new();
        };
        vec![PeerRatio {
            what: "mailfarm / Haraka".into(),
            msgs_per_sec: ratio(mf.msgs_per_sec, h.msgs_per_sec),
            cpu_per_message: ratio(h.cpu_seconds_per_1000, mf.cpu_seconds_per_1000),
        }]
    }

    /// The targets, from the columns that ran.
    pub fn compute_targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        let (Some(mf), ceiling, postfix) = (
            self.side(SideKey::Mailfarm),
            self.side(SideKey::Ceiling),
            self.side(SideKey::Postfix),
        ) else {
            return out;
        };
        let mut push = |what: &str, target: &str, measured: f64, met: bool| {
            out.push(Target {
                what: what.into(),
                target: target.into(),
                measured,
                met,
            })
        };
        if let Some(c) = ceiling {
            let r = ratio(mf.msgs_per_sec, c.msgs_per_sec);
            push("mailfarm msgs/s / raw ceiling", ">= 0.8", r, r >= 0.8);
        }
        if let Some(p) = postfix {
            let r = ratio(mf.msgs_per_sec, p.msgs_per_sec);
            push("mailfarm msgs/s / Postfix pipeline", ">= 5", r, r >= 5.0);
            let c = ratio(mf.cpu_seconds_per_1000, p.cpu_seconds_per_1000);
            push(
                "mailfarm CPU per message / Postfix's",
                "<= 0.1",
                c,
                c > 0.0 && c <= 0.1,
            );
            if let Some(rsa) = self.side(SideKey::MailfarmRsa) {
                let r = ratio(rsa.msgs_per_sec, p.msgs_per_sec);
                push(
                    "mailfarm with DKIM rsa-sha256 / Postfix (unsigned)",
                    ">= 3",
                    r,
                    r >= 3.0,
                );
            }
        }
        push(
            "mailfarm CPU ms per message (KumoMTA: 0.77 default spool)",
            "<= 0.26 (1/3 of KumoMTA's)",
            mf.cpu_seconds_per_1000,
            mf.cpu_seconds_per_1000 <= 0.77 / 3.0,
        );
        push(
            "mailfarm msgs/s (KumoMTA: 1,805 here)",
            ">= 3,610 (2 x KumoMTA)",
            mf.msgs_per_sec,
            mf.msgs_per_sec >= 2.0 * 1805.0,
        );
        let q = self.coordination.quic_percent_of_message;
        push(
            "QUIC bytes per recipient, % of message",
            "<= 1 %",
            q,
            q <= 1.0,
        );
        out
    }

    /// The report as text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = self.write_text(&mut out);
        out
    }

    fn write_text(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "mailfarm-bench compare: peers side by side, one run")?;
        writeln!(out, "===================================================")?;
        write_machine(out, &self.machine, self.build_profile)?;
        writeln!(
            out,
            "run         started {} UTC; load average at the end {}",
            self.started, self.load_average_end
        )?;
        writeln!(
            out,
            "conditions  {} messages per side, {} B average, {} SMTP sessions per side, {} smurfs",
            thousands(self.recipients as f64),
            thousands(self.message_bytes as f64),
            self.sessions,
            self.smurfs
        )?;
        writeln!(out, "sink        {}", self.sink_command)?;
        writeln!(out)?;
        writeln!(
            out,
            "{:<34}{:>8}{:>9}{:>8}{:>10}{:>9}{:>9}{:>9}{:>9}",
            "side", "msgs/s", "M/hour", "CPU s", "CPU s/1k", "p50 ms", "p99 ms", "sink s", "secs"
        )?;
        for s in &self.sides {
            let (p50, p99) = s.latency.as_ref().map_or(("-".into(), "-".into()), |l| {
                (format!("{:.1}", l.p50_ms), format!("{:.1}", l.p99_ms))
            });
            writeln!(
                out,
                "{:<34}{:>8}{:>9.2}{:>8.2}{:>10.3}{:>9}{:>9}{:>9.2}{:>9.2}",
                s.name,
                thousands(s.msgs_per_sec),
                s.msgs_per_hour / 1e6,
                s.cpu_seconds,
                s.cpu_seconds_per_1000,
                p50,
                p99,
                s.sink_cpu_seconds,
                s.seconds
            )?;
        }
        writeln!(out)?;
        writeln!(out, "peak RSS per process")?;
        for s in &self.sides {
            let procs: Vec<String> = s
                .processes
                .iter()
                .filter(|p| p.peak_rss_bytes > 0)
                .map(|p| {
                    let n = if p.processes > 1 {
                        format!(" x{}", p.processes)
                    } else {
                        String::new()
                    };
                    format!("{}{n} {}", p.name, mib(p.peak_rss_bytes))
                })
                .collect();
            writeln!(out, "  {:<32}{}", s.name, procs.join(", "))?;
        }
        writeln!(out)?;
        writeln!(out, "latency (hand-off to 250)")?;
        for s in &self.sides {
            match &s.latency {
                Some(l) => writeln!(
                    out,
                    "  {:<32}p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1} ms ({} msgs; {})",
                    s.name, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.samples, l.what
                )?,
                None => writeln!(out, "  {:<32}-  {}", s.name, s.note)?,
            }
        }
        let c = &self.coordination;
        writeln!(out)?;
        writeln!(
            out,
            "QUIC        {:.0} B per recipient for a {} B message: {:.2} %",
            c.quic_bytes_per_recipient,
            thousands(c.avg_message_bytes),
            c.quic_percent_of_message
        )?;
        writeln!(
            out,
            "coordinator {:.1} CPU seconds per million recipients",
            c.coordinator_cpu_seconds_per_million
        )?;
        writeln!(
            out,
            "smurf RSS   {} at {} recipients",
            mib(c.smurf_peak_rss_bytes),
            thousands(c.recipients as f64)
        )?;
        if let Some(b) = &c.big {
            writeln!(
                out,
                "            {} at {} recipients ({} msgs/s; coordinator {} peak, {:.1} CPU s per million)",
                mib(b.smurf_peak_rss_bytes),
                thousands(b.recipients as f64),
                thousands(b.msgs_per_sec),
                mib(b.coordinator_peak_rss_bytes),
                b.coordinator_cpu_seconds_per_million
            )?;
        }
        if !self.dkim.is_empty() {
            writeln!(out)?;
            writeln!(
                out,
                "DKIM signing, CPU per message (the smurf's signer, one thread)"
            )?;
            for d in &self.dkim {
                writeln!(
                    out,
                    "  {:<16} {:<8} total {:>7.1} us = signature+headers {:>7.1} us + body hash {:>6.1} us ({} B body)",
                    d.algorithm,
                    d.library,
                    d.total_us,
                    d.signature_us,
                    d.body_hash_us,
                    thousands(d.body_bytes as f64)
                )?;
            }
        }
        writeln!(out)?;
        writeln!(out, "targets (issue 12)")?;
        for t in &self.targets {
            writeln!(
                out,
                "  {:<56}{:>10.3}  target {:<26}{}",
                t.what,
                t.measured,
                t.target,
                if t.met { "met" } else { "NOT met" }
            )?;
        }
        for r in &self.peer_ratios {
            writeln!(
                out,
                "  {:<56}{:>10.3}  msgs/s; {:.1} x less CPU per message (informational)",
                r.what, r.msgs_per_sec, r.cpu_per_message
            )?;
        }
        writeln!(out)?;
        for n in &self.not_run {
            writeln!(out, "not run: {n}")?;
        }
        for p in &self.problems {
            writeln!(out, "PROBLEM: {p}")?;
        }
        if self.problems.is_empty() {
            writeln!(
                out,
                "RESULT: OK (every side delivered every message; sink counts agree)"
            )
        } else {
            writeln!(out, "RESULT: FAILED")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(key: SideKey, messages: u64, seconds: f64, cpu: f64) -> SideReport {
        SideReport::new(key, "x", messages, seconds, cpu, 0.0, vec![], None, vec![])
    }

    #[test]
    fn percentiles_are_exact_nearest_rank() {
        let l = Latency::of("t", (1..=1000).map(f64::from).collect()).expect("samples");
        assert_eq!(
            (l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms),
            (500.0, 900.0, 990.0, 999.0, 1000.0)
        );
        assert!(Latency::of("t", vec![]).is_none());
        let one = Latency::of("t", vec![7.0]).expect("one");
        assert_eq!((one.p50_ms, one.max_ms), (7.0, 7.0));
    }

    #[test]
    fn rates_ratios_and_targets_follow_the_columns() {
        let mf = side(SideKey::Mailfarm, 20_000, 10.0, 4.0);
        assert_eq!(mf.msgs_per_sec, 2000.0);
        assert_eq!(mf.msgs_per_hour, 7_200_000.0);
        assert!((mf.cpu_seconds_per_1000 - 0.2).abs() < 1e-12);
        let report = CompareReport {
            machine: Machine::detect(),
            load_average_end: String::new(),
            started: String::new(),
            build_profile: "release",
            recipients: 20_000,
            sessions: 16,
            smurfs: 2,
            message_bytes: 44_000,
            sink_command: String::new(),
            sides: vec![
                side(SideKey::Ceiling, 20_000, 8.0, 1.0),
                side(SideKey::Postfix, 20_000, 50.0, 60.0),
                mf,
            ],
            coordination: Coordination {
                quic_percent_of_message: 0.3,
                ..Coordination::default()
            },
            dkim: vec![],
            targets: vec![],
            peer_ratios: vec![],
            not_run: vec![],
            problems: vec![],
        };
        let targets = report.compute_targets();
        let get = |what: &str| {
            targets
                .iter()
                .find(|t| t.what.starts_with(what))
                .unwrap_or_else(|| panic!("{what} missing"))
        };
        let ceiling = get("mailfarm msgs/s / raw ceiling");
        assert!((ceiling.measured - 0.8).abs() < 1e-12 && ceiling.met);
        let postfix = get("mailfarm msgs/s / Postfix");
        assert!((postfix.measured - 5.0).abs() < 1e-12 && postfix.met);
        let cpu = get("mailfarm CPU per message");
        assert!((cpu.measured - 0.2 / 3.0).abs() < 1e-12 && cpu.met);
        assert!(get("QUIC").met);
        assert!(!get("mailfarm msgs/s (KumoMTA").met);
        assert_eq!(ratio(1.0, 0.0), 0.0);
        assert!(report.compute_peer_ratios().is_empty());
        let mut with_haraka = report;
        with_haraka
            .sides
            .push(side(SideKey::Haraka, 20_000, 40.0, 30.0));
        let peers = with_haraka.compute_peer_ratios();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].what, "mailfarm / Haraka");
        assert!((peers[0].msgs_per_sec - 4.0).abs() < 1e-12);
        assert!((peers[0].cpu_per_message - 7.5).abs() < 1e-12);
        with_haraka.peer_ratios = peers;
        with_haraka.not_run = vec!["Haraka: not found".into()];
        let text = with_haraka.text();
        assert!(text.contains("mailfarm / Haraka"), "{text}");
        assert!(text.contains("not run: Haraka: not found"), "{text}");
    }
}
