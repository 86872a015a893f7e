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
    if !reasons.is_empty() {
        println!("  most frequent non-delivery reasons:");
        for (reason, count) in reasons {
            println!("    {count:>8}  {reason}");
        }
    }
}
