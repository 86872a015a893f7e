//! Scenario: a campaign flows CLI -> coordinator -> QUIC -> two smurf processes -> Postfix
//! smtp-sink, and every recipient gets exactly one message carrying its own fields.

use std::collections::HashMap;
use std::time::Duration;

use mailfarm_testkit::{launch_event, number, write_campaign, ProcessFarm, SmtpSink};

#[test]
fn every_recipient_gets_exactly_one_personalised_message() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&tmp.path().join("sink"));
    let mut farm = ProcessFarm::start(&tmp.path().join("farm"), 2, 16);

    let mut csv = String::from("email,first_name,code\n");
    let mut expected = HashMap::new();
    for i in 0..300u32 {
        let email = format!("r{i}@d{}.example", i % 7);
        let name = if i % 3 == 0 {
            format!("Zoë{i}")
        } else {
            format!("Ann{i}")
        };
        let code = format!("{:08x}", i.wrapping_mul(2_654_435_761));
        csv.push_str(&format!("{email},{name},{code}\n"));
        expected.insert(email, (name, code));
    }
    // Bad rows are set aside, not sent, and do not stop the campaign.
    csv.push_str("not-an-address,Bad,0\nr1@d1.example,Duplicate,0\n");
    let campaign = tmp.path().join("campaign");
    write_campaign(&campaign, "e2e-sink", sink.addr, &csv);

    let launch = farm.campaign(&["launch", campaign.to_str().unwrap(), "--json"]);
    assert!(launch.status.success(), "launch failed:\n{launch:?}");
    let launched = launch_event(&launch, "launched");
    assert_eq!(launched["rejected_rows"], 2, "{launched}");
    assert_eq!(
        launched["rejects"].as_array().map(Vec::len),
        Some(2),
        "{launched}"
    );
    let summary = launch_event(&launch, "summary");
    assert_eq!(summary["delivered"], 300, "{summary}");

    let messages = sink.messages();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (rcpt, raw) in &messages {
        *seen.entry(rcpt.clone()).or_default() += 1;
        let (name, code) = expected
            .get(rcpt)
            .unwrap_or_else(|| panic!("sink received mail for unknown {rcpt}"));
        let parsed = mail_parser::MessageParser::default().parse(raw).unwrap();
        let text = parsed.body_text(0).unwrap();
        assert!(
            text.contains(&format!("Hello {name}, your code is {code}.")),
            "{rcpt} got someone else's text: {text}"
        );
        let html = parsed.body_html(0).unwrap();
        assert!(html.contains(&format!("code {code}")), "{rcpt}: {html}");
        assert_eq!(parsed.subject(), Some(format!("Hi {name}").as_str()));
        let to = parsed
            .to()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .unwrap();
        assert_eq!(to, rcpt);
    }
    assert_eq!(
        messages.len(),
        300,
        "the sink must see exactly 300 messages"
    );
    assert_eq!(seen.len(), 300, "every recipient once");
    assert!(seen.values().all(|&n| n == 1));

    // The template crossed the wire once per smurf, and only data after that.
    let status = farm.status("e2e-sink");
    assert_eq!(status["state"], "finished", "{status:?}");
    assert_eq!(number(&status, "delivered"), 300, "{status:?}");
    assert_eq!(
        number(&status, "template-shipments"),
        2,
        "template once per smurf: {status:?}"
    );
    for smurf in &farm.smurfs {
        assert!(
            smurf.count_lines(|l| l.contains("template received")) == 1,
            "{} must receive the template exactly once:\n{}",
            smurf.name,
            smurf.output()
        );
    }

    // Graceful shutdown on SIGTERM.
    for smurf in &mut farm.smurfs {
        assert!(smurf.terminate(Duration::from_secs(20)).success());
    }
    assert!(farm
        .coordinator
        .terminate(Duration::from_secs(20))
        .success());
}
