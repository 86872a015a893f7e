//! Scenario: smurfs change roles at runtime while a 20,000-recipient campaign sends to Postfix
//! smtp-sink. smurf-2 goes out→in→out (and takes real mail with swaks while it is `in`),
//! smurf-3 goes out→web; taking away the last `out` node is refused without --force; the
//! assignments survive a kill -9 of the coordinator. At the sink every Message-ID arrives
//! exactly once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use mailfarm_testkit::{recipients_csv, require, write_campaign, ProcessFarm, SmtpSink};

const RECIPIENTS: usize = 20_000;

#[test]
fn smurfs_change_roles_mid_campaign_without_losing_or_doubling_mail() {
    let swaks = require("swaks");
    let tmp = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&tmp.path().join("sink"));
    let mut farm = ProcessFarm::start_full(
        &tmp.path().join("farm"),
        3,
        64,
        "",
        "[inbound]\nlisten = \"127.0.0.1:0\"\n[web]\nlisten = \"127.0.0.1:0\"\n",
    );
    let campaign = tmp.path().join("campaign");
    write_campaign(
        &campaign,
        "roles",
        sink.addr,
        &recipients_csv(RECIPIENTS, "rs"),
    );
    let out = farm.campaign(&[
        "launch",
        campaign.to_str().unwrap(),
        "--rate",
        "800/s",
        "--detach",
    ]);
    assert!(out.status.success(), "launch: {out:?}");
    for name in ["smurf-1", "smurf-2", "smurf-3"] {
        farm.wait_role(name, "out");
    }

    // smurf-2 goes in, smurf-3 goes web, while the campaign sends.
    farm.wait_campaign("roles", Duration::from_secs(300), |c| {
        c["delivered"].as_u64().unwrap() >= 2_000
    });
    farm.assign("smurf-2", "in");
    farm.assign("smurf-3", "web");
    let inbound = farm.wait_role("smurf-2", "in");
    let serving: SocketAddr = inbound["serving"].as_str().unwrap().parse().unwrap();
    let web = farm.wait_role("smurf-3", "web");
    let web_addr: SocketAddr = web["serving"].as_str().unwrap().parse().unwrap();
    assert!(std::net::TcpStream::connect(web_addr).is_ok(), "{web}");

    // smurf-1 is now the last `out` node: taking it away is refused without --force.
    let refused = farm.farm(&["assign", "smurf-1", "in"]);
    assert!(!refused.status.success(), "{refused:?}");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("last `out` node"), "{why}");
    assert_eq!(farm.node_json("smurf-1")["role"], "out");

    // smurf-2 takes real mail while it is `in`.
    let mail = std::process::Command::new(&swaks)
        .args(["--server", &serving.to_string()])
        .args(["--to", "postmaster@bounces.sender.test"])
        .args(["--from", "someone@elsewhere.test"])
        .args(["--body", "hello postmaster"])
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&mail.stdout);
    assert!(mail.status.success(), "swaks: {transcript}");
    assert!(transcript.contains("<-  250"), "{transcript}");

    // The assignments are durable: kill -9 the coordinator; the roles come back.
    farm.crash_and_restart_coordinator();
    let inbound = farm.wait_role("smurf-2", "in");
    assert_eq!(farm.node_json("smurf-3")["role"], "web");
    let farm_view = farm.farm(&["watch", "--json", "--count", "2"]);
    assert!(farm_view.status.success(), "{farm_view:?}");

    // And back to out: its inbound address stops answering.
    farm.assign("smurf-2", "out");
    farm.wait_role("smurf-2", "out");
    let old: SocketAddr = inbound["serving"].as_str().unwrap().parse().unwrap();
    assert!(
        std::net::TcpStream::connect_timeout(&old, Duration::from_secs(2)).is_err(),
        "a node that is not `in` must refuse SMTP connections"
    );

    let end = farm.wait_campaign("roles", Duration::from_secs(600), |c| c["finished"] == true);
    assert_eq!(end["finished"], true, "{end}");
    assert_eq!(end["delivered"], RECIPIENTS as u64, "{end}");

    // At the sink: every Message-ID exactly once.
    let mut ids: HashMap<String, u32> = HashMap::new();
    for (_, raw) in sink.messages() {
        let text = String::from_utf8_lossy(&raw);
        let id = text
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("message-id")
                    .then(|| value.trim().to_owned())
            })
            .expect("every message has a Message-ID");
        *ids.entry(id).or_default() += 1;
    }
    let duplicates = ids.values().filter(|&&n| n > 1).count();
    assert_eq!(duplicates, 0, "duplicated Message-IDs");
    assert_eq!(ids.len(), RECIPIENTS, "lost messages");
}
