//! Progress display while a campaign runs, and the closing summary.
//!
//! On a terminal: an indicatif bar with live counters. Otherwise (logs, CI): one plain line
//! every two seconds, so output stays greppable. With `--json` (for scripts and tests): one
//! JSON object per line on stdout, each a campaign's counters (the shape of `campaign status
//! --json`) tagged with an `event`: `launched`, `progress` (every second), `waiting`,
//! `interrupted`, and last the `summary`. The human text and the JSON are two renderings of the
//! same figures ([`Figures`]), so they cannot disagree.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use mailfarm_protocol::CampaignCounters;
use serde_json::{json, Value};

/// How often a `progress` event goes out with `--json`.
const JSON_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How progress is shown.
enum Display {
    /// An indicatif bar on the terminal (stderr).
    Bar(ProgressBar),
    /// A plain line on stderr every two seconds.
    Lines,
    /// A `progress` JSON event on stdout every second.
    Json,
}

/// Follows a campaign's counters.
pub struct Follower {
    display: Display,
    last_line: Option<Instant>,
}

impl Follower {
    /// A follower for a campaign of `total` recipients; with `json`, progress goes out as JSON
    /// events on stdout (see the module comment).
    pub fn new(total: u64, json: bool) -> Self {
        let display = if json {
            Display::Json
        } else if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} {per_sec} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            Display::Bar(bar)
        } else {
            Display::Lines
        };
        Self {
            display,
            last_line: None,
        }
    }

    /// Whether this follower speaks JSON.
    pub fn json(&self) -> bool {
        matches!(self.display, Display::Json)
    }

    /// Whether `every` has passed since the last line (the first line waits `every` for
    /// people, not for scripts); notes the time when it has.
    fn due(&mut self, every: Duration) -> bool {
        let now = Instant::now();
        let due = match self.last_line {
            None => {
                self.last_line = Some(now);
                self.json()
            }
            Some(last) => now.duration_since(last) >= every,
        };
        if due {
            self.last_line = Some(now);
        }
        due
    }

    /// Shows new counters.
    pub fn update(&mut self, c: &CampaignCounters) -> anyhow::Result<()> {
        let done = done(c);
        match &self.display {
            Display::Bar(bar) => {
                bar.set_position(done);
                bar.set_message(format!(
                    "sent {} deferred {} failed {} in-flight {}",
                    c.delivered, c.deferred, c.failed, c.in_flight
                ));
            }
            Display::Lines => {
                if self.due(Duration::from_secs(2)) {
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
            Display::Json => {
                if self.due(JSON_PROGRESS_EVERY) {
                    print_event("progress", c, json!({ "done": done }))?;
                }
            }
        }
        Ok(())
    }

    /// Says what a campaign that only waits for retries waits for: a note above the bar (or a
    /// plain line), or a `waiting` event.
    pub fn waiting(&self, standing: &Standing) -> anyhow::Result<()> {
        match &self.display {
            Display::Bar(bar) => bar.println(standing.waiting_text()),
            Display::Lines => eprintln!("{}", standing.waiting_text()),
            Display::Json => print_event("waiting", standing.counters, standing.json_fields())?,
        }
        Ok(())
    }

    /// Says where an interrupted campaign stands (Ctrl-C on a `--local` run): on stderr, or as
    /// an `interrupted` event.
    pub fn interrupted(self, standing: &Standing) -> anyhow::Result<()> {
        let json = self.json();
        self.finish();
        if json {
            let mut fields = standing.json_fields();
            fields["unsent"] = json!(standing.unsent());
            print_event("interrupted", standing.counters, fields)
        } else {
            eprintln!("{}", standing.interrupted_text());
            Ok(())
        }
    }

    /// Clears the bar.
    pub fn finish(self) {
        if let Display::Bar(bar) = self.display {
            bar.finish_and_clear();
        }
    }
}

/// Recipients with an outcome so far (delivered, deferred or failed): the bar's position.
fn done(c: &CampaignCounters) -> u64 {
    c.delivered + c.deferred + c.failed
}

/// A campaign's counters as `campaign status --json` shows them, with the `extra` fields (an
/// object) added: the one shape of every JSON line `campaign launch` and `campaign watch` print.
pub fn counters_json(c: &CampaignCounters, extra: Value) -> anyhow::Result<Value> {
    let mut value = serde_json::to_value(c)?;
    if let (Some(object), Value::Object(extra)) = (value.as_object_mut(), extra) {
        object.extend(extra);
    }
    Ok(value)
}

/// One event: [`counters_json`] with `"event": kind` and the `extra` fields.
fn event(kind: &str, c: &CampaignCounters, mut extra: Value) -> anyhow::Result<Value> {
    if let Value::Object(object) = &mut extra {
        object.insert("event".into(), json!(kind));
    }
    counters_json(c, extra)
}

/// Prints one [`event`] as one line of JSON on stdout.
fn print_event(kind: &str, c: &CampaignCounters, extra: Value) -> anyhow::Result<()> {
    println!("{}", event(kind, c, extra)?);
    Ok(())
}

/// Prints what a launch was told by the coordinator: `launched campaign ID: N recipients` for
/// people (only `with_line`: a `--local` run says nothing here), or the `launched` event with
/// the first rows set aside at ingest (`rejects`, and `rejects_file` with the full report).
/// The rows set aside are listed on stderr either way.
pub fn print_launched(
    c: &CampaignCounters,
    rejects: &[String],
    rejects_file: Option<&str>,
    json: bool,
    with_line: bool,
) -> anyhow::Result<()> {
    report_rejects(rejects, c.rejected_rows, rejects_file);
    if json {
        print_event(
            "launched",
            c,
            json!({ "rejects": rejects, "rejects_file": rejects_file }),
        )?;
    } else if with_line {
        println!("launched campaign {}: {} recipients", c.id, c.total);
    }
    Ok(())
}

/// Prints the first rejected rows of an ingest on stderr.
fn report_rejects(rejects: &[String], total: u64, file: Option<&str>) {
    if total == 0 {
        return;
    }
    eprintln!("{total} recipient rows set aside:");
    for line in rejects.iter().take(20) {
        eprintln!("  {line}");
    }
    if total > 20 {
        eprintln!("  ... and {} more", total - 20);
    }
    if let Some(file) = file {
        eprintln!("  full report: {file}");
    }
}

/// The figures of a summary that are worked out from the counters.
struct Figures {
    /// Seconds since launch (at least a millisecond).
    secs: f64,
    /// Messages with an outcome per second.
    rate: f64,
    /// QUIC payload bytes per recipient and rendered bytes per message (with any outcome).
    per_recipient: Option<(f64, f64)>,
    /// Bytes of one template shipment.
    template_bytes_each: u64,
}

impl Figures {
    fn of(c: &CampaignCounters) -> Self {
        let secs = (c.elapsed_ms as f64 / 1000.0).max(0.001);
        let done = done(c);
        let per_recipient = (done > 0).then(|| {
            (
                (c.wire_bytes + c.template_bytes) as f64 / done as f64,
                c.rendered_bytes as f64 / done as f64,
            )
        });
        Self {
            secs,
            rate: done as f64 / secs,
            per_recipient,
            template_bytes_each: c
                .template_bytes
                .checked_div(c.template_shipments)
                .unwrap_or(0),
        }
    }

    /// The fields the `summary` event adds to the counters (`reasons` only when known).
    fn json_fields(&self, reasons: Option<&[(String, u64)]>) -> Value {
        let mut fields = json!({
            "rate_per_second": self.rate,
            "wire_bytes_per_recipient": self.per_recipient.map(|p| p.0),
            "rendered_bytes_per_message": self.per_recipient.map(|p| p.1),
            "template_bytes_each": self.template_bytes_each,
        });
        if let Some(reasons) = reasons {
            fields["reasons"] = reasons_json(reasons);
        }
        fields
    }
}

/// Prints the end-of-campaign summary to stdout: as text, or with `json` as the `summary`
/// event (the counters, `rate_per_second`, `wire_bytes_per_recipient`,
/// `rendered_bytes_per_message`, `template_bytes_each`, and with `reasons` the most frequent
/// non-delivery reasons as `[{"reason", "count"}]`). `reasons` is `None` when they are not
/// known (a farm's are in its accounting log).
pub fn print_summary(
    c: &CampaignCounters,
    reasons: Option<&[(String, u64)]>,
    json: bool,
) -> anyhow::Result<()> {
    let figures = Figures::of(c);
    if json {
        return print_event("summary", c, figures.json_fields(reasons));
    }
    let Figures {
        secs,
        rate,
        per_recipient,
        template_bytes_each,
    } = figures;
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
    if let Some((wire, rendered)) = per_recipient {
        println!(
            "  wire       {wire:.0} QUIC payload bytes per recipient for {rendered:.0}-byte messages \
             (template shipped {} times, {template_bytes_each} bytes each)",
            c.template_shipments,
        );
    }
    let mut text = String::new();
    push_reasons(
        &mut text,
        "most frequent non-delivery reasons",
        reasons.unwrap_or_default(),
    );
    if let Some(lines) = text.strip_prefix('\n') {
        println!("{lines}");
    }
    Ok(())
}

/// Reasons with their counts as `[{"reason": ..., "count": ...}]`.
fn reasons_json(reasons: &[(String, u64)]) -> Value {
    reasons
        .iter()
        .map(|(reason, count)| json!({ "reason": reason, "count": count }))
        .collect()
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
        text.push_str(&format!(
            "\n  a --local farm keeps no state: the {} recipients not delivered or failed \
             will not be sent",
            self.unsent()
        ));
        text
    }

    /// Recipients neither delivered nor failed: what an interrupted `--local` run leaves unsent.
    fn unsent(&self) -> u64 {
        let c = self.counters;
        c.total.saturating_sub(c.delivered + c.failed)
    }

    /// The fields a `waiting` or `interrupted` event adds to the counters: `next_retry_ms`
    /// (ms since the epoch, or null) and `reasons` as `[{"reason", "count"}]`.
    fn json_fields(&self) -> Value {
        json!({
            "next_retry_ms": self.next_retry_ms,
            "reasons": reasons_json(self.reasons),
        })
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
    fn the_summary_event_is_the_counters_with_the_figures_and_reasons() {
        let c = CampaignCounters {
            id: "c".into(),
            total: 41,
            delivered: 40,
            failed: 1,
            elapsed_ms: 2000,
            template_bytes: 600,
            template_shipments: 2,
            finished: true,
            ..Default::default()
        };
        let reasons = vec![("template: unknown field code".to_owned(), 1)];
        let e = event("summary", &c, Figures::of(&c).json_fields(Some(&reasons))).unwrap();
        assert_eq!(e["event"], "summary", "{e}");
        assert_eq!(e["delivered"], 40, "{e}");
        assert_eq!(e["failed"], 1, "{e}");
        assert_eq!(e["finished"], true, "{e}");
        assert_eq!(e["rate_per_second"], 20.5, "{e}");
        assert_eq!(e["template_bytes_each"], 300, "{e}");
        assert_eq!(e["reasons"][0]["count"], 1, "{e}");
        assert_eq!(e["reasons"][0]["reason"], "template: unknown field code");
        let farm = event("summary", &c, Figures::of(&c).json_fields(None)).unwrap();
        assert!(farm.get("reasons").is_none(), "unknown, not empty: {farm}");
        let empty = Figures::of(&CampaignCounters::default()).json_fields(None);
        assert_eq!(empty["wire_bytes_per_recipient"], Value::Null, "{empty}");
    }

    #[test]
    fn json_progress_goes_out_at_once_and_then_every_second() {
        let mut follower = Follower {
            display: Display::Json,
            last_line: None,
        };
        assert!(follower.due(JSON_PROGRESS_EVERY), "the first at once");
        assert!(!follower.due(JSON_PROGRESS_EVERY), "not twice in a second");
        let mut lines = Follower {
            display: Display::Lines,
            last_line: None,
        };
        assert!(
            !lines.due(Duration::from_secs(2)),
            "people wait two seconds"
        );
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
