//! The bog against real peers (unbound + fault sinks): a site whose MX refuses service
//! (greeting 421) goes to the slow lane while a healthy site keeps its full speed; once the
//! dead site is healthy again, a probe succeeds and it is back in the fast lane. Requires
//! `/usr/sbin/unbound`.

mod engine_common;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use engine_common::{collect, common_port, emails, engine, settings, submit, Sink};
use mailfarm_protocol::Outcome;
use mailfarm_smurf::delivery::{DeliveryEngine, Lane};
use mailfarm_smurf::inbound::fault_sink::FaultPlan;
use mailfarm_testkit::dns::TestDns;
use tokio::sync::mpsc;

const ZONE: &[&str] = &[
    "good.test. 300 IN MX 10 mx.good.test.",
    "mx.good.test. 300 IN A 127.0.0.2",
    "dead.test. 300 IN MX 10 mx.dead.test.",
    "mx.dead.test. 300 IN A 127.0.0.3",
];

/// Fast lane at 200/s; a quick bog (5 failures, 4 probes/s) so the test stays short.
const SHAPING: &str = r#"
[default]
message_rate = "200/s"
connection_rate = "50/s"
ramp_up = "0s"
[bog]
after_failures = 5
rate = "4/s"
max_queued = 8
"#;

fn lane(engine: &DeliveryEngine, site: &str) -> Option<Lane> {
    engine.stats().site(site).map(|s| s.lane)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_site_goes_to_the_bog_without_slowing_others_and_comes_back() {
    let dns = TestDns::start(ZONE);
    let port = common_port(&["127.0.0.2", "127.0.0.3"]);
    let good = Sink::start("127.0.0.2", port, FaultPlan::default()).await;
    let refusing = FaultPlan {
        greeting: Some("421 4.3.2 Service not available, closing channel".into()),
        ..FaultPlan::default()
    };
    let dead = Sink::start("127.0.0.3", port, refusing).await;
    let mut engine = engine(settings(port, dns.addr), SHAPING, (1, 1));
    let generation = engine.next_generation();
    let campaign = engine_common::campaign(None, 1);
    let (good_tx, mut good_rx) = mpsc::unbounded_channel();
    let (dead_tx, mut dead_rx) = mpsc::unbounded_channel();

    // Interleaved, as a campaign's list would be.
    let count = 100;
    let good_list = emails("good.test", count);
    let dead_list = emails("dead.test", count);
    let started = Instant::now();
    for i in 0..count {
        submit(
            &mut engine,
            generation,
            &campaign,
            i as u64,
            &good_list[i..=i],
            &good_tx,
        );
        submit(
            &mut engine,
            generation,
            &campaign,
            1000 + i as u64,
            &dead_list[i..=i],
            &dead_tx,
        );
    }

    // The healthy site is not held up: all delivered at its own pace.
    let results = collect(&mut good_rx, count, Duration::from_secs(5)).await;
    let good_time = started.elapsed();
    assert!(results.values().all(|r| r.outcome == Outcome::Delivered));
    assert!(
        good_time < Duration::from_secs(3),
        "healthy site took {good_time:?}"
    );
    assert_eq!(good.accepted().len(), count);
    assert_eq!(lane(&engine, "mx.good.test"), Some(Lane::Fast));

    // The dead site is in the bog; every one of its messages is deferred, most without an
    // attempt (the bog keeps 8 queued), and its MX saw few connections.
    let dead_results = collect(&mut dead_rx, count, Duration::from_secs(10)).await;
    assert!(dead_results
        .values()
        .all(|r| r.outcome == Outcome::Deferred));
    let stats = engine.stats();
    let site = stats.site("mx.dead.test").expect("dead site");
    assert_eq!(site.lane, Lane::Bog, "{site:?}");
    assert_eq!((site.max_connections, site.rate), (1, Some(4.0)));
    assert_eq!(stats.bog_sites, 1);
    let attempts = dead.stats.connections.load(Relaxed);
    assert!(
        (5..=30).contains(&attempts),
        "{attempts} connections to the dead MX"
    );
    let refused = dead_results.values().filter(|r| r.code == 421).count() as u64;
    assert_eq!(refused, attempts, "one deferral per refused session");
    let shed = dead_results
        .values()
        .filter(|r| r.text.contains("in the bog"))
        .count();
    assert!(shed >= 60, "only {shed} shed by the bog");

    // The MX recovers: the next probe succeeds and the site is fast again.
    dead.stop().await;
    let healed = Sink::start("127.0.0.3", port, FaultPlan::default()).await;
    let retry = emails("dead.test", 5);
    submit(&mut engine, generation, &campaign, 2000, &retry, &dead_tx);
    let back = collect(&mut dead_rx, retry.len(), Duration::from_secs(8)).await;
    assert!(
        back.values().all(|r| r.outcome == Outcome::Delivered),
        "{back:?}"
    );
    assert_eq!(lane(&engine, "mx.dead.test"), Some(Lane::Fast));
    assert_eq!(engine.stats().bog_sites, 0);
    // Fast lane again: a burst goes through at full speed.
    let burst = emails("dead.test", 60);
    let burst_start = Instant::now();
    submit(&mut engine, generation, &campaign, 3000, &burst, &dead_tx);
    let burst_results = collect(&mut dead_rx, burst.len(), Duration::from_secs(8)).await;
    assert!(burst_results
        .values()
        .all(|r| r.outcome == Outcome::Delivered));
    assert!(
        burst_start.elapsed() < Duration::from_secs(4),
        "recovered site took {:?}",
        burst_start.elapsed()
    );
    assert_eq!(healed.accepted().len(), retry.len() + burst.len());

    engine.shutdown().await;
    good.stop().await;
    healed.stop().await;
}
