//! Scenario: a campaign delivered by MX routing to a real Postfix smtpd (a private instance
//! delivering to a maildir), with STARTTLS required and the server certificate verified
//! against the test CA. Every message arrives over TLS, personalised for its recipient.

use mailfarm_testkit::dns;
use mailfarm_testkit::postfix;

use mailfarm_testkit::{number, write_campaign_direct, ProcessFarm};

#[test]
fn campaign_arrives_over_required_starttls_at_postfix() {
    let tmp = tempfile::tempdir().unwrap();
    let mta = postfix::Postfix::start();
    let dns = dns::TestDns::start(&[
        "example.test. 300 IN MX 10 mx.test.",
        "mx.test. 300 IN A 127.0.0.1",
    ]);
    let farm = ProcessFarm::start_full(
        &tmp.path().join("farm"),
        1,
        32,
        "",
        &format!(
            "{}\n[tls]\npolicy = \"required\"\nverify = {{ custom_roots = \"{}\" }}",
            dns.smurf_config(mta.tls_addr.port()),
            mta.ca_pem.display()
        ),
    );
    let mut csv = String::from("email,first_name,code\n");
    for i in 0..10 {
        csv.push_str(&format!("rcpt+{i}@example.test,Reader{i},C0DE{i}\n"));
    }
    let campaign = tmp.path().join("c");
    write_campaign_direct(&campaign, "tls", &csv);
    let out = farm.campaign(&["launch", campaign.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(number(&farm.status("tls"), "delivered"), 10);

    let messages = mta.wait_for_messages(10);
    for i in 0..10 {
        let message = messages
            .iter()
            .find(|m| m.contains(&format!("rcpt+{i}@example.test")))
            .unwrap_or_else(|| panic!("no message for rcpt+{i}"));
        assert!(
            message.contains(&format!("your code is C0DE{i}")),
            "{message}"
        );
        assert!(
            message.contains("(using TLSv1."),
            "not received over TLS: {message}"
        );
    }
    assert!(mta.maillog().contains("TLS connection established"));
}
