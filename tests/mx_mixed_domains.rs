//! Scenario: direct MX delivery for a mix of good and bad domains, with a real DNS server
//! (unbound) and our fault-injecting sinks standing in for the domains' MX hosts on 127.0.0.x.
//! Good domains reach the right host (two domains sharing an MX host share it); null MX and
//! NXDOMAIN fail at once; SERVFAIL defers, is retried, and fails once the maximum age passes.

use mailfarm_testkit::dns;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mailfarm_testkit::{
    domains_csv, free_port, number, write_campaign_direct, FaultSinkProcess, ProcessFarm,
};

#[test]
fn good_and_bad_domains_each_get_the_right_outcome() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut alpha = FaultSinkProcess::start_at(&tmp.path().join("alpha"), "127.0.0.2", port, &[]);
    let mut shared = FaultSinkProcess::start_at(&tmp.path().join("shared"), "127.0.0.3", port, &[]);
    let dns = dns::TestDns::start(&[
        "alpha.test. 300 IN MX 10 mx.alpha.test.",
        "mx.alpha.test. 300 IN A 127.0.0.2",
        "beta.test. 300 IN MX 10 mx1.shared.test.",
        "gamma.test. 300 IN MX 20 mx1.shared.test.",
        "mx1.shared.test. 300 IN A 127.0.0.3",
        "implicit.test. 300 IN A 127.0.0.2",
        "nullmx.test. 300 IN MX 0 .",
    ]);
    let farm = ProcessFarm::start_full(
        &tmp.path().join("farm"),
        2,
        32,
        "retry_schedule = [\"500ms\"]\nretry_max_age = \"3s\"",
        &format!("{}\ntimeout = \"2s\"", dns.smurf_config(port)),
    );
    let campaign = tmp.path().join("c");
    write_campaign_direct(
        &campaign,
        "mx-mixed",
        &domains_csv(&[
            ("alpha.test", 20),
            ("beta.test", 15),
            ("gamma.test", 15),
            ("implicit.test", 5),
            ("nullmx.test", 4),
            ("missing.test", 4),
            ("servfail.test", 3),
        ]),
    );
    let out = farm.campaign(&["launch", campaign.to_str().unwrap(), "--detach"]);
    assert!(out.status.success(), "{out:?}");
    let status = farm.wait_status("mx-mixed", "the end", Duration::from_secs(90), |s| {
        s.get("state").map(String::as_str) == Some("finished")
    });
    assert_eq!(number(&status, "delivered"), 55, "{status:?}");
    assert_eq!(number(&status, "failed"), 11, "{status:?}");

    let by_domain = |accepted: &[(String, String)]| -> HashMap<String, usize> {
        let mut map = HashMap::new();
        for (_, rcpt) in accepted {
            *map.entry(rcpt.rsplit('@').next().unwrap().to_owned())
                .or_default() += 1;
        }
        map
    };
    let at_alpha = by_domain(&alpha.stop());
    let at_shared = by_domain(&shared.stop());
    assert_eq!(at_alpha.get("alpha.test"), Some(&20), "{at_alpha:?}");
    assert_eq!(
        at_alpha.get("implicit.test"),
        Some(&5),
        "implicit MX (A record): {at_alpha:?}"
    );
    assert_eq!(at_shared.get("beta.test"), Some(&15), "{at_shared:?}");
    assert_eq!(at_shared.get("gamma.test"), Some(&15), "{at_shared:?}");
    assert_eq!(
        at_alpha.len() + at_shared.len(),
        4,
        "nothing else was delivered"
    );

    let log = std::fs::read_to_string(farm.dir.join("state/accounting.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let failed_text = |domain: &str| -> HashSet<String> {
        lines
            .iter()
            .filter(|l| {
                l["state"] == "failed" && l["recipient"].as_str().unwrap_or("").ends_with(domain)
            })
            .map(|l| l["text"].as_str().unwrap().to_lowercase())
            .collect()
    };
    let null_mx = failed_text("@nullmx.test");
    assert!(
        !null_mx.is_empty(),
        "the null-MX domain's recipients failed"
    );
    assert!(null_mx.iter().all(|t| t.contains("null mx")), "{null_mx:?}");
    let missing = failed_text("@missing.test");
    assert!(
        !missing.is_empty(),
        "the missing domain's recipients failed"
    );
    assert!(
        missing
            .iter()
            .all(|t| t.contains("nxdomain") || t.contains("does not exist")),
        "{missing:?}"
    );
    let servfail: Vec<_> = lines
        .iter()
        .filter(|l| {
            l["recipient"]
                .as_str()
                .unwrap_or("")
                .ends_with("@servfail.test")
        })
        .collect();
    assert!(
        servfail.iter().any(|l| l["state"] == "deferred"),
        "SERVFAIL is temporary"
    );
    assert_eq!(
        servfail.iter().filter(|l| l["state"] == "failed").count(),
        3,
        "then fails at max age"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["remote"].as_str().unwrap_or("").contains("127.0.0.3")),
        "the accounting log names the MX host"
    );
}
