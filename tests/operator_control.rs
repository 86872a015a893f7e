//! Scenario: an operator steers a running farm: scheduled start, per-campaign rate cap, pause,
//! resume, cancel, `campaign watch`, draining a node and bringing it back, and the Prometheus
//! `/metrics` endpoint, against a real sink (Postfix's smtp-sink).

use std::time::{Duration, Instant};

use mailfarm_testkit::{
    launch_event, metrics, number, recipients_csv, write_campaign, ProcessFarm, SmtpSink,
};

fn ok(out: std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn operator_controls_a_running_campaign() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&tmp.path().join("sink"));
    let mut farm = ProcessFarm::start_with(
        &tmp.path().join("farm"),
        2,
        16,
        "metrics_listen = \"127.0.0.1:0\"",
    );
    let campaign = tmp.path().join("c");
    write_campaign(&campaign, "ctl", sink.addr, &recipients_csv(1500, "op"));

    // Scheduled start: nothing goes out before it.
    ok(farm.campaign(&[
        "launch",
        campaign.to_str().unwrap(),
        "--detach",
        "--start-in",
        "2s",
        "--rate",
        "200/s",
    ]));
    let status = farm.status("ctl");
    assert_eq!(status["state"], "scheduled", "{status:?}");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(number(&farm.status("ctl"), "delivered"), 0);

    // The rate cap holds: ~200/s.
    let started = farm.wait_status("ctl", "a start", Duration::from_secs(30), |s| {
        number(s, "delivered") >= 100
    });
    let t0 = Instant::now();
    let d0 = number(&started, "delivered");
    std::thread::sleep(Duration::from_secs(2));
    let d1 = number(&farm.status("ctl"), "delivered");
    let rate = (d1 - d0) as f64 / t0.elapsed().as_secs_f64();
    assert!(
        rate < 200.0 * 1.25 + 20.0,
        "rate cap 200/s exceeded: {rate:.0}/s"
    );

    // Pause: in-flight messages finish, then nothing more is sent.
    assert!(ok(farm.campaign(&["pause", "ctl"])).contains("paused"));
    let paused = farm.wait_status("ctl", "a quiet pause", Duration::from_secs(20), |s| {
        s["state"] == "paused" && number(s, "in-flight") == 0
    });
    std::thread::sleep(Duration::from_millis(1200));
    let still = farm.status("ctl");
    assert_eq!(number(&still, "delivered"), number(&paused, "delivered"));

    let m = metrics(&farm);
    assert!(m.contains("mailfarm_smurfs_connected 2"), "{m}");
    assert!(
        m.contains(&format!(
            "mailfarm_campaign_recipients{{campaign=\"ctl\",state=\"delivered\"}} {}",
            number(&still, "delivered")
        )),
        "{m}"
    );

    // Resume, then cancel: the rest is skipped, nothing lost from the counts.
    ok(farm.campaign(&["resume", "ctl"]));
    farm.wait_status(
        "ctl",
        "progress after resume",
        Duration::from_secs(20),
        |s| number(s, "delivered") > number(&still, "delivered"),
    );
    assert!(ok(farm.campaign(&["cancel", "ctl"])).contains("cancelled"));
    let end = farm.wait_status("ctl", "the end", Duration::from_secs(30), |s| {
        s["state"] == "cancelled" && number(s, "in-flight") == 0
    });
    let (delivered, skipped) = (number(&end, "delivered"), number(&end, "skipped"));
    assert!(skipped > 0, "{end:?}");
    assert_eq!(
        delivered + skipped + number(&end, "failed"),
        1500,
        "{end:?}"
    );
    assert_eq!(sink.messages().len() as u64, delivered);
    assert!(farm.campaign(&["resume", "ctl"]).status.code() != Some(0));

    // `campaign watch` on an ended campaign prints its line and exits.
    let watch = ok(farm.campaign(&["watch", "ctl"]));
    assert!(watch.contains("cancelled"), "{watch}");

    // Drain smurf-1: it finishes its work, shows idle, and gets nothing new.
    assert!(ok(farm.farm(&["drain", "smurf-1"])).contains("draining"));
    let before = wait_node_state(&farm, "smurf-1", "idle");
    let results_of = |nodes: &serde_json::Value, node: &str| -> u64 {
        node_of(nodes, node)["results"].as_u64().unwrap()
    };
    let second = tmp.path().join("c2");
    write_campaign(
        &second,
        "after-drain",
        sink.addr,
        &recipients_csv(200, "ad"),
    );
    let out = farm.campaign(&["launch", second.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{out:?}");
    let summary = launch_event(&out, "summary");
    assert_eq!(summary["delivered"], 200, "{summary}");
    let after = nodes_json(&farm);
    assert_eq!(
        results_of(&before, "smurf-1"),
        results_of(&after, "smurf-1"),
        "a drained node gets no new work: {after}"
    );
    ok(farm.farm(&["undrain", "smurf-1"]));
    let nodes = wait_node_state(&farm, "smurf-1", "active");
    assert_eq!(node_of(&nodes, "smurf-1")["draining"], false, "{nodes}");
    assert!(
        farm.coordinator
            .terminate(Duration::from_secs(30))
            .success(),
        "graceful SIGTERM"
    );
}

/// `farm nodes --json`.
fn nodes_json(farm: &ProcessFarm) -> serde_json::Value {
    serde_json::from_str(&ok(farm.farm(&["nodes", "--json"]))).unwrap()
}

fn node_of<'a>(nodes: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let found = nodes.as_array().unwrap().iter().find(|n| n["node"] == name);
    found.unwrap_or_else(|| panic!("no node {name} in {nodes}"))
}

/// Polls `farm nodes --json` until `node` reports `state`; returns that view.
fn wait_node_state(farm: &ProcessFarm, node: &str, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let nodes = nodes_json(farm);
        if node_of(&nodes, node)["state"] == state {
            return nodes;
        }
        assert!(Instant::now() < deadline, "{node} never {state}: {nodes}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
