//! Scenario: the coordinator is killed with SIGKILL at random moments of a campaign and
//! restarted. Every recipient still gets its message (counted by Message-ID at a real sink,
//! Postfix's smtp-sink), and a recipient gets more than one only if it was in flight at a
//! crash: duplicates stay within crashes x smurfs x window.

use std::collections::HashMap;
use std::time::Duration;

use mailfarm_testkit::{number, recipients_csv, write_campaign, ProcessFarm, SmtpSink};

const WINDOW: u64 = 32;
const SMURFS: u64 = 2;
const RECIPIENTS: u64 = 4000;
const CRASHES: u64 = 3;

#[test]
fn coordinator_crashes_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&tmp.path().join("sink"));
    let mut farm = ProcessFarm::start(&tmp.path().join("farm"), SMURFS as u32, WINDOW as u32);
    let campaign = tmp.path().join("c");
    write_campaign(
        &campaign,
        "coord-crash",
        sink.addr,
        &recipients_csv(RECIPIENTS as usize, "cc"),
    );
    // A rate cap keeps the campaign running long enough to crash it several times.
    let out = farm.campaign(&[
        "launch",
        campaign.to_str().unwrap(),
        "--detach",
        "--rate",
        "600/s",
    ]);
    assert!(out.status.success(), "{out:?}");

    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for crash in 0..CRASHES {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // A random point within the next slice of the campaign.
        let slice = RECIPIENTS / (CRASHES + 1);
        let target = slice * crash + rng % slice + 50;
        farm.wait_status("coord-crash", "progress", Duration::from_secs(120), |s| {
            number(s, "delivered") >= target
        });
        farm.crash_and_restart_coordinator();
        farm.wait_joined(SMURFS as usize);
    }
    let status = farm.wait_status("coord-crash", "end", Duration::from_secs(300), |s| {
        s.get("state").map(String::as_str) == Some("finished")
    });
    assert_eq!(number(&status, "delivered"), RECIPIENTS, "{status:?}");
    assert_eq!(number(&status, "failed"), 0, "{status:?}");
    // Attempts come from the store: a restart does not make them fewer than the deliveries.
    let json = farm.campaign_json("coord-crash");
    assert!(
        json["attempts"].as_u64().unwrap() >= RECIPIENTS,
        "attempts after the restarts: {json}"
    );
    assert!(json["traffic_since_ms"].as_u64().unwrap() > 0, "{json}");

    let mut per_recipient: HashMap<String, u64> = HashMap::new();
    let mut message_ids = std::collections::HashSet::new();
    for (rcpt, raw) in sink.messages() {
        *per_recipient.entry(rcpt).or_default() += 1;
        let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert!(
            message_ids.insert(parsed.message_id().unwrap().to_owned()),
            "Message-IDs are unique per rendering"
        );
    }
    assert_eq!(per_recipient.len() as u64, RECIPIENTS, "nobody lost");
    let duplicates: u64 = per_recipient.values().map(|n| n - 1).sum();
    let bound = CRASHES * SMURFS * WINDOW;
    println!("{CRASHES} coordinator crashes: {duplicates} duplicate deliveries (bound {bound})");
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates exceed {bound}"
    );
}
