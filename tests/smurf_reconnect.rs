//! Scenario: the coordinator dies and comes back on the same address; a smurf process that was
//! connected reconnects on its own (with backoff) and serves the next campaign.

use std::time::Duration;

use mailfarm_testkit::{launch_event, mailfarm, write_campaign, Daemon, ProcessFarm, SmtpSink};

#[test]
fn smurf_reconnects_after_the_coordinator_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&tmp.path().join("sink"));
    let mut farm = ProcessFarm::start(&tmp.path().join("farm"), 1, 64);
    let addr = farm.addr;
    farm.coordinator.child.kill().unwrap();
    farm.coordinator.child.wait().unwrap();

    // Same address, so the smurf's configured coordinator is right again.
    std::fs::write(
        farm.dir.join("coordinator.toml"),
        format!("listen = \"{addr}\"\nfarm_dir = \".\"\n"),
    )
    .unwrap();
    let mut command = mailfarm();
    command
        .arg("coordinator")
        .arg("--config")
        .arg(farm.dir.join("coordinator.toml"));
    let mut coordinator = Daemon::spawn("coordinator-2", command);
    coordinator.wait_line("its listening address", Duration::from_secs(30), |l| {
        l.starts_with("mailfarm coordinator listening on ")
    });
    farm.coordinator = coordinator;
    farm.wait_joined(1);

    let campaign = tmp.path().join("c");
    write_campaign(
        &campaign,
        "after-restart",
        sink.addr,
        "email,first_name,code\na@x.example,A,1\nb@x.example,B,2\n",
    );
    let out = farm.campaign(&["launch", campaign.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{out:?}");
    let summary = launch_event(&out, "summary");
    assert_eq!(summary["delivered"], 2, "{summary}");
    assert_eq!(sink.messages().len(), 2);
    // The node the new coordinator sees is the same smurf process, never restarted: it
    // reconnected on its own.
    assert!(
        farm.smurfs[0].child.try_wait().unwrap().is_none(),
        "the smurf process exited:\n{}",
        farm.smurfs[0].output()
    );
    let node = farm.node_json("smurf-1");
    assert_eq!(node["connected"], true, "{node}");
}
