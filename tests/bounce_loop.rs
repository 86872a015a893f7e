//! Scenario (the bounce loop with a real MTA): a campaign goes to a private Postfix that
//! accepts every address of example.test and then fails local delivery for the unknown ones,
//! so Postfix itself writes the DSNs and sends them to the signed VERP return paths, which its
//! transport map routes to the farm's `in` node. The `bounce` node classifies them
//! (userunknown, hard), the addresses are suppressed farm-wide, and a second campaign to the
//! same list skips them. Until a node is assigned `bounce`, the returned mail waits in the
//! coordinator's queue, through a kill -9 of the coordinator and of the `in` node. Then a
//! Postfix that refuses unknown users at RCPT time (the synchronous path), and an ARF complaint
//! sent to a real message's return path.

use std::time::Duration;

use mailfarm_testkit::postfix::Postfix;
use mailfarm_testkit::{free_port, require, write_campaign, ProcessFarm};

const GHOSTS: [&str; 2] = ["ghost1@example.test", "ghost2@example.test"];

fn csv(addresses: &[&str]) -> String {
    let mut csv = String::from("email,first_name,code\n");
    for (i, a) in addresses.iter().enumerate() {
        csv.push_str(&format!("{a},N{i},{i}\n"));
    }
    csv
}

fn launch(farm: &ProcessFarm, dir: &std::path::Path) {
    let out = farm.campaign(&["launch", dir.to_str().unwrap(), "--detach"]);
    assert!(out.status.success(), "launch: {out:?}");
}

/// Waits (up to 60 s) until the bounce queue's depth satisfies `ok`.
fn wait_queue(farm: &ProcessFarm, ok: impl Fn(u64) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let view = farm.farm(&["watch", "--json", "--count", "1"]);
        if let Ok(snapshot) = serde_json::from_slice::<serde_json::Value>(&view.stdout) {
            if snapshot["bounce_queue"].as_u64().is_some_and(&ok) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{snapshot}");
        }
        assert!(std::time::Instant::now() < deadline, "{view:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn reasons(c: &serde_json::Value) -> String {
    c["bounce_reasons"].to_string()
}

#[test]
fn bounces_and_complaints_suppress_addresses_for_the_next_campaign() {
    let swaks = require("swaks");
    let tmp = tempfile::tempdir().unwrap();
    let in_port = free_port();
    let mut farm = ProcessFarm::start_full(
        &tmp.path().join("farm"),
        3,
        16,
        "",
        &format!("[inbound]\nlisten = \"127.0.0.1:{in_port}\"\nhostname = \"mx.bounces.test\"\n"),
    );
    farm.assign("smurf-2", "in");
    farm.wait_role("smurf-2", "in");

    // Postfix accepts everyone at RCPT time, local(8) then bounces the unknown users, and the
    // DSN goes to the VERP return path, routed to the `in` node.
    let accepting = Postfix::start_with(&format!(
        "local_recipient_maps =\n\
         transport_maps = inline:{{ bounces.sender.test=smtp:[127.0.0.1]:{in_port} }}\n\
         smtp_tls_security_level = none\n\
         queue_run_delay = 1s\n\
         minimal_backoff_time = 1s\n"
    ));
    let first = tmp.path().join("first");
    let list = [GHOSTS[0], GHOSTS[1], "rcpt@example.test"];
    write_campaign(&first, "first", accepting.plain_addr, &csv(&list));
    launch(&farm, &first);
    // No bounce node yet: the returned mail waits in the coordinator's queue.
    wait_queue(&farm, |depth| depth == 2);
    assert_eq!(farm.campaign_json("first")["bounced_hard"], 0);
    // kill -9 of the coordinator and of the `in` node loses none of it, and the restarted
    // node gets its role back.
    farm.crash_and_restart_coordinator();
    farm.smurfs[1].child.kill().unwrap();
    farm.smurfs[1].child.wait().unwrap();
    farm.start_smurf("smurf-2");
    farm.wait_role("smurf-2", "in");
    wait_queue(&farm, |depth| depth == 2);
    // A bounce node drains the backlog.
    farm.assign("smurf-3", "bounce");
    farm.wait_role("smurf-3", "bounce");
    let c = farm.wait_campaign("first", Duration::from_secs(120), |c| {
        c["bounced_hard"].as_u64() == Some(2)
    });
    assert_eq!(c["delivered"], 3, "Postfix accepted all three: {c}");
    assert!(reasons(&c).contains("userunknown"), "{c}");

    // The same list again: the bounced addresses are set aside at ingest.
    let again = tmp.path().join("again");
    write_campaign(&again, "again", accepting.plain_addr, &csv(&list));
    launch(&farm, &again);
    let c = farm.wait_campaign("again", Duration::from_secs(60), |c| c["finished"] == true);
    assert_eq!(c["suppressed"], 2, "{c}");
    assert_eq!(c["total"], 1, "{c}");

    // The synchronous path: a Postfix that refuses unknown users at RCPT time.
    let refusing = Postfix::start();
    let sync_list = ["nobody-here@example.test", "rcpt@example.test"];
    let sync = tmp.path().join("sync");
    write_campaign(&sync, "sync", refusing.plain_addr, &csv(&sync_list));
    launch(&farm, &sync);
    let c = farm.wait_campaign("sync", Duration::from_secs(60), |c| c["finished"] == true);
    assert_eq!(
        (c["delivered"].as_u64(), c["failed"].as_u64()),
        (Some(1), Some(1)),
        "{c}"
    );
    assert_eq!(c["bounced_hard"], 1, "{c}");
    let sync_again = tmp.path().join("sync-again");
    write_campaign(
        &sync_again,
        "sync-again",
        refusing.plain_addr,
        &csv(&sync_list),
    );
    launch(&farm, &sync_again);
    let c = farm.wait_campaign("sync-again", Duration::from_secs(60), |c| {
        c["finished"] == true
    });
    assert_eq!(c["suppressed"], 1, "{c}");

    // The mailto: of List-Unsubscribe, signed like the return path: mail to it unsubscribes.
    let key = mailfarm_pki::load_secret(&farm.dir.join("verp.key")).unwrap();
    let mailto = mailfarm_templates::UnsubscribeSigner::from_verp_key(&key).mailto_address(
        "first",
        2,
        "bounces.sender.test",
    );
    let sent = std::process::Command::new(&swaks)
        .args(["--server", &format!("127.0.0.1:{in_port}")])
        .args(["--from", "rcpt@example.test", "--to", &mailto])
        .args(["--header", "Subject: unsubscribe", "--body", "unsubscribe"])
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stdout)
    );
    let c = farm.wait_campaign("first", Duration::from_secs(60), |c| c["unsubscribed"] == 1);
    assert_eq!(c["unsubscribed"], 1, "{c}");
    // A forged one is refused at RCPT time.
    let forged = mailfarm_templates::UnsubscribeSigner::from_verp_key(b"another key")
        .mailto_address("first", 2, "bounces.sender.test");
    let refused = std::process::Command::new(&swaks)
        .args(["--server", &format!("127.0.0.1:{in_port}")])
        .args(["--from", "rcpt@example.test", "--to", &forged])
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "a forged unsubscribe address was accepted"
    );

    // An ARF complaint about a message rcpt@example.test really got, sent to its return path.
    let delivered = refusing.wait_for_messages(1);
    let return_path = delivered[0]
        .lines()
        .find_map(|l| l.strip_prefix("Return-Path: <"))
        .and_then(|l| l.strip_suffix('>'))
        .expect("the delivered message has a Return-Path")
        .to_owned();
    let original_headers: String = delivered[0]
        .split("\n\n")
        .next()
        .unwrap()
        .replace('\n', "\r\n");
    let arf = format!(
        "From: feedback@provider.test\r\nTo: {return_path}\r\nSubject: complaint\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=feedback-report; boundary=\"arf\"\r\n\r\n\
         --arf\r\nContent-Type: text/plain\r\n\r\nA user marked this message as spam.\r\n\
         --arf\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n\
         User-Agent: provider/1.0\r\nVersion: 1\r\nOriginal-Mail-From: <{return_path}>\r\n\
         Original-Rcpt-To: <rcpt@example.test>\r\n\r\n\
         --arf\r\nContent-Type: text/rfc822-headers\r\n\r\n{original_headers}\r\n--arf--\r\n"
    );
    let arf_file = tmp.path().join("arf.eml");
    std::fs::write(&arf_file, arf).unwrap();
    let sent = std::process::Command::new(&swaks)
        .args(["--server", &format!("127.0.0.1:{in_port}")])
        .args(["--from", "feedback@provider.test", "--to", &return_path])
        .arg("--data")
        .arg(&arf_file)
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stdout)
    );
    // Either sync campaign's message may be the older one: the return path names which.
    let local = return_path.split('@').next().unwrap();
    let campaign = local
        .strip_prefix("b-")
        .and_then(|rest| rest.rsplitn(3, '-').nth(2))
        .expect("a VERP return path")
        .to_owned();
    let c = farm.wait_campaign(&campaign, Duration::from_secs(60), |c| c["complaints"] == 1);
    assert_eq!(c["complaints"], 1, "{c}");
    let last = tmp.path().join("last");
    write_campaign(&last, "last", refusing.plain_addr, &csv(&sync_list));
    launch(&farm, &last);
    let c = farm.wait_campaign("last", Duration::from_secs(60), |c| c["finished"] == true);
    assert_eq!(c["suppressed"], 2, "the complainer is suppressed too: {c}");
    // The accounting log has a line per applied bounce and per message the `in` node took.
    let log = std::fs::read_to_string(farm.dir.join("state/accounting.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let bounce_lines = lines
        .iter()
        .filter(|l| l["event"] == "bounce" && l["reason"] == "userunknown")
        .count();
    assert!(
        bounce_lines >= 2,
        "bounce lines in the accounting log: {bounce_lines}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["kind"] == "unsubscribe" && l["rcpt_to"][0] == mailto),
        "the in node's line for the mailto unsubscribe"
    );

    // The queue drained: nothing waits for a bounce node; the `in` counters (reported every
    // second, counted since the coordinator and the node restarted) show the unsubscribe and
    // the complaint.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let farm_view = farm.farm(&["watch", "--json", "--count", "1"]);
        let snapshot: serde_json::Value = serde_json::from_slice(&farm_view.stdout).unwrap();
        let to_bounce = snapshot["inbound"]["to_bounce"].as_u64().unwrap();
        if snapshot["bounce_queue"] == 0 && to_bounce >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{snapshot}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
