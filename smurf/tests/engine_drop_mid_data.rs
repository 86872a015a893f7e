//! Connections dropped after the message content but before the final reply: the engine
//! reports those messages Deferred, never Delivered, and the receiver holds each recipient at
//! most once. Relay mode, so no DNS at all: the resolver points at a dead address and would
//! defer every message if asked.

mod engine_common;

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use engine_common::{collect, common_port, emails, engine, settings, submit, Sink};
use mailfarm_protocol::Outcome;
use mailfarm_smurf::inbound::fault_sink::FaultPlan;
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_transfers_are_deferred_never_delivered() {
    let port = common_port(&["127.0.0.2"]);
    let plan = FaultPlan {
        drop_mid_data_ratio: 0.3,
        seed: 7,
        ..FaultPlan::default()
    };
    let sink = Sink::start("127.0.0.2", port, plan).await;
    // Nothing answers DNS there: an MX lookup would defer the message.
    let no_dns = "127.0.0.1:9".parse().expect("address");
    let mut engine = engine(settings(25, no_dns), "", (1, 1));
    let generation = engine.next_generation();
    let relay = format!("127.0.0.2:{port}");
    let campaign = engine_common::campaign(Some(relay.clone()), 4);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let count = 200;
    let list = emails("example.test", count);
    submit(&mut engine, generation, &campaign, 0, &list, &tx);
    let results = collect(&mut rx, count, Duration::from_secs(15)).await;

    let delivered: HashSet<String> = results
        .values()
        .filter(|r| r.outcome == Outcome::Delivered)
        .map(|r| list[r.id as usize].clone())
        .collect();
    let deferred: Vec<_> = results
        .values()
        .filter(|r| r.outcome == Outcome::Deferred)
        .collect();
    assert_eq!(
        delivered.len() + deferred.len(),
        count,
        "no failures expected"
    );
    let dropped = sink.stats.dropped.load(Relaxed);
    assert!((30..=100).contains(&dropped), "{dropped} drops of {count}");
    assert_eq!(
        deferred.len() as u64,
        dropped,
        "one deferral per dropped transfer"
    );
    for r in &deferred {
        assert!(r.text.contains("end of data"), "{r:?}");
        assert_eq!(r.code, 0);
        assert!(r.remote.ends_with(&format!("[127.0.0.2]:{port}")), "{r:?}");
    }
    // Exactly the delivered ones were accepted, each once.
    let accepted = sink.accepted();
    let unique: HashSet<String> = accepted.iter().cloned().collect();
    assert_eq!(unique.len(), accepted.len(), "a recipient accepted twice");
    assert_eq!(unique, delivered);
    for r in results.values().filter(|r| r.outcome == Outcome::Delivered) {
        assert_eq!(r.code, 250);
        assert_eq!(r.remote, format!("127.0.0.2[127.0.0.2]:{port}"));
    }
    // One relay site, at most the campaign's 4 sessions.
    let stats = engine.stats();
    assert_eq!(stats.sites.len(), 1, "{stats:#?}");
    assert_eq!(&*stats.sites[0].key.0, format!("relay:{relay}"));
    assert!(sink.stats.peak_connections.load(Relaxed) <= 4);
    engine.shutdown().await;
    sink.stop().await;
}
