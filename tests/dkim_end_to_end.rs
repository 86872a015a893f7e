//! Scenario: a smurf configured with an Ed25519 DKIM key signs every message of a campaign; each
//! message as Postfix's smtp-sink received it verifies with dkimpy (an independent verifier),
//! which fetches the public key from a real DNS server (unbound) serving the selector record.

use mailfarm_testkit::{dkimpy, dns};

use std::process::Command;

use mailfarm_testkit::{number, recipients_csv, require, write_campaign, ProcessFarm, SmtpSink};

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new(require("openssl"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
    out.stdout
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
fn every_message_carries_a_dkim_signature_that_dkimpy_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("dkim.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        key.to_str().unwrap(),
    ]);
    let der = openssl(&[
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-outform",
        "DER",
    ]);
    let public = base64(&der[der.len() - 32..]);
    let dns = dns::TestDns::start(&[&format!(
        "mf1._domainkey.sender.test. 300 IN TXT \"v=DKIM1; k=ed25519; p={public}\""
    )]);
    let sink = SmtpSink::start(&tmp.path().join("sink"));
    let farm = ProcessFarm::start_full(
        &tmp.path().join("farm"),
        1,
        32,
        "",
        &format!(
            "[[dkim]]\ndomain = \"sender.test\"\nselector = \"mf1\"\nalgorithm = \"ed25519-sha256\"\nprivate_key = \"{}\"",
            key.display()
        ),
    );
    let campaign = tmp.path().join("c");
    write_campaign(&campaign, "dkim", sink.addr, &recipients_csv(20, "dk"));
    // Non-ASCII text: smtp-sink announces 8BITMIME, so the parts travel as 8bit, unencoded,
    // and the signature must hold over the 8-bit body.
    std::fs::write(
        campaign.join("body.txt.hbs"),
        "Hello {{first_name}}, schöne Grüße — your code is {{code}}.\n",
    )
    .unwrap();
    let out = farm.campaign(&["launch", campaign.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(number(&farm.status("dkim"), "delivered"), 20);

    let messages = sink.messages();
    assert_eq!(messages.len(), 20);
    for (i, (rcpt, raw)) in messages.iter().enumerate() {
        // smtp-sink stores lines with LF; the message travelled with CRLF.
        let text = String::from_utf8(raw.clone()).unwrap();
        assert!(text.contains("DKIM-Signature:"), "{rcpt} is not signed");
        assert!(
            text.contains("Content-Transfer-Encoding: 8bit") && text.contains("schöne Grüße"),
            "{rcpt}: the text part travels as 8bit"
        );
        let crlf = text.replace("\r\n", "\n").replace('\n', "\r\n");
        let file = tmp.path().join(format!("m{i}.eml"));
        std::fs::write(&file, &crlf).unwrap();
        assert!(
            dkimpy::verifies(&file, &["--dns", &dns.addr.to_string()]),
            "dkimpy rejected the signature for {rcpt}"
        );
        if i == 0 {
            // And the verification can fail: alter the body.
            let tampered = crlf.replacen("Hello", "Jello", 1);
            std::fs::write(&file, tampered).unwrap();
            assert!(
                !dkimpy::verifies(&file, &["--dns", &dns.addr.to_string()]),
                "a tampered message must fail"
            );
        }
    }
}
