//! MX routing: turns a recipient domain into an [`MxRoute`] by asking DNS, following RFC 5321
//! §5.1 (MX records by preference, random order among equal preferences, the implicit MX when a
//! domain has none) and RFC 7505 (null MX).
//!
//! It exists so that delivery never talks to DNS itself: every recipient domain of a campaign goes
//! through one [`MxResolver`], which caches routes by TTL (a campaign has many recipients per
//! domain), coalesces concurrent lookups of the same domain, and sorts every DNS failure into
//! permanent (bounce) or temporary (retry later) as a [`RouteError`].

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use mailfarm_templates::address::is_dns_name;
use rand::seq::SliceRandom;
use rand::Rng;
use tokio::sync::OnceCell;
use tokio::task::JoinSet;

use super::route::{MxHost, MxRoute, RouteError, SiteKey};

/// Resolver settings; [`Default`] gives the documented defaults.
#[derive(Clone, Debug)]
pub struct ResolverSettings {
    /// Name server to ask (ip:port); `None` = the system's resolv.conf.
    pub nameserver: Option<SocketAddr>,
    /// Per-query timeout (default 5 s).
    pub timeout: Duration,
    /// Tries per query, the first included (default 2; 0 counts as 1).
    pub attempts: usize,
    /// Floor for the TTL a route is cached for (default 5 s).
    pub min_ttl: Duration,
    /// Ceiling for the TTL a route is cached for (default 1 h).
    pub max_ttl: Duration,
    /// How long a failed resolution (permanent or temporary) is cached (default 5 s). A route
    /// some of whose hosts failed temporarily is cached no longer than this either.
    pub negative_ttl: Duration,
    /// Most domains kept in the route cache (default 10 000; the oldest entry goes first).
    /// 0 disables the cache and the coalescing of concurrent lookups.
    pub cache_capacity: usize,
}

impl Default for ResolverSettings {
    fn default() -> Self {
        Self {
            nameserver: None,
            timeout: Duration::from_secs(5),
            attempts: 2,
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(5),
            cache_capacity: 10_000,
        }
    }
}

impl ResolverSettings {
    /// The defaults, asking `nameserver` instead of the system's resolvers.
    pub fn with_nameserver(nameserver: SocketAddr) -> Self {
        Self {
            nameserver: Some(nameserver),
            ..Self::default()
        }
    }
}

/// Why a [`MxResolver`] could not be built.
#[derive(Debug, thiserror::Error)]
#[error("DNS resolver setup failed: {0}")]
pub struct ResolverSetupError(String);

/// Resolves recipient domains to [`MxRoute`]s, with a TTL-bounded cache. Cheap to clone: clones
/// share the cache and the DNS client.
#[derive(Clone)]
pub struct MxResolver {
    inner: Arc<Inner>,
}

struct Inner {
    dns: TokioResolver,
    settings: ResolverSettings,
    cache: Mutex<RouteCache>,
}

/// A resolution result and how long it may be reused.
#[derive(Clone, Debug)]
struct Cached {
    result: Result<Arc<MxRoute>, RouteError>,
    until: Instant,
}

/// One cache entry: empty while its lookup runs; everyone asking meanwhile waits on the same cell.
struct Slot {
    id: u64,
    cell: OnceCell<Cached>,
}

#[derive(Default)]
struct RouteCache {
    map: HashMap<String, Arc<Slot>>,
    /// Insertion order for eviction; entries whose id no longer matches the map are stale.
    order: VecDeque<(String, u64)>,
    next_id: u64,
}

impl RouteCache {
    /// The slot to wait on for `key`: the current one if it is in flight or still fresh, else a
    /// new empty one (evicting the oldest entries beyond `capacity`).
    fn slot(&mut self, key: &str, capacity: usize, now: Instant) -> Arc<Slot> {
        if let Some(slot) = self.map.get(key) {
            match slot.cell.get() {
                Some(cached) if cached.until <= now => {}
                _ => return slot.clone(),
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        let slot = Arc::new(Slot {
            id,
            cell: OnceCell::new(),
        });
        self.map.insert(key.to_owned(), slot.clone());
        self.order.push_back((key.to_owned(), id));
        while self.map.len() > capacity {
            let Some((old, old_id)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|s| s.id == old_id) {
                self.map.remove(&old);
            }
        }
        if self.order.len() > 2 * capacity + 16 {
            let map = &self.map;
            self.order
                .retain(|(k, id)| map.get(k).is_some_and(|s| s.id == *id));
        }
        slot
    }
}

impl MxResolver {
    /// A resolver with `settings`; reads resolv.conf when no name server is given.
    pub fn new(settings: ResolverSettings) -> Result<Self, ResolverSetupError> {
        if settings.min_ttl > settings.max_ttl {
            return Err(ResolverSetupError(format!(
                "min_ttl {:?} exceeds max_ttl {:?}",
                settings.min_ttl, settings.max_ttl
            )));
        }
        let provider = TokioRuntimeProvider::default();
        let mut builder = match settings.nameserver {
            Some(addr) => {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                let config = ResolverConfig::from_name_servers(vec![server]);
                TokioResolver::builder_with_config(config, provider)
            }
            None => TokioResolver::builder(provider)
                .map_err(|e| ResolverSetupError(format!("reading the system DNS config: {e}")))?,
        };
        let opts = builder.options_mut();
        opts.timeout = settings.timeout;
        // hickory counts retries after the first try.
        opts.attempts = settings.attempts.saturating_sub(1);
        opts.use_hosts_file = ResolveHosts::Never;
        opts.cache_size = u64::try_from(settings.cache_capacity).unwrap_or(u64::MAX);
        opts.positive_min_ttl = Some(settings.min_ttl);
        opts.positive_max_ttl = Some(settings.max_ttl);
        opts.negative_max_ttl = Some(settings.negative_ttl);
        let dns = builder
            .build()
            .map_err(|e| ResolverSetupError(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                dns,
                settings,
                cache: Mutex::new(RouteCache::default()),
            }),
        })
    }

    /// The route of `domain` (any case, trailing dot allowed, IDN converted to its A-labels),
    /// from the cache while its DNS data is fresh.
    pub async fn resolve(&self, domain: &str) -> Result<Arc<MxRoute>, RouteError> {
        let (key, name) = normalize(domain)?;
        let capacity = self.inner.settings.cache_capacity;
        if capacity == 0 {
            return self.lookup(&key, &name).await.result;
        }
        let slot = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .slot(&key, capacity, Instant::now());
        let cached = slot.cell.get_or_init(|| self.lookup(&key, &name)).await;
        cached.result.clone()
    }

    /// Resolves without the route cache and stamps the result with its expiry.
    async fn lookup(&self, domain: &str, name: &Name) -> Cached {
        let settings = &self.inner.settings;
        let now = Instant::now();
        let (result, until) = match self.build_route(domain, name).await {
            Ok((hosts, site, ttl)) => {
                let expires = now + ttl.clamp(settings.min_ttl, settings.max_ttl);
                let domain = domain.to_owned();
                let route = MxRoute {
                    domain,
                    hosts,
                    site,
                    expires,
                };
                (Ok(Arc::new(route)), expires)
            }
            Err(e) => (Err(e), now + settings.negative_ttl),
        };
        Cached { result, until }
    }

    /// The hosts in order, the site and the TTL of the data, for `domain`.
    async fn build_route(
        &self,
        domain: &str,
        name: &Name,
    ) -> Result<(Vec<MxHost>, SiteKey, Duration), RouteError> {
        let d = || domain.to_owned();
        let temporary = |reason: String| RouteError::Temporary {
            domain: d(),
            reason,
        };
        let (targets, site, mx_ttl) = match query(&self.inner.dns, name, RecordType::MX).await {
            Answer::Records(records, ttl) => {
                let mx = records
                    .into_iter()
                    .filter_map(|r| match r {
                        RData::MX(mx) => Some((mx.preference, mx.exchange)),
                        _ => None,
                    })
                    .collect();
                match plan_mx(mx) {
                    MxPlan::Null => return Err(RouteError::NullMx { domain: d() }),
                    MxPlan::Hosts(hosts) => {
                        let site = SiteKey::from_hosts(hosts.iter().map(|h| h.1.as_str()));
                        let mut targets = Vec::with_capacity(hosts.len());
                        for (preference, host) in order_hosts(hosts, &mut rand::thread_rng()) {
                            match Name::from_ascii(format!("{host}.")) {
                                Ok(name) => targets.push((preference, host, name)),
                                Err(e) => tracing::debug!(%domain, %host, "bad MX name: {e}"),
                            }
                        }
                        (targets, site, Some(ttl))
                    }
                }
            }
            // RFC 5321 §5.1: no MX records, the domain itself is the implicit MX.
            Answer::NoData => (
                vec![(0, domain.to_owned(), name.clone())],
                SiteKey::from_hosts([domain]),
                None,
            ),
            Answer::NxDomain => return Err(RouteError::NoSuchDomain { domain: d() }),
            Answer::Failed(reason) => return Err(temporary(format!("MX query: {reason}"))),
        };

        let mut lookups = JoinSet::new();
        for (index, (_, _, name)) in targets.iter().enumerate() {
            let dns = self.inner.dns.clone();
            let name = name.clone();
            lookups.spawn(async move { (index, host_addresses(&dns, &name).await) });
        }
        let mut found = vec![None; targets.len()];
        while let Some(Ok((index, addresses))) = lookups.join_next().await {
            if let Some(entry) = found.get_mut(index) {
                *entry = Some(addresses);
            }
        }

        let mut hosts = Vec::with_capacity(targets.len());
        let negative_ttl = self.inner.settings.negative_ttl;
        let mut ttl = mx_ttl.map(secs);
        let mut last_failure: Option<String> = None;
        for ((preference, host, _), addresses) in targets.into_iter().zip(found) {
            let addresses = addresses.unwrap_or_else(|| HostAddresses {
                temporary_failure: Some("address lookup task failed".into()),
                ..HostAddresses::default()
            });
            if let Some(reason) = &addresses.temporary_failure {
                tracing::debug!(%domain, %host, "address lookup failed: {reason}");
                last_failure = Some(format!("{host}: {reason}"));
                // Come back soon for the host that failed.
                ttl = Some(ttl.map_or(negative_ttl, |t| t.min(negative_ttl)));
            }
            if addresses.addresses.is_empty() {
                continue;
            }
            if let Some(t) = addresses.ttl.map(secs) {
                ttl = Some(ttl.map_or(t, |old| old.min(t)));
            }
            hosts.push(MxHost {
                name: host,
                preference,
                addresses: addresses.addresses,
            });
        }
        if hosts.is_empty() {
            return Err(match last_failure {
                Some(reason) => temporary(format!("no host address: {reason}")),
                None => RouteError::NoAddresses { domain: d() },
            });
        }
        Ok((hosts, site, ttl.unwrap_or(self.inner.settings.min_ttl)))
    }
}

fn secs(ttl: u32) -> Duration {
    Duration::from_secs(u64::from(ttl))
}

/// Lower-cases `domain`, strips one trailing dot, converts a non-ASCII domain to A-labels, and
/// checks it is a plausible host name. Returns the cache key and the fully qualified DNS name.
fn normalize(domain: &str) -> Result<(String, Name), RouteError> {
    let invalid = || RouteError::NoSuchDomain {
        domain: domain.to_owned(),
    };
    let bare = domain.strip_suffix('.').unwrap_or(domain);
    let ascii = if bare.is_ascii() {
        bare.to_ascii_lowercase()
    } else {
        let name = Name::from_utf8(format!("{bare}.")).map_err(|_| invalid())?;
        let ascii = name.to_ascii();
        ascii
            .strip_suffix('.')
            .unwrap_or(&ascii)
            .to_ascii_lowercase()
    };
    if !is_dns_name(&ascii) || ascii.len() > 253 {
        return Err(invalid());
    }
    let name = Name::from_ascii(format!("{ascii}.")).map_err(|_| invalid())?;
    Ok((ascii, name))
}

/// What one DNS query gave.
#[derive(Debug)]
enum Answer {
    /// Records of the asked type (CNAMEs followed), with their smallest TTL in seconds.
    Records(Vec<RData>, u32),
    /// The name exists but has no record of the type (NOERROR/NODATA).
    NoData,
    /// The name does not exist.
    NxDomain,
    /// SERVFAIL, REFUSED, timeout, connection error...: may pass.
    Failed(String),
}

async fn query(dns: &TokioResolver, name: &Name, record_type: RecordType) -> Answer {
    match dns.lookup(name.clone(), record_type).await {
        Ok(lookup) => {
            let ttl = lookup.answers().iter().map(|r| r.ttl).min().unwrap_or(0);
            let records: Vec<RData> = lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() == record_type)
                .map(|r| r.data.clone())
                .collect();
            if records.is_empty() {
                Answer::NoData
            } else {
                Answer::Records(records, ttl)
            }
        }
        Err(e) => classify(&e),
    }
}

/// Sorts a resolver error into NXDOMAIN, NODATA, or a failure that may pass.
fn classify(error: &NetError) -> Answer {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(no)) => match no.response_code {
            ResponseCode::NXDomain => Answer::NxDomain,
            ResponseCode::NoError => Answer::NoData,
            code => Answer::Failed(format!("response code {code}")),
        },
        other => Answer::Failed(other.to_string()),
    }
}

/// The addresses of one host and how the lookups went.
#[derive(Clone, Debug, Default)]
struct HostAddresses {
    /// IPv4 first, then IPv6, each family shuffled.
    addresses: Vec<IpAddr>,
    /// Smallest TTL of the address records found.
    ttl: Option<u32>,
    /// Set when the A or AAAA lookup failed in a way that may pass.
    temporary_failure: Option<String>,
}

async fn host_addresses(dns: &TokioResolver, name: &Name) -> HostAddresses {
    let (v4, v6) = tokio::join!(
        query(dns, name, RecordType::A),
        query(dns, name, RecordType::AAAA)
    );
    let mut out = HostAddresses::default();
    for answer in [v4, v6] {
        match answer {
            Answer::Records(records, ttl) => {
                let mut family: Vec<IpAddr> = records
                    .into_iter()
                    .filter_map(|r| match r {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                        _ => None,
                    })
                    .collect();
                family.shuffle(&mut rand::thread_rng());
                out.addresses.extend(family);
                out.ttl = Some(out.ttl.map_or(ttl, |t| t.min(ttl)));
            }
            Answer::NoData | Answer::NxDomain => {}
            Answer::Failed(reason) => out.temporary_failure = Some(reason),
        }
    }
    out
}

/// What a domain's MX records say.
#[derive(Debug, PartialEq, Eq)]
enum MxPlan {
    /// Only the null MX "." (RFC 7505): no mail.
    Null,
    /// These (preference, lower-case host name without trailing dot) pairs; never empty.
    Hosts(Vec<(u16, String)>),
}

/// Reads MX records: drops "." targets (a null MX mixed with real ones is ignored), and reports
/// a null MX when nothing else is left.
fn plan_mx(records: Vec<(u16, Name)>) -> MxPlan {
    let hosts: Vec<(u16, String)> = records
        .into_iter()
        .filter(|(_, exchange)| !exchange.is_root())
        .map(|(preference, exchange)| {
            let ascii = exchange.to_ascii();
            let host = ascii
                .strip_suffix('.')
                .unwrap_or(&ascii)
                .to_ascii_lowercase();
            (preference, host)
        })
        .filter(|(_, host)| !host.is_empty())
        .collect();
    if hosts.is_empty() {
        MxPlan::Null
    } else {
        MxPlan::Hosts(hosts)
    }
}

/// Orders MX hosts for trying: a host listed twice keeps its best preference, lower preferences
/// first, random order within equal preference (RFC 5321 §5.1).
fn order_hosts(mut hosts: Vec<(u16, String)>, rng: &mut impl Rng) -> Vec<(u16, String)> {
    hosts.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    hosts.dedup_by(|later, earlier| later.1 == earlier.1);
    hosts.shuffle(rng);
    // Stable sort: the shuffled order survives within each preference.
    hosts.sort_by_key(|h| h.0);
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn hosts(list: &[(u16, &str)]) -> Vec<(u16, String)> {
        list.iter().map(|(p, h)| (*p, h.to_string())).collect()
    }

    #[test]
    fn null_mx_counts_only_alone() {
        assert_eq!(plan_mx(vec![(0, Name::root())]), MxPlan::Null);
        assert_eq!(plan_mx(vec![(0, name(".")), (5, name("."))]), MxPlan::Null);
        let plan = plan_mx(vec![(0, Name::root()), (10, name("MX1.Example.TEST."))]);
        assert_eq!(plan, MxPlan::Hosts(hosts(&[(10, "mx1.example.test")])));
    }

    #[test]
    fn hosts_sorted_by_preference_duplicates_keep_the_best() {
        let mut rng = StdRng::seed_from_u64(7);
        let ordered = order_hosts(hosts(&[(30, "c"), (10, "a"), (20, "b")]), &mut rng);
        assert_eq!(ordered, hosts(&[(10, "a"), (20, "b"), (30, "c")]));
        let ordered = order_hosts(hosts(&[(30, "a"), (10, "a"), (20, "b")]), &mut rng);
        assert_eq!(ordered, hosts(&[(10, "a"), (20, "b")]));
    }

    #[test]
    fn equal_preferences_come_in_both_orders() {
        let mut rng = StdRng::seed_from_u64(42);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..64 {
            let ordered = order_hosts(hosts(&[(10, "a"), (10, "b"), (5, "z")]), &mut rng);
            assert_eq!(ordered[0], (5, "z".to_string()));
            seen.insert(ordered);
        }
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    #[test]
    fn normalize_lowercases_strips_the_dot_and_encodes_idn() {
        let (key, fqdn) = normalize("Example.TEST.").unwrap();
        assert_eq!(
            (key.as_str(), fqdn.to_ascii().as_str()),
            ("example.test", "example.test.")
        );
        assert_eq!(normalize("Bücher.test").unwrap().0, "xn--bcher-kva.test");
    }

    #[test]
    fn normalize_refuses_junk_permanently() {
        let junk = [
            "",
            ".",
            "a..b",
            "exa mple.test",
            "a\\.b.test",
            "[127.0.0.1]",
        ];
        for bad in junk {
            let err = normalize(bad).unwrap_err();
            assert!(matches!(err, RouteError::NoSuchDomain { .. }), "{bad}");
        }
    }

    #[test]
    fn cache_evicts_the_oldest_beyond_capacity() {
        let mut cache = RouteCache::default();
        let now = Instant::now();
        for key in ["a", "b", "c"] {
            cache.slot(key, 2, now);
        }
        assert!(!cache.map.contains_key("a"));
        assert!(cache.map.contains_key("b") && cache.map.contains_key("c"));
    }

    #[test]
    fn cache_replaces_expired_entries_only() {
        let mut cache = RouteCache::default();
        let now = Instant::now();
        let first = cache.slot("a", 10, now);
        let expired = Cached {
            result: Err(RouteError::NoSuchDomain { domain: "a".into() }),
            until: now,
        };
        // In flight: shared.
        assert!(Arc::ptr_eq(&first, &cache.slot("a", 10, now)));
        first.cell.set(expired).unwrap();
        let earlier = now - Duration::from_millis(1);
        assert!(Arc::ptr_eq(&first, &cache.slot("a", 10, earlier)));
        assert!(!Arc::ptr_eq(&first, &cache.slot("a", 10, now)));
    }

    #[test]
    fn classify_sorts_errors() {
        use hickory_resolver::net::NoRecords;
        use hickory_resolver::proto::op::Query;
        let q = Query::query(name("x.test."), RecordType::MX);
        let none = |code| NetError::from(DnsError::NoRecordsFound(NoRecords::new(q.clone(), code)));
        let (nx, nodata) = (none(ResponseCode::NXDomain), none(ResponseCode::NoError));
        let servfail = NetError::from(DnsError::ResponseCode(ResponseCode::ServFail));
        assert!(matches!(classify(&nx), Answer::NxDomain));
        assert!(matches!(classify(&nodata), Answer::NoData));
        assert!(matches!(classify(&servfail), Answer::Failed(_)));
        assert!(matches!(classify(&NetError::Timeout), Answer::Failed(_)));
    }
}
