//! Scenario: an operator follows a running campaign with `campaign watch --json`: one JSON
//! object a second, the counters as `campaign status --json` shows them plus the rates, until
//! the line that says the campaign finished.

use mailfarm_testkit::{recipients_csv, write_campaign, ProcessFarm, SmtpSink};

const RECIPIENTS: u64 = 300;

#[test]
fn campaign_watch_json_follows_a_campaign_to_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&tmp.path().join("sink"));
    let farm = ProcessFarm::start(&tmp.path().join("farm"), 1, 64);
    let campaign = tmp.path().join("c");
    write_campaign(
        &campaign,
        "watched",
        sink.addr,
        &recipients_csv(RECIPIENTS as usize, "w"),
    );
    // 100 a second: about three seconds of sending, so several lines show it under way.
    let out = farm.campaign(&[
        "launch",
        campaign.to_str().unwrap(),
        "--detach",
        "--rate",
        "100/s",
    ]);
    assert!(out.status.success(), "{out:?}");

    let watch = farm.campaign(&["watch", "watched", "--json"]);
    assert!(watch.status.success(), "{watch:?}");
    let stdout = String::from_utf8(watch.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 2, "{stdout}");

    // Every line is about this campaign; delivered never goes down; only the last is final.
    let mut delivered = 0;
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["id"], "watched", "{line}");
        let now = line["delivered"].as_u64().unwrap();
        assert!(now >= delivered, "delivered went down: {stdout}");
        delivered = now;
        assert_eq!(line["finished"] == true, i + 1 == lines.len(), "{stdout}");
        assert!(
            line["delivered_per_second"].as_f64().unwrap() >= 0.0,
            "{line}"
        );
        assert!(line["attempts_per_second"].as_f64().is_some(), "{line}");
        assert!(line["bog_queued"].as_u64().is_some(), "{line}");
        assert!(line["throttled_sites"].is_array(), "{line}");
    }
    let last = lines.last().unwrap();
    assert_eq!(last["delivered"], RECIPIENTS, "{last}");
    // Some line saw mail flowing, and the final counters are the status command's.
    assert!(
        lines
            .iter()
            .any(|l| l["delivered_per_second"].as_f64().unwrap() > 0.0),
        "{stdout}"
    );
    let status = farm.campaign_json("watched");
    assert_eq!(last["state"], status["state"], "{status}");
    assert_eq!(last["delivered"], status["delivered"], "{status}");
    assert_eq!(sink.messages().len() as u64, RECIPIENTS);
}
