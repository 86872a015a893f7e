//! Scenario: an address on the suppression list is skipped by later campaigns and counted as
//! suppressed; it never reaches the receiving server.

use mailfarm_testkit::{number, recipients_csv, write_campaign, ProcessFarm, SmtpSink};

#[test]
fn suppressed_addresses_are_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&tmp.path().join("sink"));
    let farm = ProcessFarm::start(&tmp.path().join("farm"), 1, 32);
    let suppress = |address: &str| farm.farm(&["suppress", address, "--reason", "complained"]);
    // Case does not matter.
    assert!(suppress("SU3@d3.example").status.success());
    let bad = suppress("not an address");
    assert!(!bad.status.success(), "garbage is refused");

    let campaign = tmp.path().join("c");
    write_campaign(&campaign, "supp", sink.addr, &recipients_csv(50, "su"));
    let out = farm.campaign(&["launch", campaign.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let status = farm.status("supp");
    assert_eq!(number(&status, "suppressed"), 1, "{status:?}");
    assert_eq!(number(&status, "delivered"), 49, "{status:?}");
    let received: Vec<String> = sink.messages().into_iter().map(|(r, _)| r).collect();
    assert_eq!(received.len(), 49);
    assert!(!received.iter().any(|r| r == "su3@d3.example"));
}
