//! The `mx` benchmark's report as text, in the style of the others: machine, conditions, the
//! two modes side by side, then the per-host counts and throttled.test's figures.

use std::fmt::Write as _;

use crate::mx_report::MxReport;
use crate::mx_zone::THROTTLED;
use crate::report::{mib, text_of, thousands, write_heading, write_verdict};

/// "yes" or "NO".
fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "NO"
    }
}

impl MxReport {
    /// The report as text.
    pub fn text(&self) -> String {
        text_of(|out| self.write_text(out))
    }

    /// Writes the text report into `out`.
    fn write_text(&self, out: &mut String) -> std::fmt::Result {
        let (c, m, r, t) = (&self.conditions, &self.mx, &self.relay, &self.throttle);
        let title = "mailfarm-bench mx: MX routing with farm-wide shaping, vs relay mode";
        write_heading(out, title, &self.machine, self.build_profile)?;
        writeln!(
            out,
            "conditions  {} messages over {} domains d0..d{}.test ({} sites) + {} at {THROTTLED}, \
             mixed evenly; 1 recipient each",
            thousands(c.recipients as f64),
            c.domains,
            c.domains.saturating_sub(1),
            c.sites,
            thousands(c.throttled_recipients as f64)
        )?;
        writeln!(
            out,
            "            {} smurfs, window {}, batch {}; {} B avg rendered message; templates \
             {} B from {}",
            c.smurfs,
            c.window,
            c.batch_size,
            thousands(c.avg_message_bytes as f64),
            thousands(c.template_source_bytes as f64),
            c.campaign_dir
        )?;
        writeln!(
            out,
            "            MX run first: MX hosts on 127.0.0.2-5, domains in alternate blocks of 4 \
             share names mxN.shared.test or have their own; <= {} sessions per site farm-wide",
            c.site_connections
        )?;
        writeln!(
            out,
            "            relay run second: the same {} messages, {} smurfs x {} connections to \
             one sink {}",
            thousands(c.recipients as f64),
            c.smurfs,
            c.relay_connections_per_smurf,
            c.relay_sink
        )?;
        writeln!(
            out,
            "            receivers: in-process fault sinks (accept all, store nothing); their CPU \
             is inside the process figures"
        )?;
        writeln!(out, "dns         {}", c.dns)?;
        for (i, line) in c.shaping.lines().filter(|l| !l.is_empty()).enumerate() {
            let head = if i == 0 { "shaping" } else { "" };
            writeln!(out, "{head:<12}{line}")?;
        }
        writeln!(out)?;
        let head = format!("{} domains", c.domains);
        writeln!(
            out,
            "{head:<34}{:>16}{:>16}",
            "MX routing", "relay (1 sink)"
        )?;
        let mut row = |name: &str, a: String, b: String| writeln!(out, "{name:<34}{a:>16}{b:>16}");
        row(
            "messages (sink count)",
            thousands(m.messages as f64),
            thousands(r.messages as f64),
        )?;
        row(
            "seconds (launch to last accepted)",
            format!("{:.3}", m.seconds),
            format!("{:.3}", r.seconds),
        )?;
        row(
            "msgs/s",
            thousands(m.msgs_per_sec),
            thousands(r.msgs_per_sec),
        )?;
        row(
            "msgs/hour",
            thousands(m.msgs_per_hour),
            thousands(r.msgs_per_hour),
        )?;
        row(
            "CPU seconds (process)",
            format!("{:.2}", m.cpu_seconds),
            format!("{:.2}", r.cpu_seconds),
        )?;
        row(
            "peak RSS (VmHWM)",
            mib(m.peak_rss_bytes),
            mib(r.peak_rss_bytes),
        )?;
        row(
            "sessions (sum of sink peaks)",
            m.peak_sessions.to_string(),
            r.peak_sessions.to_string(),
        )?;
        if r.msgs_per_sec > 0.0 {
            writeln!(
                out,
                "MX routing cost: MX msgs/s / relay msgs/s = {:.2}",
                m.msgs_per_sec / r.msgs_per_sec
            )?;
        }
        let o = &self.overall;
        writeln!(
            out,
            "overall MX run ({THROTTLED} included): {} messages in {:.3} s = {} msgs/s, {} \
             msgs/hour (campaign clock {:.3} s)",
            thousands(o.messages as f64),
            o.seconds,
            thousands(o.msgs_per_sec),
            thousands(o.msgs_per_hour),
            o.campaign_seconds
        )?;
        writeln!(out)?;
        writeln!(out, "per host (MX run)")?;
        writeln!(
            out,
            "  {:<17}{:>8}{:>10}{:>10}{:>10}  MX host names",
            "address", "domains", "expected", "accepted", "peak ses"
        )?;
        for h in &self.hosts {
            writeln!(
                out,
                "  {:<17}{:>8}{:>10}{:>10}{:>10}  {}",
                h.addr.to_string(),
                h.domains,
                thousands(h.expected as f64),
                thousands(h.accepted as f64),
                h.peak_sessions,
                h.mx_hosts
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "{THROTTLED}: farm-wide limit vs what its sink counted per second"
        )?;
        writeln!(
            out,
            "  configured            {:>8.1} msgs/s",
            t.configured_per_sec
        )?;
        writeln!(
            out,
            "  peak second           {:>8} msgs   (<= configured: {}; allowance +{} = one \
             limiter burst per smurf)",
            t.peak_second,
            yes(t.peak_second as f64 <= t.configured_per_sec),
            t.allowance
        )?;
        writeln!(
            out,
            "  average, active secs  {:>8.1} msgs/s ({} messages over {} s)",
            t.average_per_sec,
            thousands(t.messages as f64),
            t.active_seconds
        )?;
        if let Some(steady) = t.steady_per_sec {
            writeln!(
                out,
                "  average, full secs    {steady:>8.1} msgs/s (first and last second left out)"
            )?;
        }
        let seconds: Vec<String> = t.per_second.iter().map(u64::to_string).collect();
        writeln!(out, "  per second            {}", seconds.join(" "))?;
        writeln!(out, "  measured <= configured: {}", yes(t.within_limit()))?;
        writeln!(out)?;
        write_verdict(
            out,
            &self.problems,
            "every recipient delivered exactly once, to its domain's MX host; \
                 sink counts agree with the farm's",
        )
    }
}
