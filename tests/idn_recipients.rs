//! Scenario: an internationalised domain (`heidi@bücher.test`) is sent to its A-label
//! (`xn--bcher-kva.test`) instead of failing on a smurf, rows rendering would refuse are set
//! aside at ingest, and suppressing the address in its Unicode form keeps it from later
//! campaigns.

use mailfarm_testkit::{mailfarm, number, write_campaign, ProcessFarm, SmtpSink};

#[test]
fn idn_addresses_are_sent_as_a_labels_and_suppressible_in_unicode() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&tmp.path().join("sink"));
    let farm = ProcessFarm::start(&tmp.path().join("farm"), 1, 32);
    let csv = "email,first_name,code\n\
               heidi@bücher.test,Heidi,1\n\
               two@@example.test,Two,2\n\
               trailing.dot.@example.test,Dot,3\n\
               ok@example.test,Ok,4\n";

    let first = tmp.path().join("first");
    write_campaign(&first, "idn1", sink.addr, csv);
    let out = farm.campaign(&["launch", first.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let status = farm.status("idn1");
    assert_eq!(number(&status, "delivered"), 2, "{status:?}");
    assert_eq!(
        number(&status, "failed"),
        0,
        "nothing fails on a smurf: {status:?}"
    );
    let mut received: Vec<String> = sink.messages().into_iter().map(|(r, _)| r).collect();
    received.sort();
    assert_eq!(received, ["heidi@xn--bcher-kva.test", "ok@example.test"]);

    let suppress = mailfarm()
        .args(["farm", "suppress", "heidi@bücher.test"])
        .arg("--farm")
        .arg(&farm.dir)
        .arg("--coordinator")
        .arg(farm.addr.to_string())
        .output()
        .unwrap();
    assert!(suppress.status.success(), "{suppress:?}");
    let second = tmp.path().join("second");
    write_campaign(&second, "idn2", sink.addr, csv);
    let out = farm.campaign(&["launch", second.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let status = farm.status("idn2");
    assert_eq!(number(&status, "suppressed"), 1, "{status:?}");
    assert_eq!(number(&status, "delivered"), 1, "{status:?}");
}
