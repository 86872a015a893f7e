//! The benchmark report: one serialisable structure, printed as a text table or written as
//! JSON.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::sys::Machine;

/// Everything a run measured, under the conditions it ran in.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// `release` or `debug`.
    pub build_profile: &'static str,
    /// What was run.
    pub conditions: Conditions,
    /// mailfarm's side of the table.
    pub mailfarm: Side,
    /// smtp-source's side of the table.
    pub smtp_source: Side,
    /// What only mailfarm has: its coordination costs.
    pub coordination: Coordination,
    /// Checks that failed (empty when the run is valid).
    pub problems: Vec<String>,
}

/// The conditions of a run.
#[derive(Debug, Serialize)]
pub struct Conditions {
    /// Messages each side sends (one recipient each).
    pub recipients: u64,
    /// Smurfs in the embedded farm.
    pub smurfs: u32,
    /// SMTP connections per smurf.
    pub connections_per_smurf: u16,
    /// Concurrent SMTP sessions on each side.
    pub smtp_sessions: usize,
    /// Credit window of each smurf.
    pub window: u32,
    /// Coordinator batch size.
    pub batch_size: usize,
    /// Campaign folder whose settings and templates were used.
    pub campaign_dir: String,
    /// Bytes of template sources (subject, text and HTML).
    pub template_source_bytes: u64,
    /// Bytes of the generated recipient CSV.
    pub recipient_csv_bytes: u64,
    /// Average size of a message mailfarm rendered.
    pub mailfarm_avg_message_bytes: u64,
    /// Size of smtp-source's message (headers estimated).
    pub smtp_source_message_bytes: u64,
    /// The receiving sink's command line.
    pub sink_command: String,
    /// smtp-source's command line.
    pub source_command: String,
}

/// One column of the comparison.
#[derive(Debug, Serialize)]
pub struct Side {
    /// Messages the sink counted during this side's run.
    pub messages: u64,
    /// Wall time.
    pub seconds: f64,
    /// Messages per second.
    pub msgs_per_sec: f64,
    /// Messages per hour.
    pub msgs_per_hour: f64,
    /// CPU seconds of the sender (mailfarm: this whole process).
    pub cpu_seconds: f64,
    /// Peak resident set size of the sender.
    pub peak_rss_bytes: u64,
    /// CPU seconds smtp-sink spent during this side's run.
    pub sink_cpu_seconds: f64,
}

impl Side {
    /// A column from the sink count, wall time, CPU time and memory.
    pub fn new(messages: u64, seconds: f64, cpu_seconds: f64, rss: u64, sink_cpu: f64) -> Self {
        let rate = if seconds > 0.0 {
            messages as f64 / seconds
        } else {
            0.0
        };
        Self {
            messages,
            seconds,
            msgs_per_sec: rate,
            msgs_per_hour: rate * 3600.0,
            cpu_seconds,
            peak_rss_bytes: rss,
            sink_cpu_seconds: sink_cpu,
        }
    }
}

/// mailfarm's coordination costs.
#[derive(Debug, Serialize)]
pub struct Coordination {
    /// Recipients delivered (2xx from the sink).
    pub delivered: u64,
    /// Recipients deferred.
    pub deferred: u64,
    /// Recipients failed.
    pub failed: u64,
    /// Recipient data and results on QUIC, frames included.
    pub wire_bytes: u64,
    /// Template bundles on QUIC.
    pub template_bytes: u64,
    /// Template shipments (one per smurf that served the campaign).
    pub template_shipments: u64,
    /// (wire + template bytes) per processed recipient.
    pub quic_bytes_per_recipient: f64,
    /// Rendered message bytes per processed recipient.
    pub rendered_bytes_per_recipient: f64,
    /// Time in the launch call (template compile, streaming CSV ingest; sending overlaps).
    pub ingest_seconds: f64,
    /// Resident set size right before the launch.
    pub rss_before_launch_bytes: u64,
}

impl Report {
    /// The report as text.
    pub fn text(&self) -> String {
        text_of(|out| self.write_text(out))
    }

    /// Writes the text report into `out`.
    fn write_text(&self, out: &mut String) -> std::fmt::Result {
        let (m, c, f, s, q) = (
            &self.machine,
            &self.conditions,
            &self.mailfarm,
            &self.smtp_source,
            &self.coordination,
        );
        write_heading(
            out,
            "mailfarm-bench throughput: mailfarm vs Postfix smtp-source",
            m,
            self.build_profile,
        )?;
        writeln!(
            out,
            "conditions  {} messages, 1 recipient each; {} smurfs x {} SMTP connections = {} sessions",
            thousands(c.recipients as f64),
            c.smurfs,
            c.connections_per_smurf,
            c.smtp_sessions
        )?;
        writeln!(
            out,
            "            smurf window {}, batch {}",
            c.window, c.batch_size
        )?;
        writeln!(
            out,
            "            templates {} B (subject+text+HTML) from {}; recipient CSV {} B",
            thousands(c.template_source_bytes as f64),
            c.campaign_dir,
            thousands(c.recipient_csv_bytes as f64)
        )?;
        writeln!(
            out,
            "            message size: mailfarm {} B avg rendered, smtp-source {} B",
            thousands(c.mailfarm_avg_message_bytes as f64),
            thousands(c.smtp_source_message_bytes as f64)
        )?;
        writeln!(out, "sink        {}", c.sink_command)?;
        writeln!(out, "peer        {}", c.source_command)?;
        writeln!(out)?;
        writeln!(out, "{:<26}{:>16}{:>16}", "", "mailfarm", "smtp-source")?;
        let row = |out: &mut String, name: &str, a: String, b: String| {
            writeln!(out, "{name:<26}{a:>16}{b:>16}")
        };
        row(
            out,
            "messages (sink count)",
            thousands(f.messages as f64),
            thousands(s.messages as f64),
        )?;
        row(
            out,
            "seconds",
            format!("{:.3}", f.seconds),
            format!("{:.3}", s.seconds),
        )?;
        row(
            out,
            "msgs/s",
            thousands(f.msgs_per_sec),
            thousands(s.msgs_per_sec),
        )?;
        row(
            out,
            "msgs/hour",
            thousands(f.msgs_per_hour),
            thousands(s.msgs_per_hour),
        )?;
        row(
            out,
            "sender CPU seconds",
            format!("{:.2}", f.cpu_seconds),
            format!("{:.2}", s.cpu_seconds),
        )?;
        row(
            out,
            "sender peak RSS",
            mib(f.peak_rss_bytes),
            mib(s.peak_rss_bytes),
        )?;
        row(
            out,
            "smtp-sink CPU seconds",
            format!("{:.2}", f.sink_cpu_seconds),
            format!("{:.2}", s.sink_cpu_seconds),
        )?;
        let busy = |side: &Side| {
            if side.seconds > 0.0 {
                100.0 * side.sink_cpu_seconds / side.seconds
            } else {
                0.0
            }
        };
        row(
            out,
            "smtp-sink busy (1 core)",
            format!("{:.0}%", busy(f)),
            format!("{:.0}%", busy(s)),
        )?;
        row(
            out,
            "per-message rendering",
            "yes".into(),
            "no (fixed)".into(),
        )?;
        row(
            out,
            "SMTP",
            "ESMTP+PIPELINING".into(),
            "HELO, lockstep".into(),
        )?;
        if s.msgs_per_sec > 0.0 {
            writeln!(
                out,
                "mailfarm rate / smtp-source rate: {:.2}",
                f.msgs_per_sec / s.msgs_per_sec
            )?;
        }
        for (name, side) in [("mailfarm", f), ("smtp-source", s)] {
            if busy(side) >= 90.0 {
                writeln!(
                    out,
                    "note: smtp-sink (one process) was saturated during the {name} run: that \
                     column is bounded by the receiver, not the sender"
                )?;
            }
        }
        writeln!(out)?;
        writeln!(
            out,
            "mailfarm coordination (QUIC + mTLS, in-process loopback)"
        )?;
        writeln!(
            out,
            "  QUIC bytes / recipient      {:>10.1} B  ((recipient data+results {} B + templates {} B) / results)",
            q.quic_bytes_per_recipient,
            thousands(q.wire_bytes as f64),
            thousands(q.template_bytes as f64)
        )?;
        let share = if q.rendered_bytes_per_recipient > 0.0 {
            100.0 * q.quic_bytes_per_recipient / q.rendered_bytes_per_recipient
        } else {
            0.0
        };
        writeln!(
            out,
            "  rendered bytes / recipient  {:>10} B  (QUIC carries {share:.2}% of the SMTP payload)",
            thousands(q.rendered_bytes_per_recipient)
        )?;
        writeln!(
            out,
            "  template shipments          {:>10}",
            q.template_shipments
        )?;
        writeln!(
            out,
            "  outcomes                    {:>10} delivered, {} deferred, {} failed",
            q.delivered, q.deferred, q.failed
        )?;
        writeln!(
            out,
            "  launch call (compile+ingest) {:>9.3} s (included in seconds; sending overlaps it)",
            q.ingest_seconds
        )?;
        writeln!(
            out,
            "  RSS before launch           {:>12}",
            mib(q.rss_before_launch_bytes)
        )?;
        writeln!(
            out,
            "  (mailfarm CPU and RSS are the whole bench process: coordinator + smurfs)"
        )?;
        writeln!(out)?;
        write_verdict(
            out,
            &self.problems,
            "both sides delivered every message; sink counts agree",
        )
    }
}

/// Writes any report as pretty JSON.
pub fn write_json(report: &impl Serialize, path: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report).context("encoding the report")?;
    std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
}

/// A report's text, from its `write_text`: the one place that owns the string the writers
/// fill (writing into a `String` cannot fail).
pub fn text_of(write: impl FnOnce(&mut String) -> std::fmt::Result) -> String {
    let mut out = String::new();
    let _ = write(&mut out);
    out
}

/// The foot every text report ends with: one `PROBLEM:` line per failed check, then
/// `RESULT: OK (what was checked)` or `RESULT: FAILED`.
pub fn write_verdict(out: &mut String, problems: &[String], checked: &str) -> std::fmt::Result {
    for problem in problems {
        writeln!(out, "PROBLEM: {problem}")?;
    }
    if problems.is_empty() {
        writeln!(out, "RESULT: OK ({checked})")
    } else {
        writeln!(out, "RESULT: FAILED")
    }
}

/// The head every text report starts with: its title, underlined, then the machine it ran on.
pub fn write_heading(
    out: &mut String,
    title: &str,
    m: &Machine,
    build_profile: &str,
) -> std::fmt::Result {
    writeln!(out, "{title}\n{}", "=".repeat(title.chars().count()))?;
    write_machine(out, m, build_profile)
}

/// The machine and build lines every report starts with.
pub fn write_machine(out: &mut String, m: &Machine, build_profile: &str) -> std::fmt::Result {
    if build_profile == "debug" {
        writeln!(
            out,
            "!!! DEBUG BUILD: numbers are meaningless; use --release !!!"
        )?;
    }
    writeln!(out, "machine     {}", m.cpu_model)?;
    writeln!(
        out,
        "            {} CPUs ({} usable), {:.1} GiB RAM, kernel {}",
        m.cpus_online,
        m.cpus_usable,
        m.ram_bytes as f64 / (1u64 << 30) as f64,
        m.kernel
    )?;
    writeln!(
        out,
        "            load average at start {} (other work shares these CPUs)",
        m.load_average
    )?;
    writeln!(out, "build       {build_profile}")
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// A number rounded to an integer, with thousands separators.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(14_054_400.0), "14,054,400");
    }
}
