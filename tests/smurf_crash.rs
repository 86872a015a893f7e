//! Scenario: a smurf is killed with SIGKILL mid-campaign and restarted. No recipient is lost,
//! duplicates stay within the smurf's window (only what was in flight at the kill), and the
//! restarted smurf, which kept the template in its state folder, is not sent it again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mailfarm_testkit::{write_campaign, ProcessFarm, SmtpSink};

const WINDOW: usize = 32;
const RECIPIENTS: usize = 3000;

fn number(map: &HashMap<String, String>, key: &str) -> usize {
    mailfarm_testkit::number(map, key) as usize
}

#[test]
fn killed_smurf_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&tmp.path().join("sink"));
    let mut farm = ProcessFarm::start(&tmp.path().join("farm"), 2, WINDOW as u32);
    let mut csv = String::from("email,first_name,code\n");
    for i in 0..RECIPIENTS {
        csv.push_str(&format!("k{i}@d{}.example,N{i},{i}\n", i % 5));
    }
    let campaign = tmp.path().join("c");
    write_campaign(&campaign, "smurf-crash", sink.addr, &csv);
    let out = farm.campaign(&["launch", campaign.to_str().unwrap(), "--detach"]);
    assert!(out.status.success(), "{out:?}");

    // Let some mail flow, then kill smurf-1 hard.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = farm.status("smurf-crash");
        if number(&status, "delivered") >= 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {status:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let victim = farm.smurfs.remove(0);
    assert_eq!(victim.name, "smurf-1");
    drop(victim); // SIGKILL
    farm.start_smurf("smurf-1");

    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        let status = farm.status("smurf-crash");
        if status.get("state").map(String::as_str) == Some("finished") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "campaign did not finish: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(number(&status, "delivered"), RECIPIENTS, "{status:?}");
    assert_eq!(
        number(&status, "template-shipments"),
        2,
        "the restarted smurf held the template already: {status:?}"
    );

    let mut seen: HashMap<String, usize> = HashMap::new();
    for (rcpt, _) in sink.messages() {
        *seen.entry(rcpt).or_default() += 1;
    }
    assert_eq!(seen.len(), RECIPIENTS, "every recipient reached the sink");
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    assert!(
        duplicates <= WINDOW,
        "{duplicates} duplicates exceed the in-flight window {WINDOW}"
    );
}
