//! Scenario: one destination site is dead (nothing listens on its MX host). Its mail goes to the
//! slow "bog" lane and is retried on the coordinator's schedule, while a healthy site's mail
//! flows at full speed. When the dead host comes back, its mail is delivered and the site
//! leaves the bog. Both are visible in `farm nodes`.

use mailfarm_testkit::dns;

use std::time::{Duration, Instant};

use mailfarm_testkit::{
    domains_csv, free_port, mailfarm, number, write_campaign_direct, FaultSinkProcess, ProcessFarm,
};

fn bog_sites(farm: &ProcessFarm) -> u64 {
    let out = mailfarm()
        .args(["farm", "nodes", "--json", "--farm"])
        .arg(&farm.dir)
        .arg("--coordinator")
        .arg(farm.addr.to_string())
        .output()
        .unwrap();
    assert!(out.status.success());
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["load"]["bog_sites"].as_u64().unwrap())
        .sum()
}

#[test]
fn a_dead_site_goes_to_the_bog_without_holding_up_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut live = FaultSinkProcess::start_at(&tmp.path().join("live"), "127.0.0.6", port, &[]);
    let dns = dns::TestDns::start(&[
        "dead.test. 300 IN MX 10 mx.dead.test.",
        "mx.dead.test. 300 IN A 127.0.0.5",
        "live.test. 300 IN MX 10 mx.live.test.",
        "mx.live.test. 300 IN A 127.0.0.6",
    ]);
    let farm = ProcessFarm::start_full(
        &tmp.path().join("farm"),
        2,
        64,
        "retry_schedule = [\"1s\"]\nretry_max_age = \"10m\"",
        &dns.smurf_config(port),
    );
    let campaign = tmp.path().join("c");
    write_campaign_direct(
        &campaign,
        "bog",
        &domains_csv(&[("dead.test", 30), ("live.test", 300)]),
    );
    let started = Instant::now();
    let out = farm.campaign(&["launch", campaign.to_str().unwrap(), "--detach"]);
    assert!(out.status.success(), "{out:?}");

    // The healthy site is not held up by the dead one.
    farm.wait_status("bog", "live mail delivered", Duration::from_secs(30), |s| {
        number(s, "delivered") >= 300
    });
    let live_time = started.elapsed();
    let status = farm.status("bog");
    assert_eq!(
        number(&status, "delivered"),
        300,
        "only live.test so far: {status:?}"
    );
    assert_eq!(status["state"], "running");

    // The dead site lands in the bog.
    let deadline = Instant::now() + Duration::from_secs(30);
    while bog_sites(&farm) == 0 {
        assert!(
            Instant::now() < deadline,
            "the dead site never went to the bog"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // It comes back: its mail is delivered and it leaves the bog.
    let mut dead = FaultSinkProcess::start_at(&tmp.path().join("dead"), "127.0.0.5", port, &[]);
    let status = farm.wait_status("bog", "the end", Duration::from_secs(120), |s| {
        s.get("state").map(String::as_str) == Some("finished")
    });
    assert_eq!(number(&status, "delivered"), 330, "{status:?}");
    assert_eq!(number(&status, "failed"), 0, "{status:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while bog_sites(&farm) > 0 {
        assert!(
            Instant::now() < deadline,
            "the recovered site never left the bog"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(dead.stop().len(), 30);
    assert_eq!(live.stop().len(), 300);
    println!("live site done in {live_time:?} while the dead one was still failing");
}
