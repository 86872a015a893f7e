//! Progress display while a campaign runs, and the closing summary.
//!
//! On a terminal: an indicatif bar with live counters. Otherwise (logs, CI): one plain line
//! every two seconds, so output stays greppable.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use mailfarm_protocol::CampaignCounters;

/// Follows a campaign's counters.
pub struct Follower {
    bar: Option<ProgressBar>,
    last_line: Instant,
}

impl Follower {
    /// A follower for a campaign of `total` recipients.
    pub fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} {per_sec} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            last_line: Instant::now(),
        }
    }

    /// Shows new counters.
    pub fn update(&mut self, c: &CampaignCounters) {
        let done = c.delivered + c.deferred + c.failed;
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(format!(
                    "sent {} deferred {} failed {} in-flight {}",
                    c.delivered, c.deferred, c.failed, c.in_flight
                ));
            }
            None => {
                if self.last_line.elapsed() >= Duration::from_secs(2) {
                    self.last_line = Instant::now();
                    eprintln!(
                        "progress {done}/{}: sent {} deferred {} failed {} in-flight {} ({:.1}s)",
                        c.total,
                        c.delivered,
                        c.deferred,
                        c.failed,
                        c.in_flight,
                        c.elapsed_ms as f64 / 1000.0
                    );
                }
            }
        }
    }

    /// Prints a note above the bar (or as plain lines without a terminal).
    pub fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// Clears the bar.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Prints the end-of-campaign summary to stdout.
pub fn print_summary(c: &CampaignCounters, reasons: &[(String, u64)]) {
    let secs = (c.elapsed_ms as f64 / 1000.0).max(0.001);
    let done = c.delivered + c.deferred + c.failed;
    let rate = done as f64 / secs;
    println!("campaign {}: finished", c.id);
    println!("  sent       {}", c.delivered);
    println!("  deferred   {}", c.deferred);
    println!("  failed     {}", c.failed);
    if c.rejected_rows > 0 {
        println!("  rejected   {} rows at ingest", c.rejected_rows);
    }
    println!("  elapsed    {secs:.2} s");
    println!(
        "  rate       {rate:.0} messages/s ({:.0} messages/hour)",
        rate * 3600.0
    );
    if done > 0 {
        let wire = (c.wire_bytes + c.template_bytes) as f64 / done as f64;
        let rendered = c.rendered_bytes as f64 / done as f64;
        println!(
            "  wire       {wire:.0} QUIC payload bytes per recipient for {rendered:.0}-byte messages \
             (template shipped {} times, {} bytes each)",
            c.template_shipments,
            c.template_bytes.checked_div(c.template_shipments).unwrap_or(0)
        );
    }
    let mut text = String::new();
    push_reasons(&mut text, "most frequent non-delivery reasons", reasons);
    if let Some(lines) = text.strip_prefix('\n') {
        println!("{lines}");
    }
}

/// When the next retry is, relative to `now_ms` and as a UTC time: `in 4m 59s (at
/// 2026-12-02T01:57:03Z)`, or `due now`.
pub fn next_retry_text(next_retry_ms: u64, now_ms: u64) -> String {
    if next_retry_ms <= now_ms {
        return "due now".into();
    }
    let wait = Duration::from_secs((next_retry_ms - now_ms).div_ceil(1000));
    let at = std::time::UNIX_EPOCH + Duration::from_millis(next_retry_ms);
    format!(
        "in {} (at {})",
        humantime::format_duration(wait),
        humantime::format_rfc3339_seconds(at)
    )
}

/// Where a campaign stands, for the notes of a `--local` run: its counters, its most frequent
/// non-delivery reasons and its next retry time, seen at `now_ms`.
pub struct Standing<'a> {
    /// The campaign's counters.
    pub counters: &'a CampaignCounters,
    /// Most frequent non-delivery reasons, with their counts.
    pub reasons: &'a [(String, u64)],
    /// When the next retry is due (ms since the epoch), if one is scheduled.
    pub next_retry_ms: Option<u64>,
    /// Now, in ms since the epoch.
    pub now_ms: u64,
}

impl Standing<'_> {
    /// What a campaign that only waits for retries is waiting for: how many recipients are
    /// deferred, why, and when the next retry is.
    pub fn waiting_text(&self) -> String {
        let mut text = format!(
            "waiting: {} deferred, nothing in flight; next retry {}",
            self.counters.deferred,
            self.next_retry_ms.map_or_else(
                || "not scheduled".into(),
                |t| next_retry_text(t, self.now_ms)
            )
        );
        push_reasons(&mut text, "why", self.reasons);
        text
    }

    /// Where an interrupted campaign stands (Ctrl-C on a `--local` run).
    pub fn interrupted_text(&self) -> String {
        let c = self.counters;
        let mut text = format!(
            "interrupted: campaign {} stands at {} of {} recipients: sent {}, deferred {}, \
             failed {}, in flight {}, queued {}",
            c.id,
            c.delivered + c.deferred + c.failed + c.in_flight + c.queued,
            c.total,
            c.delivered,
            c.deferred,
            c.failed,
            c.in_flight,
            c.queued
        );
        if let Some(next) = self.next_retry_ms {
            text.push_str(&format!(
                "\n  next retry was {}",
                next_retry_text(next, self.now_ms)
            ));
        }
        push_reasons(
            &mut text,
            "most frequent non-delivery reasons",
            self.reasons,
        );
        let unsent = c.total.saturating_sub(c.delivered + c.failed);
        text.push_str(&format!(
            "\n  a --local farm keeps no state: the {unsent} recipients not delivered or failed \
             will not be sent"
        ));
        text
    }
}

/// Appends `title:` and one `count  reason` line per reason (nothing when there are none).
fn push_reasons(text: &mut String, title: &str, reasons: &[(String, u64)]) {
    if reasons.is_empty() {
        return;
    }
    text.push_str(&format!("\n  {title}:"));
    for (reason, count) in reasons {
        text.push_str(&format!("\n    {count:>8}  {reason}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deferred(n: u64) -> CampaignCounters {
        CampaignCounters {
            id: "c".into(),
            total: n,
            deferred: n,
            ..Default::default()
        }
    }

    fn waiting(
        c: &CampaignCounters,
        reasons: &[(String, u64)],
        next_retry_ms: Option<u64>,
        now_ms: u64,
    ) -> String {
        Standing {
            counters: c,
            reasons,
            next_retry_ms,
            now_ms,
        }
        .waiting_text()
    }

    #[test]
    fn the_waiting_note_says_what_why_and_when() {
        let reasons = vec![("451 4.3.0 try later".to_owned(), 6)];
        let now = 1_796_000_000_000;
        let text = waiting(&deferred(6), &reasons, Some(now + 299_200), now);
        assert!(text.starts_with("waiting: 6 deferred"), "{text}");
        assert!(
            text.contains("next retry in 4m 60s") || text.contains("next retry in 5m"),
            "{text}"
        );
        assert!(text.contains("(at 20"), "{text}");
        assert!(text.contains("       6  451 4.3.0 try later"), "{text}");
        assert!(waiting(&deferred(1), &[], Some(now - 5), now).contains("due now"));
    }

    #[test]
    fn the_standing_says_where_things_are() {
        let mut c = deferred(6);
        c.total = 10;
        c.delivered = 4;
        let text = Standing {
            counters: &c,
            reasons: &[],
            next_retry_ms: None,
            now_ms: 0,
        }
        .interrupted_text();
        assert!(
            text.starts_with(
                "interrupted: campaign c stands at 10 of 10 recipients: sent 4, deferred 6"
            ),
            "{text}"
        );
        assert!(text.contains("the 6 recipients not delivered"), "{text}");
    }
}
