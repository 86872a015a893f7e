//! Scenario: the receiving server drops the connection after the message data but before its
//! final reply, 30 % of the time. Such a message is never counted delivered: it is deferred and
//! retried, and every recipient ends up accepted exactly once.

use std::collections::HashMap;

use mailfarm_testkit::{number, recipients_csv, write_campaign, FaultSinkProcess, ProcessFarm};

#[test]
fn a_connection_dropped_mid_data_is_retried_and_arrives_once() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = FaultSinkProcess::start(
        &tmp.path().join("sink"),
        &["--drop-mid-data", "0.3", "--seed", "11"],
    );
    let farm = ProcessFarm::start_with(
        &tmp.path().join("farm"),
        2,
        32,
        "retry_schedule = [\"300ms\"]\nretry_max_age = \"5m\"",
    );
    let campaign = tmp.path().join("c");
    write_campaign(&campaign, "drops", sink.addr, &recipients_csv(200, "dm"));
    let out = farm.campaign(&["launch", campaign.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let status = farm.status("drops");
    assert_eq!(number(&status, "delivered"), 200, "{status:?}");
    assert!(
        number(&status, "attempts") > 230,
        "drops caused retries: {status:?}"
    );

    let accepted = sink.stop();
    let mut per_rcpt: HashMap<String, usize> = HashMap::new();
    for (_, rcpt) in accepted {
        *per_rcpt.entry(rcpt).or_default() += 1;
    }
    assert_eq!(per_rcpt.len(), 200);
    assert!(per_rcpt.values().all(|&n| n == 1), "each exactly once");
    let log = std::fs::read_to_string(farm.dir.join("state/accounting.jsonl")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("\"state\":\"deferred\"") && l.contains("\"code\":0")),
        "a dropped transfer is a deferral without a server reply"
    );
}
