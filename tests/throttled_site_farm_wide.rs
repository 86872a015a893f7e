//! Scenario: a site limited to 20 messages/s in the coordinator's shaping file, served by two
//! smurf processes. The receiving server (our sink) must never see more than the farm-wide
//! limit, even though each smurf alone could send far faster.

use mailfarm_testkit::dns;

use std::time::Duration;

use mailfarm_testkit::{
    domains_csv, free_port, number, write_campaign_direct, FaultSinkProcess, ProcessFarm,
};

const LIMIT: u64 = 20;

#[test]
fn farm_wide_rate_stays_under_the_site_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut sink = FaultSinkProcess::start_at(&tmp.path().join("sink"), "127.0.0.4", port, &[]);
    let dns = dns::TestDns::start(&[
        "slow.test. 300 IN MX 10 mx.slow.test.",
        "slow2.test. 300 IN MX 10 mx.slow.test.",
        "mx.slow.test. 300 IN A 127.0.0.4",
    ]);
    let farm_dir = tmp.path().join("farm");
    std::fs::create_dir_all(&farm_dir).unwrap();
    std::fs::write(
        farm_dir.join("shaping.toml"),
        format!("[default]\nmessage_rate = \"1000/s\"\n\n[domain.\"slow.test\"]\nmessage_rate = \"{LIMIT}/s\"\n"),
    )
    .unwrap();
    let farm = ProcessFarm::start_full(
        &farm_dir,
        2,
        64,
        "shaping_file = \"shaping.toml\"",
        &dns.smurf_config(port),
    );
    let campaign = tmp.path().join("c");
    // slow2.test shares slow.test's MX host, so it shares the site and its limit.
    write_campaign_direct(
        &campaign,
        "throttled",
        &domains_csv(&[("slow.test", 120), ("slow2.test", 40)]),
    );
    let out = farm.campaign(&["launch", campaign.to_str().unwrap(), "--detach"]);
    assert!(out.status.success(), "{out:?}");
    let status = farm.wait_status("throttled", "the end", Duration::from_secs(120), |s| {
        s.get("state").map(String::as_str) == Some("finished")
    });
    assert_eq!(number(&status, "delivered"), 160, "{status:?}");
    let accepted = sink.stop();
    assert_eq!(accepted.len(), 160);
    let per_second = sink.per_second();
    let peak = per_second.iter().map(|(_, n)| *n).max().unwrap();
    let first = per_second.first().unwrap().0;
    let last = per_second.last().unwrap().0;
    let average = 160.0 / ((last - first + 1) as f64);
    println!(
        "farm-wide: peak {peak}/s, average {average:.1}/s, limit {LIMIT}/s over {} s",
        last - first + 1
    );
    // A second may hold a token-bucket burst on top of the rate; never a multiple of it.
    assert!(
        peak <= LIMIT + LIMIT / 4,
        "peak {peak}/s exceeds the farm-wide limit {LIMIT}/s: {per_second:?}"
    );
    assert!(
        average <= LIMIT as f64 * 1.1,
        "average {average:.1}/s exceeds {LIMIT}/s"
    );
}
