//! The `mx` benchmark's checks: every recipient delivered exactly once, to the sink of its
//! domain's MX host, the sinks' counts agreeing with the farm's; and the per-host counts the
//! report shows.

use std::collections::HashMap;

use mailfarm_protocol::CampaignCounters;

use crate::mx_report::HostCount;
use crate::mx_sinks::RunningSink;
use crate::mx_zone::{Layout, HOSTS, THROTTLED};

/// Recipients seen so far, with how many messages each got.
type Seen = HashMap<String, u64>;

/// Counts `sink`'s accepted recipients into `seen`; returns how many it accepted and how many
/// of them belong elsewhere (by `belongs`, given the recipient's domain).
fn tally(sink: &RunningSink, belongs: impl Fn(&str) -> bool, seen: &mut Seen) -> (u64, u64) {
    let messages = sink.stats.messages_snapshot();
    let mut misrouted = 0;
    for (_, rcpt) in &messages {
        let rcpt = rcpt.to_ascii_lowercase();
        let domain = rcpt.rsplit_once('@').map_or("", |(_, d)| d);
        if !belongs(domain) {
            misrouted += 1;
        }
        *seen.entry(rcpt).or_insert(0) += 1;
    }
    (messages.len() as u64, misrouted)
}

/// Problems with `seen` when `expected` distinct recipients should each have one message.
fn exactly_once(label: &str, seen: &Seen, expected: u64, problems: &mut Vec<String>) {
    let duplicated = seen.values().filter(|&&n| n > 1).count();
    if duplicated > 0 {
        problems.push(format!(
            "{label}: {duplicated} recipients got more than one message"
        ));
    }
    if seen.len() as u64 != expected {
        problems.push(format!(
            "{label}: the sinks saw {} distinct recipients of {expected}",
            seen.len()
        ));
    }
}

/// Problems with the farm's own counters when `expected` recipients should be delivered.
fn counters(label: &str, c: &CampaignCounters, expected: u64, problems: &mut Vec<String>) {
    if c.delivered != expected {
        problems.push(format!(
            "{label}: mailfarm delivered {} of {expected} ({} deferred, {} failed)",
            c.delivered, c.deferred, c.failed
        ));
    }
}

/// Checks the MX run (`recipients` spread over `layout`'s domains, `throttled` at
/// throttled.test) against its sinks; returns the per-host counts, throttled.test's last.
pub fn check_mx(
    layout: &Layout,
    (recipients, throttled): (u64, u64),
    sinks: &[RunningSink],
    throttled_sink: &RunningSink,
    c: &CampaignCounters,
    problems: &mut Vec<String>,
) -> Vec<HostCount> {
    let label = "MX run";
    counters(label, c, recipients + throttled, problems);
    let mut expected = vec![0u64; HOSTS.len()];
    for domain in layout.sequence(recipients, throttled) {
        if let Some(host) = layout.host_of(domain) {
            expected[host] += 1;
        }
    }
    let mut seen = Seen::new();
    let mut hosts = Vec::new();
    for (host, sink) in sinks.iter().enumerate() {
        let (accepted, misrouted) = tally(sink, |d| layout.host_of(d) == Some(host), &mut seen);
        let want = expected.get(host).copied().unwrap_or(0);
        hosts.push(HostCount {
            addr: sink.addr,
            mx_hosts: layout.sites_at(host).join(", "),
            domains: layout.domains_at(host),
            expected: want,
            accepted,
            misrouted,
            peak_sessions: sink.peak_sessions(),
        });
    }
    let (accepted, misrouted) = tally(throttled_sink, |d| d == THROTTLED, &mut seen);
    hosts.push(HostCount {
        addr: throttled_sink.addr,
        mx_hosts: format!("mx.{THROTTLED}"),
        domains: 1,
        expected: throttled,
        accepted,
        misrouted,
        peak_sessions: throttled_sink.peak_sessions(),
    });
    for h in &hosts {
        if h.accepted != h.expected {
            problems.push(format!(
                "{label}: sink {} accepted {} messages, expected {}",
                h.addr, h.accepted, h.expected
            ));
        }
        if h.misrouted > 0 {
            problems.push(format!(
                "{label}: sink {} got {} messages for domains whose MX is elsewhere",
                h.addr, h.misrouted
            ));
        }
    }
    exactly_once(label, &seen, recipients + throttled, problems);
    hosts
}

/// Checks the relay run of `recipients` against its one sink.
pub fn check_relay(
    recipients: u64,
    sink: &RunningSink,
    c: &CampaignCounters,
    problems: &mut Vec<String>,
) {
    let label = "relay run";
    counters(label, c, recipients, problems);
    let mut seen = Seen::new();
    let (accepted, _) = tally(sink, |_| true, &mut seen);
    if accepted != recipients {
        problems.push(format!(
            "{label}: the sink accepted {accepted} messages, expected {recipients}"
        ));
    }
    exactly_once(label, &seen, recipients, problems);
}
