//! Scenario: a domain that publishes a null MX (RFC 7505) accepts no mail: its recipients fail at once, without retries, and no connection is attempted.

mod common;
#[path = "../smurf/tests/support/dns.rs"]
mod dns;

use common::{domains_csv, number, write_campaign_direct, ProcessFarm};

#[test]
fn recipients_fail_at_once_without_retries() {
    let tmp = tempfile::tempdir().unwrap();
    let dns = dns::TestDns::start(&["nomail.test. 300 IN MX 0 ."]);
    let farm = ProcessFarm::start_full(
        &tmp.path().join("farm"),
        1,
        32,
        "retry_schedule = [\"200ms\"]",
        &format!(
            "smtp_port = 2599\n[resolver]\nnameserver = \"{}\"",
            dns.addr
        ),
    );
    let campaign = tmp.path().join("c");
    write_campaign_direct(&campaign, "null_mx", &domains_csv(&[("nomail.test", 6)]));
    let out = farm.campaign(&["launch", campaign.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let status = farm.status("null_mx");
    assert_eq!(number(&status, "failed"), 6, "{status:?}");
    assert_eq!(
        number(&status, "attempts"),
        6,
        "permanent: no retries: {status:?}"
    );
    let log = std::fs::read_to_string(farm.dir.join("state/accounting.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 6);
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["state"], "failed");
        assert!(
            v["text"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("null mx"),
            "{line}"
        );
        assert_eq!(v["remote"], "", "no server was contacted: {line}");
    }
}
