//! Link generations: when the coordinator link changes, jobs queued from the old link are
//! dropped (the coordinator takes them back), and jobs of the new link are delivered even by
//! workers that were waiting for work since before the change.

mod engine_common;

use std::time::Duration;

use engine_common::{collect, common_port, emails, engine, settings, submit, Sink};
use mailfarm_protocol::Outcome;
use mailfarm_smurf::inbound::fault_sink::FaultPlan;
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_link_jobs_are_sent_by_idle_workers_and_old_ones_dropped() {
    let port = common_port(&["127.0.0.2"]);
    let sink = Sink::start("127.0.0.2", port, FaultPlan::default()).await;
    let mut settings = settings(25, "127.0.0.1:9".parse().expect("address"));
    settings.idle_timeout = Duration::from_secs(10);
    let mut engine = engine(settings, "", (1, 1));
    let relay = format!("127.0.0.2:{port}");
    let campaign = engine_common::campaign(Some(relay), 4);

    // Link 1: everything delivered; its workers then wait, idle, for more.
    let first = engine.next_generation();
    let (tx1, mut rx1) = mpsc::unbounded_channel();
    submit(
        &mut engine,
        first,
        &campaign,
        0,
        &emails("one.test", 20),
        &tx1,
    );
    let one = collect(&mut rx1, 20, Duration::from_secs(5)).await;
    assert!(one.values().all(|r| r.outcome == Outcome::Delivered));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(engine.stats().sites[0].connections > 0, "idle workers kept");

    // Link 2: its jobs go through those workers; a late job of link 1 is dropped.
    let second = engine.next_generation();
    let (tx2, mut rx2) = mpsc::unbounded_channel();
    submit(
        &mut engine,
        first,
        &campaign,
        100,
        &emails("stale.test", 5),
        &tx1,
    );
    submit(
        &mut engine,
        second,
        &campaign,
        200,
        &emails("two.test", 20),
        &tx2,
    );
    let two = collect(&mut rx2, 20, Duration::from_secs(5)).await;
    assert!(two.values().all(|r| r.outcome == Outcome::Delivered));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx1.try_recv().is_err(), "no result for a stale job");
    let accepted = sink.accepted();
    assert_eq!(accepted.len(), 40);
    assert!(accepted.iter().all(|r| !r.ends_with("@stale.test")));
    engine.shutdown().await;
    sink.stop().await;
}
