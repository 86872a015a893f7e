//! MX routing against a real DNS server: unbound serving a static `test.` zone (see
//! `mailfarm_testkit::dns`). Requires `/usr/sbin/unbound` (package `unbound`): the tests fail, never
//! skip, when it is missing.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailfarm_smurf::outbound::mx::{MxResolver, ResolverSettings};
use mailfarm_smurf::outbound::route::{MxRoute, RouteError};
use mailfarm_testkit::dns::TestDns;

const ZONE: &[&str] = &[
    // Two preferences, listed worst first.
    "pref.test. 300 IN MX 20 mx20.pref.test.",
    "pref.test. 300 IN MX 10 mx10.pref.test.",
    "mx10.pref.test. 300 IN A 127.0.0.10",
    "mx20.pref.test. 300 IN A 127.0.0.20",
    // Equal preferences, TTL 0 so that nothing caches them.
    "rr.test. 0 IN MX 5 first.rr.test.",
    "rr.test. 0 IN MX 10 mxa.rr.test.",
    "rr.test. 0 IN MX 10 mxb.rr.test.",
    "first.rr.test. 0 IN A 127.0.1.1",
    "mxa.rr.test. 0 IN A 127.0.1.2",
    "mxb.rr.test. 0 IN A 127.0.1.3",
    // No MX: the domain is its own mail host.
    "implicit.test. 300 IN A 127.0.0.3",
    // Null MX, alone and mixed with a real host.
    "nullmx.test. 300 IN MX 0 .",
    "mixed.test. 300 IN MX 0 .",
    "mixed.test. 300 IN MX 10 mx.mixed.test.",
    "mx.mixed.test. 300 IN A 127.0.0.4",
    // Exists, but neither MX nor address.
    "noaddr.test. 300 IN TXT \"no mail here\"",
    // MX host under the SERVFAIL zone.
    "tempmx.test. 300 IN MX 10 mx.servfail.test.",
    // Short TTL for the expiry test.
    "short.test. 1 IN MX 10 mx.short.test.",
    "mx.short.test. 1 IN A 127.0.0.9",
    // Same hosts (other preferences, other case), and a subset.
    "shared1.test. 300 IN MX 10 mx1.shared.test.",
    "shared1.test. 300 IN MX 20 mx2.shared.test.",
    "shared2.test. 300 IN MX 5 MX2.shared.test.",
    "shared2.test. 300 IN MX 50 mx1.shared.test.",
    "other.test. 300 IN MX 10 mx1.shared.test.",
    "mx1.shared.test. 300 IN A 127.0.2.1",
    "mx2.shared.test. 300 IN A 127.0.2.2",
    // IPv6 only, and dual stack.
    "v6.test. 300 IN MX 10 mx.v6.test.",
    "mx.v6.test. 300 IN AAAA 2001:db8::25",
    "dual.test. 300 IN MX 10 mx.dual.test.",
    "mx.dual.test. 300 IN A 127.0.0.5",
    "mx.dual.test. 300 IN AAAA 2001:db8::5",
    // Hosts that do not resolve (NXDOMAIN, NODATA) next to one that does.
    "skip.test. 300 IN MX 10 gone.skip.test.",
    "skip.test. 300 IN MX 20 nodata.skip.test.",
    "skip.test. 300 IN MX 30 mx.skip.test.",
    "nodata.skip.test. 300 IN TXT \"no address\"",
    "mx.skip.test. 300 IN A 127.0.0.6",
    // Only unresolvable hosts.
    "dead.test. 300 IN MX 10 gone.dead.test.",
    // IDN: bücher.test.
    "xn--bcher-kva.test. 300 IN MX 10 mx.xn--bcher-kva.test.",
    "mx.xn--bcher-kva.test. 300 IN A 127.0.0.7",
];

fn settings(dns: &TestDns) -> ResolverSettings {
    ResolverSettings {
        timeout: Duration::from_secs(2),
        attempts: 1,
        ..ResolverSettings::with_nameserver(dns.addr)
    }
}

fn resolver(dns: &TestDns) -> MxResolver {
    MxResolver::new(settings(dns)).expect("building the resolver")
}

fn names(route: &MxRoute) -> Vec<&str> {
    route.hosts.iter().map(|h| h.name.as_str()).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

#[tokio::test]
async fn mx_hosts_come_by_preference() {
    let dns = TestDns::start(ZONE);
    let route = resolver(&dns).resolve("pref.test").await.expect("route");
    assert_eq!(route.domain, "pref.test");
    assert_eq!(names(&route), ["mx10.pref.test", "mx20.pref.test"]);
    let prefs: Vec<u16> = route.hosts.iter().map(|h| h.preference).collect();
    assert_eq!(prefs, [10, 20]);
    assert_eq!(route.hosts[0].addresses, [ip("127.0.0.10")]);
    assert_eq!(route.hosts[1].addresses, [ip("127.0.0.20")]);
    assert_eq!(route.site.to_string(), "mx10.pref.test,mx20.pref.test");
}

#[tokio::test]
async fn equal_preferences_are_tried_in_random_order() {
    let dns = TestDns::start(ZONE);
    let mx = MxResolver::new(ResolverSettings {
        min_ttl: Duration::ZERO,
        ..settings(&dns)
    })
    .expect("resolver");
    let mut orders = HashSet::new();
    for _ in 0..50 {
        let route = mx.resolve("rr.test").await.expect("route");
        let order: Vec<String> = route.hosts.iter().map(|h| h.name.clone()).collect();
        assert_eq!(order[0], "first.rr.test", "preference 5 first: {order:?}");
        assert_eq!(order.len(), 3);
        orders.insert(order);
    }
    assert_eq!(orders.len(), 2, "both orders of mxa/mxb: {orders:?}");
}

#[tokio::test]
async fn no_mx_falls_back_to_the_domain_address() {
    let dns = TestDns::start(ZONE);
    let route = resolver(&dns)
        .resolve("implicit.test")
        .await
        .expect("route");
    assert_eq!(names(&route), ["implicit.test"]);
    assert_eq!(route.hosts[0].preference, 0);
    assert_eq!(route.hosts[0].addresses, [ip("127.0.0.3")]);
    assert_eq!(route.site.to_string(), "implicit.test");
}

#[tokio::test]
async fn null_mx_is_a_permanent_refusal() {
    let dns = TestDns::start(ZONE);
    let mx = resolver(&dns);
    let err = mx.resolve("nullmx.test").await.expect_err("null MX");
    assert_eq!(
        err,
        RouteError::NullMx {
            domain: "nullmx.test".into()
        }
    );
    assert!(!err.is_temporary());
    // A null MX next to a real host is ignored.
    let route = mx.resolve("mixed.test").await.expect("mixed route");
    assert_eq!(names(&route), ["mx.mixed.test"]);
}

#[tokio::test]
async fn missing_domains_and_addresses_are_permanent() {
    let dns = TestDns::start(ZONE);
    let mx = resolver(&dns);
    let err = mx.resolve("nope.test").await.expect_err("NXDOMAIN");
    assert_eq!(
        err,
        RouteError::NoSuchDomain {
            domain: "nope.test".into()
        }
    );
    assert!(!err.is_temporary());
    let err = mx.resolve("noaddr.test").await.expect_err("no address");
    assert_eq!(
        err,
        RouteError::NoAddresses {
            domain: "noaddr.test".into()
        }
    );
    assert!(!err.is_temporary());
}

#[tokio::test]
async fn servfail_and_refused_are_temporary() {
    let dns = TestDns::start(ZONE);
    let mx = resolver(&dns);
    for domain in ["servfail.test", "deep.servfail.test", "refused.test"] {
        let started = Instant::now();
        let err = mx.resolve(domain).await.expect_err(domain);
        assert!(
            matches!(&err, RouteError::Temporary { domain: d, .. } if d == domain),
            "{domain}: {err:?}"
        );
        assert!(err.is_temporary());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{domain} took {:?}",
            started.elapsed()
        );
    }
    // The MX exists but its only host's address lookup SERVFAILs.
    let err = mx.resolve("tempmx.test").await.expect_err("tempmx");
    assert!(err.is_temporary(), "{err:?}");
}

#[tokio::test]
async fn cached_routes_need_no_server() {
    let mut dns = TestDns::start(ZONE);
    let mx = resolver(&dns);
    let first = mx.resolve("pref.test").await.expect("route");
    dns.stop();
    let again = mx.resolve("pref.test").await.expect("cached route");
    assert!(Arc::ptr_eq(&first, &again));
    // The same domain spelled otherwise hits the same entry.
    let spelled = mx.resolve("PREF.Test.").await.expect("cached route");
    assert!(Arc::ptr_eq(&first, &spelled));
    // The server really is gone: an uncached domain fails, temporarily.
    let err = mx.resolve("dual.test").await.expect_err("server stopped");
    assert!(err.is_temporary(), "{err:?}");
}

#[tokio::test]
async fn cached_routes_expire_by_ttl() {
    let mut dns = TestDns::start(ZONE);
    // The default 5 s floor applies to the 1 s records.
    let floored = resolver(&dns).resolve("short.test").await.expect("route");
    assert!(floored.expires >= Instant::now() + Duration::from_secs(4));

    let mx = MxResolver::new(ResolverSettings {
        min_ttl: Duration::ZERO,
        ..settings(&dns)
    })
    .expect("resolver");
    let first = mx.resolve("short.test").await.expect("route");
    assert!(first.expires <= Instant::now() + Duration::from_secs(1));
    dns.stop();
    let cached = mx.resolve("short.test").await.expect("cached route");
    assert!(Arc::ptr_eq(&first, &cached));
    tokio::time::sleep_until((first.expires + Duration::from_millis(200)).into()).await;
    let err = mx
        .resolve("short.test")
        .await
        .expect_err("expired, server gone");
    assert!(err.is_temporary(), "{err:?}");
}

#[tokio::test]
async fn same_hosts_make_the_same_site() {
    let dns = TestDns::start(ZONE);
    let mx = resolver(&dns);
    let one = mx.resolve("shared1.test").await.expect("shared1");
    let two = mx.resolve("shared2.test").await.expect("shared2");
    let other = mx.resolve("other.test").await.expect("other");
    assert_eq!(one.site, two.site);
    assert_eq!(one.site.to_string(), "mx1.shared.test,mx2.shared.test");
    assert_ne!(one.site, other.site);
    // Preferences still order each domain's hosts its own way.
    assert_eq!(names(&one), ["mx1.shared.test", "mx2.shared.test"]);
    assert_eq!(names(&two), ["mx2.shared.test", "mx1.shared.test"]);
}

#[tokio::test]
async fn ipv6_addresses_are_resolved() {
    let dns = TestDns::start(ZONE);
    let mx = resolver(&dns);
    let v6 = mx.resolve("v6.test").await.expect("v6 route");
    assert_eq!(v6.hosts[0].addresses, [ip("2001:db8::25")]);
    let dual = mx.resolve("dual.test").await.expect("dual route");
    assert_eq!(
        dual.hosts[0].addresses,
        [ip("127.0.0.5"), ip("2001:db8::5")]
    );
}

#[tokio::test]
async fn hosts_that_do_not_resolve_are_skipped() {
    let dns = TestDns::start(ZONE);
    let mx = resolver(&dns);
    let route = mx.resolve("skip.test").await.expect("route");
    assert_eq!(names(&route), ["mx.skip.test"]);
    assert_eq!(route.hosts[0].addresses, [ip("127.0.0.6")]);
    // The site is still made of every MX host.
    assert_eq!(
        route.site.to_string(),
        "gone.skip.test,mx.skip.test,nodata.skip.test"
    );
    let err = mx.resolve("dead.test").await.expect_err("no host resolves");
    assert_eq!(
        err,
        RouteError::NoAddresses {
            domain: "dead.test".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_of_a_domain_share_one_result() {
    let dns = TestDns::start(ZONE);
    let mx = resolver(&dns);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let mx = mx.clone();
        tasks.spawn(async move { mx.resolve("pref.test").await });
    }
    let mut routes = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        routes.push(joined.expect("task").expect("route"));
    }
    assert_eq!(routes.len(), 16);
    assert!(routes.iter().all(|r| Arc::ptr_eq(r, &routes[0])));
}

#[tokio::test]
async fn idn_domains_are_looked_up_by_a_labels() {
    let dns = TestDns::start(ZONE);
    let route = resolver(&dns).resolve("Bücher.TEST").await.expect("route");
    assert_eq!(route.domain, "xn--bcher-kva.test");
    assert_eq!(route.hosts[0].addresses, [ip("127.0.0.7")]);
}
