//! Scenario: an internationalised domain (`heidi@bücher.test`) is sent to its A-label
//! (`xn--bcher-kva.test`) instead of failing on a smurf, rows rendering would refuse are set
//! aside at ingest, and suppressing the address in its Unicode form keeps it from later
//! campaigns.

use std::collections::HashMap;
use std::path::Path;

use mailfarm_testkit::{number, write_campaign, ProcessFarm, SmtpSink};

const CSV: &str = "email,first_name,code\n\
                   heidi@bücher.test,Heidi,1\n\
                   two@@example.test,Two,2\n\
                   trailing.dot.@example.test,Dot,3\n\
                   ok@example.test,Ok,4\n";

/// Launches campaign `id` of [`CSV`] to `sink` and returns its status once it is done.
fn launch(farm: &ProcessFarm, dir: &Path, id: &str, sink: &SmtpSink) -> HashMap<String, String> {
    let campaign = dir.join(id);
    write_campaign(&campaign, id, sink.addr, CSV);
    let out = farm.campaign(&["launch", campaign.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    farm.status(id)
}

#[test]
fn idn_addresses_are_sent_as_a_labels_and_suppressible_in_unicode() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&tmp.path().join("sink"));
    let farm = ProcessFarm::start(&tmp.path().join("farm"), 1, 32);
    let status = launch(&farm, tmp.path(), "idn1", &sink);
    assert_eq!(number(&status, "delivered"), 2, "{status:?}");
    assert_eq!(
        number(&status, "failed"),
        0,
        "nothing fails on a smurf: {status:?}"
    );
    let mut received: Vec<String> = sink.messages().into_iter().map(|(r, _)| r).collect();
    received.sort();
    assert_eq!(received, ["heidi@xn--bcher-kva.test", "ok@example.test"]);

    let suppress = farm.farm(&["suppress", "heidi@bücher.test"]);
    assert!(suppress.status.success(), "{suppress:?}");
    let status = launch(&farm, tmp.path(), "idn2", &sink);
    assert_eq!(number(&status, "suppressed"), 1, "{status:?}");
    assert_eq!(number(&status, "delivered"), 1, "{status:?}");
}
