//! Scenario: temporary failures are retried by the coordinator on its schedule until they
//! succeed; permanent failures fail at once; a recipient still deferred past the maximum age
//! fails with the last reply. Every attempt lands in the accounting log.

use std::collections::HashMap;
use std::time::Duration;

use mailfarm_testkit::{number, recipients_csv, write_campaign, FaultSinkProcess, ProcessFarm};

fn accounting_lines(farm: &ProcessFarm) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(farm.dir.join("state/accounting.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn temporary_failures_are_retried_until_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = FaultSinkProcess::start(
        &tmp.path().join("sink"),
        &["--tempfail", "0.3", "--permfail", "0.05", "--seed", "7"],
    );
    let farm = ProcessFarm::start_with(
        &tmp.path().join("farm"),
        2,
        64,
        "retry_schedule = [\"500ms\", \"1s\"]\nretry_max_age = \"5m\"",
    );
    let campaign = tmp.path().join("c");
    write_campaign(&campaign, "retries", sink.addr, &recipients_csv(300, "rt"));
    let out = farm.campaign(&["launch", campaign.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");

    let status = farm.status("retries");
    let (delivered, failed) = (number(&status, "delivered"), number(&status, "failed"));
    assert_eq!(delivered + failed, 300, "{status:?}");
    assert!(
        failed > 0 && failed < 40,
        "about 5% permanent failures: {status:?}"
    );
    assert!(
        number(&status, "attempts") > 300 + 50,
        "30% temporary failures must cause retries: {status:?}"
    );

    let accepted = sink.stop();
    let mut per_rcpt: HashMap<&str, usize> = HashMap::new();
    for (_, rcpt) in &accepted {
        *per_rcpt.entry(rcpt.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_rcpt.len() as u64,
        delivered,
        "the sink saw every delivered recipient"
    );
    assert!(per_rcpt.values().all(|&n| n == 1), "and each once");

    let lines = accounting_lines(&farm);
    assert_eq!(
        lines.len() as u64,
        number(&status, "attempts"),
        "one line per attempt"
    );
    let deferred: Vec<_> = lines.iter().filter(|l| l["state"] == "deferred").collect();
    assert!(!deferred.is_empty());
    assert!(deferred
        .iter()
        .all(|l| l["code"] == 451 && l["enhanced"] == "4.3.0"));
    assert!(lines
        .iter()
        .any(|l| l["state"] == "failed" && l["code"] == 550 && l["enhanced"] == "5.1.1"));
    assert!(lines
        .iter()
        .all(|l| l["smurf"].as_str().unwrap().starts_with("smurf-")));
}

#[test]
fn recipients_deferred_past_the_maximum_age_fail_with_the_last_reply() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = FaultSinkProcess::start(&tmp.path().join("sink"), &["--tempfail", "1.0"]);
    let farm = ProcessFarm::start_with(
        &tmp.path().join("farm"),
        1,
        64,
        "retry_schedule = [\"500ms\"]\nretry_max_age = \"2s\"",
    );
    let campaign = tmp.path().join("c");
    write_campaign(&campaign, "max-age", sink.addr, &recipients_csv(20, "ma"));
    let out = farm.campaign(&["launch", campaign.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let status = farm.wait_status("max-age", "end", Duration::from_secs(60), |s| {
        s.get("state").map(String::as_str) == Some("finished")
    });
    assert_eq!(number(&status, "failed"), 20, "{status:?}");
    assert!(
        number(&status, "attempts") >= 40,
        "retried before giving up: {status:?}"
    );
    assert!(sink.stop().is_empty());
    let lines = accounting_lines(&farm);
    let last: Vec<_> = lines.iter().filter(|l| l["state"] == "failed").collect();
    assert_eq!(last.len(), 20);
    assert!(
        last.iter().all(|l| l["code"] == 451),
        "failed with the last reply"
    );
}
