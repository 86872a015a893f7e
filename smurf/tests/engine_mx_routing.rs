//! MX routing through the engine against real peers: unbound serving the zone, fault sinks on
//! 127.0.0.2-6 sharing one port. Every message reaches its domain's MX; domains whose MX hosts
//! are the same share one site and its connection cap; null MX and NXDOMAIN fail at once,
//! SERVFAIL defers. Requires `/usr/sbin/unbound`.

mod engine_common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use engine_common::{collect, common_port, emails, engine, settings, submit, Sink};
use mailfarm_protocol::Outcome;
use mailfarm_smurf::inbound::fault_sink::FaultPlan;
use mailfarm_testkit::dns::TestDns;
use tokio::sync::mpsc;

const ZONE: &[&str] = &[
    "a.test. 300 IN MX 10 mx.a.test.",
    "mx.a.test. 300 IN A 127.0.0.2",
    "b.test. 300 IN MX 10 mx.b.test.",
    "mx.b.test. 300 IN A 127.0.0.3",
    // Two MX hosts, the first one dead (nothing listens on 127.0.0.9): the engine moves on.
    "c.test. 300 IN MX 10 dead.c.test.",
    "c.test. 300 IN MX 20 mx.c.test.",
    "dead.c.test. 300 IN A 127.0.0.9",
    "mx.c.test. 300 IN A 127.0.0.4",
    // The same two hosts in another order: one site.
    "shared1.test. 300 IN MX 10 mx1.shared.test.",
    "shared1.test. 300 IN MX 20 mx2.shared.test.",
    "shared2.test. 300 IN MX 5 mx2.shared.test.",
    "shared2.test. 300 IN MX 50 mx1.shared.test.",
    "mx1.shared.test. 300 IN A 127.0.0.5",
    "mx2.shared.test. 300 IN A 127.0.0.5",
    // No MX: the domain is its own mail host.
    "implicit.test. 300 IN A 127.0.0.6",
    "nullmx.test. 300 IN MX 0 .",
];

const SHAPING: &str = r#"
[default]
message_rate = "500/s"
connection_rate = "100/s"
ramp_up = "0s"
[site."mx1.shared.test,mx2.shared.test"]
max_connections = 2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_their_mx_and_shared_hosts_share_a_site() {
    let dns = TestDns::start(ZONE);
    let ips = [
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
        "127.0.0.6",
    ];
    let port = common_port(&ips);
    let mut sinks = Vec::new();
    for ip in ips {
        let plan = FaultPlan {
            // Slow enough that the shared site would open more than 2 sessions if allowed.
            reply_delay: Duration::from_millis(10),
            ..FaultPlan::default()
        };
        sinks.push(Sink::start(ip, port, plan).await);
    }
    let mut engine = engine(settings(port, dns.addr), SHAPING, (1, 1));
    let generation = engine.next_generation();
    let campaign = engine_common::campaign(None, 1);
    let (tx, mut rx) = mpsc::unbounded_channel();

    let domains = [
        "a.test",
        "b.test",
        "c.test",
        "shared1.test",
        "shared2.test",
        "implicit.test",
    ];
    let sink_of = [0, 1, 2, 3, 3, 4];
    let per_domain = 20;
    let mut id = 0;
    for domain in domains {
        submit(
            &mut engine,
            generation,
            &campaign,
            id,
            &emails(domain, per_domain),
            &tx,
        );
        id += per_domain as u64;
    }
    let bad = vec![
        "x@nullmx.test".to_owned(),
        "x@nosuch.test".to_owned(),
        "x@host.servfail.test".to_owned(),
    ];
    let started = Instant::now();
    submit(&mut engine, generation, &campaign, 1000, &bad, &tx);
    let total = domains.len() * per_domain + bad.len();
    let results = collect(&mut rx, total, Duration::from_secs(15)).await;

    // Route errors: permanent ones fail at once with RFC codes, SERVFAIL defers.
    let null = &results[&1000];
    assert_eq!(
        (null.outcome, null.code, null.enhanced),
        (Outcome::Failed, 556, Some((5, 1, 10))),
        "{null:?}"
    );
    assert!(null.text.contains("null MX"), "{null:?}");
    let nx = &results[&1001];
    assert_eq!(
        (nx.outcome, nx.enhanced),
        (Outcome::Failed, Some((5, 1, 2))),
        "{nx:?}"
    );
    let servfail = &results[&1002];
    assert_eq!(servfail.outcome, Outcome::Deferred, "{servfail:?}");
    assert!(servfail.remote.is_empty());
    assert!(started.elapsed() < Duration::from_secs(10));

    // Every message delivered, by the right host.
    for (d, domain) in domains.iter().enumerate() {
        for i in 0..per_domain {
            let r = &results[&((d * per_domain + i) as u64)];
            assert_eq!(r.outcome, Outcome::Delivered, "{domain}: {r:?}");
            assert!(r.rendered_bytes > 0 && r.code == 250, "{r:?}");
            let ip = ips[sink_of[d]];
            assert!(
                r.remote.contains(&format!("[{ip}]:{port}")),
                "{domain} went to {}",
                r.remote
            );
        }
    }
    let a = &results[&0];
    assert_eq!(a.remote, format!("mx.a.test[127.0.0.2]:{port}"));
    let c = &results[&(2 * per_domain as u64)];
    assert!(c.remote.starts_with("mx.c.test["), "dead MX skipped: {c:?}");
    for (s, sink) in sinks.iter().enumerate() {
        let want: HashSet<String> = domains
            .iter()
            .enumerate()
            .filter(|(d, _)| sink_of[*d] == s)
            .flat_map(|(_, domain)| emails(domain, per_domain))
            .collect();
        let got: Vec<String> = sink.accepted();
        assert_eq!(got.len(), want.len(), "sink {s}: {got:?}");
        assert_eq!(got.into_iter().collect::<HashSet<_>>(), want, "sink {s}");
    }

    // One site for both shared domains, its cap of 2 honoured across them.
    let stats = engine.stats();
    let shared = stats
        .site("mx1.shared.test,mx2.shared.test")
        .unwrap_or_else(|| panic!("no shared site in {stats:#?}"));
    assert_eq!(shared.domains, 2, "{shared:?}");
    assert_eq!(shared.max_connections, 2);
    let mx_sites = stats.sites.len();
    assert_eq!(mx_sites, 5, "a, b, c, shared, implicit: {stats:#?}");
    let peak = sinks[3]
        .stats
        .peak_connections
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (1..=2).contains(&peak),
        "peak sessions on the shared site: {peak}"
    );
    let peak_a = sinks[0]
        .stats
        .peak_connections
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(peak_a <= 4, "default cap: {peak_a}");
    assert_eq!(stats.queued, 0);

    engine.shutdown().await;
    for sink in sinks {
        sink.stop().await;
    }
}
