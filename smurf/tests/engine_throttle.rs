//! Rates against real peers (unbound + fault sinks): two engines, as two smurfs each holding
//! half of a farm-wide "20/s", never push one site past 20 messages in any second; and a site
//! that throttles with 421 makes the engine learn a lower rate and retry the refused messages
//! itself, losing none. Requires
//! `/usr/sbin/unbound`.

mod engine_common;

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use engine_common::{collect, common_port, emails, engine, settings, submit, Sink};
use mailfarm_protocol::Outcome;
use mailfarm_smurf::delivery::Lane;
use mailfarm_smurf::inbound::fault_sink::FaultPlan;
use mailfarm_testkit::dns::TestDns;
use tokio::sync::mpsc;

const ZONE: &[&str] = &[
    "thr.test. 300 IN MX 10 mx.thr.test.",
    "mx.thr.test. 300 IN A 127.0.0.2",
];
const SITE: &str = "mx.thr.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_smurfs_share_a_farm_wide_rate() {
    let dns = TestDns::start(ZONE);
    let port = common_port(&["127.0.0.2"]);
    let sink = Sink::start("127.0.0.2", port, FaultPlan::default()).await;
    let shaping = r#"
[default]
ramp_up = "0s"
[domain."thr.test"]
message_rate = "20/s"
"#;
    let campaign = engine_common::campaign(None, 1);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let per_engine = 70;
    let mut engines = Vec::new();
    for e in 0..2u64 {
        // Each smurf gets half of the farm's limits.
        let mut engine = engine(settings(port, dns.addr), shaping, (1, 2));
        let generation = engine.next_generation();
        let list = emails("thr.test", 2 * per_engine);
        let mine = &list[(e as usize * per_engine)..((e as usize + 1) * per_engine)];
        submit(&mut engine, generation, &campaign, e * 1000, mine, &tx);
        engines.push(engine);
    }
    let stats = engines[0].stats();
    let site = stats.site(SITE).expect("site");
    assert_eq!(site.rate, Some(10.0), "half of 20/s: {site:?}");

    let results = collect(&mut rx, 2 * per_engine, Duration::from_secs(15)).await;
    assert!(results.values().all(|r| r.outcome == Outcome::Delivered));
    let histogram = sink.stats.per_second_snapshot();
    let busiest = histogram.values().copied().max().unwrap_or(0);
    eprintln!("messages per second: {histogram:?}");
    // 20/s plus the small bursts (one message per limiter) and timing jitter.
    assert!(
        busiest <= 23,
        "a second saw {busiest} messages: {histogram:?}"
    );
    // Not vacuous: the full seconds ran near the farm-wide rate.
    let full: Vec<u64> = histogram.values().copied().collect();
    let inner = &full[1..full.len() - 1];
    let mean = inner.iter().sum::<u64>() as f64 / inner.len() as f64;
    assert!(mean >= 15.0, "mean {mean}/s: {histogram:?}");
    for engine in engines {
        engine.shutdown().await;
    }
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_site_makes_the_engine_back_off_without_loss() {
    let dns = TestDns::start(ZONE);
    let port = common_port(&["127.0.0.2"]);
    let plan = FaultPlan {
        throttle_rate: Some(30.0),
        ..FaultPlan::default()
    };
    let sink = Sink::start("127.0.0.2", port, plan).await;
    let shaping = r#"
[default]
message_rate = "100/s"
connection_rate = "100/s"
max_connections = 4
ramp_up = "0s"
"#;
    let mut engine = engine(settings(port, dns.addr), shaping, (1, 1));
    let generation = engine.next_generation();
    let campaign = engine_common::campaign(None, 1);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let count = 150;
    let list = emails("thr.test", count);
    submit(&mut engine, generation, &campaign, 0, &list, &tx);

    // Watch the site while it sends.
    let mut lowest = f64::INFINITY;
    let mut backed_off = false;
    let mut lanes = HashSet::new();
    let mut results = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while results.len() < count {
        if let Some(site) = engine.stats().site(SITE) {
            lowest = lowest.min(site.rate.unwrap_or(f64::INFINITY));
            backed_off |= site.backing_off;
            lanes.insert(site.lane);
        }
        tokio::select! {
            r = rx.recv() => {
                let r = r.expect("channel open");
                assert!(results.insert(r.id, r).is_none(), "one result per recipient");
            }
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {count} results",
            results.len()
        );
    }

    let throttled = sink.stats.throttled.load(Relaxed);
    eprintln!(
        "throttled {throttled}, lowest rate {lowest:.1}/s, per second {:?}",
        sink.stats.per_second_snapshot()
    );
    assert!(throttled > 0, "the sink never throttled");
    assert!(backed_off, "no backoff seen");
    assert!(lowest <= 50.0, "the rate was never cut: lowest {lowest}");
    assert_eq!(lanes, HashSet::from([Lane::Fast]), "backoff, not the bog");
    // Nothing lost: each recipient has one result, and the throttled ones were retried on
    // the engine (issue 11), so every one is delivered, exactly the accepted ones.
    let delivered: HashSet<String> = results
        .values()
        .filter(|r| r.outcome == Outcome::Delivered)
        .map(|r| list[r.id as usize].clone())
        .collect();
    let accepted = sink.accepted();
    assert_eq!(accepted.len(), delivered.len());
    assert_eq!(accepted.into_iter().collect::<HashSet<_>>(), delivered);
    assert_eq!(
        delivered.len(),
        count,
        "every throttled message retried and delivered"
    );
    engine.shutdown().await;
    sink.stop().await;
}
