//! Scenario (issue 11): a relay that accepts R = 50 messages per second and answers Amazon
//! SES's `454 Throttling failure: Maximum sending rate exceeded.` beyond, two smurf processes,
//! N = 1500 recipients. The farm must learn the relay's rate instead of deferring the excess to
//! the coordinator's retry schedule: every message delivered exactly once (counted by
//! Message-ID at the sink), the campaign finished within 1.25 × N / R + 5 s, and at most 15 %
//! of all DATA attempts refused. Counts and bounds, not exact timings.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mailfarm_testkit::{number, recipients_csv, write_campaign, FaultSinkProcess, ProcessFarm};

const RATE: u64 = 50;
const N: u64 = 1500;

/// A counter from the sink's final line ("sink stopped: accepted 1500 ... rate-refused 12 ...").
fn sink_counter(output: &str, name: &str) -> u64 {
    let line = output
        .lines()
        .rev()
        .find(|l| l.contains("sink stopped:"))
        .unwrap_or_else(|| panic!("no final sink line in:\n{output}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == name)
        .unwrap_or_else(|| panic!("no {name} in {line}"));
    words[at + 1].parse().unwrap()
}

#[test]
fn two_smurfs_learn_a_relays_rate_and_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = FaultSinkProcess::start(&tmp.path().join("sink"), &["--rate", "50"]);
    // The coordinator's retries are far away: a message deferred to them would blow the time
    // bound, so the bound shows the throttled ones were retried on the smurfs.
    let farm = ProcessFarm::start_with(
        &tmp.path().join("farm"),
        2,
        64,
        "retry_schedule = [\"5m\"]\nmetrics_listen = \"127.0.0.1:0\"",
    );
    let campaign = tmp.path().join("c");
    write_campaign(
        &campaign,
        "learn",
        sink.addr,
        &recipients_csv(N as usize, "at"),
    );
    let started = Instant::now();
    let out = farm.campaign(&["launch", campaign.to_str().unwrap(), "--detach"]);
    assert!(out.status.success(), "{out:?}");
    let bound = Duration::from_secs_f64(1.25 * N as f64 / RATE as f64 + 5.0);
    let deadline = started + bound + Duration::from_secs(30);
    let status = loop {
        let status = farm.status("learn");
        let finished = status.get("state").map(String::as_str) == Some("finished");
        if finished || number(&status, "deferred") > 0 || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = started.elapsed();
    if number(&status, "delivered") != N {
        let log =
            std::fs::read_to_string(farm.dir.join("state/accounting.jsonl")).unwrap_or_default();
        for line in log.lines().filter(|l| !l.contains("\"delivered\"")).take(5) {
            println!("not delivered: {line}");
        }
        for smurf in &farm.smurfs {
            let log = smurf.output();
            let lines: Vec<&str> = log.lines().collect();
            println!(
                "--- {} (last lines)\n{}",
                smurf.name,
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
    let sites = mailfarm_testkit::mailfarm()
        .args(["farm", "sites", "--farm"])
        .arg(&farm.dir)
        .args(["--coordinator", &farm.addr.to_string()])
        .output()
        .unwrap();
    let sites = String::from_utf8_lossy(&sites.stdout).to_string();
    let metrics = mailfarm_testkit::metrics(&farm);
    let accepted = sink.stop();
    let output = sink.daemon.output();
    let refused = sink_counter(&output, "rate-refused");
    let attempts = sink_counter(&output, "accepted") + refused;
    println!(
        "R = {RATE}/s, N = {N}: {took:.1?} (bound {bound:.1?}), {refused} of {attempts} DATA \
         attempts refused, status {status:?}\nfarm sites: {sites}"
    );

    assert_eq!(number(&status, "delivered"), N, "{status:?}");
    assert_eq!(number(&status, "deferred"), 0, "{status:?}");
    assert_eq!(number(&status, "failed"), 0, "{status:?}");
    // Exactly once, by Message-ID and by recipient.
    let mut per_id: HashMap<&str, u32> = HashMap::new();
    for (id, _) in &accepted {
        *per_id.entry(id.as_str()).or_default() += 1;
    }
    assert_eq!(accepted.len() as u64, N);
    assert_eq!(per_id.len() as u64, N, "distinct Message-IDs");
    assert!(per_id.values().all(|&n| n == 1));
    assert!(
        per_id.keys().all(|id| id.starts_with('<')),
        "real Message-IDs"
    );
    // The relay did throttle (else this proves nothing), but rarely.
    assert!(refused > 0, "the relay never throttled: {output}");
    assert!(
        refused as f64 <= 0.15 * attempts as f64,
        "{refused} of {attempts} DATA attempts refused"
    );
    assert!(took <= bound, "took {took:?}, bound {bound:?}");
    // The farm shows what it learnt.
    assert!(sites.contains("relay:"), "farm sites: {sites}");
    assert!(sites.contains("454"), "the last throttling reply: {sites}");
    for family in [
        "mailfarm_site_learnt_rate_millis{site=\"relay:",
        "mailfarm_site_throttled_total{site=\"relay:",
        "mailfarm_site_last_throttle_info{site=\"relay:",
    ] {
        assert!(
            metrics.contains(family),
            "{family} missing from /metrics:\n{metrics}"
        );
    }
}
