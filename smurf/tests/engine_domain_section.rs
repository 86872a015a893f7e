//! A `[domain."…"]` shaping section governs its domain's whole site from the first message,
//! even when the site's other domains come first: the engine looks up the site of every
//! domain with a section as soon as the shaping is applied. Requires `/usr/sbin/unbound`.

mod engine_common;

use std::time::Duration;

use engine_common::{collect, common_port, emails, engine, settings, submit, Sink};
use mailfarm_protocol::Outcome;
use mailfarm_smurf::inbound::fault_sink::FaultPlan;
use mailfarm_testkit::dns::TestDns;
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_section_limits_its_site_before_the_domain_is_seen() {
    let dns = TestDns::start(&[
        "slow.test. 300 IN MX 10 mx.slow.test.",
        "slow2.test. 300 IN MX 10 mx.slow.test.",
        "mx.slow.test. 300 IN A 127.0.0.4",
    ]);
    let port = common_port(&["127.0.0.4"]);
    let sink = Sink::start("127.0.0.4", port, FaultPlan::default()).await;
    let shaping = r#"
[default]
message_rate = "1000/s"
ramp_up = "0s"
[domain."slow.test"]
message_rate = "20/s"
"#;
    let mut engine = engine(settings(port, dns.addr), shaping, (1, 1));
    let generation = engine.next_generation();
    // The section's MX lookup runs in the background; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let campaign = engine_common::campaign(None, 1);
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Only slow2.test, which has no section but shares slow.test's MX host.
    let list = emails("slow2.test", 50);
    submit(&mut engine, generation, &campaign, 0, &list, &tx);
    let results = collect(&mut rx, list.len(), Duration::from_secs(10)).await;
    assert!(results.values().all(|r| r.outcome == Outcome::Delivered));

    let stats = engine.stats();
    let site = stats.site("mx.slow.test").expect("site");
    assert_eq!(site.rate, Some(20.0), "slow.test's section: {site:?}");
    assert_eq!(
        site.domains, 2,
        "slow.test learnt, slow2.test seen: {site:?}"
    );
    let histogram = sink.stats.per_second_snapshot();
    let busiest = histogram.values().copied().max().unwrap_or(0);
    assert!(busiest <= 22, "{busiest} in one second: {histogram:?}");
    engine.shutdown().await;
    sink.stop().await;
}
