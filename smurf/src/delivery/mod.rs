//! The smurf's egress engine: route each recipient to a site, queue it there, and let the
//! site's dispatcher deliver it through pooled, reused SMTP sessions within the site's limits.
//!
//! ```text
//! submit ──► route ──► site ready queue ──► dispatcher ──► workers (one SMTP session each)
//!            (relay, or MX lookup)  (one per site)   (≤ max_connections)
//! ```
//!
//! - Routing: relay mode (the campaign's relay, or [`DeliverySettings::relay_override`]) puts
//!   every message on one site `relay:host:port` without any DNS; MX mode resolves the
//!   recipient domain ([`MxResolver`], cached) and uses the route's [`SiteKey`], so domains
//!   with the same MX hosts share one queue, one connection pool and one set of limiters.
//!   Permanent route errors fail the recipient at once (null MX: `556 5.1.10`, RFC 7505;
//!   no such domain: `550 5.1.2`; no address: `550 5.4.4`), temporary ones defer it
//!   (`451 4.4.3`); these codes are generated locally and `remote` is empty.
//! - Each site has its own dispatcher task and its own workers: nothing is shared between
//!   sites but the DNS resolver, so a slow or dead site cannot hold up another.
//! - Limits come from the shaping file ([`Shaping`], applied live by
//!   [`DeliveryEngine::apply_shaping`]); rates are enforced with `governor` limiters (one for
//!   messages, one for new sessions per site), awaited without spinning. Ramp-up, adaptive
//!   backoff and the bog are described in [`health`].
//! - Memory: a queued job holds the recipient's data and a shared campaign; a worker renders
//!   (and DKIM-signs) its message right before sending it, so at most one rendered body per
//!   session exists. The coordinator's window bounds the number of jobs; a bogged site keeps
//!   at most `[bog] max_queued` of them and defers the rest at once.
//! - Results: every job gets exactly one [`RecipientResult`] unless its link generation ended
//!   (then the coordinator has taken the recipient back and the job is dropped silently).
//!   The smurf never retries a deferred message itself, with one exception: when a reused
//!   session fails before the server answered anything about the message (the server had
//!   closed it while idle, say), the message is tried once more on a fresh session. Nothing of
//!   it was sent, so this cannot duplicate it. While opening a session, a failed connection
//!   moves on to the next address and MX host (at most [`worker::MAX_OPEN_TRIES`] addresses).
//!   A connection lost mid-DATA is deferred: it was never reported delivered.

mod adaptive;
mod health;
mod site;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use mailfarm_protocol::throttle::{from_milli, to_milli, SiteRate, SiteThrottle};
use mailfarm_protocol::{Outcome, RecipientData, RecipientResult, ShapingUpdate, TemplateBundle};
use mailfarm_templates::MessageTemplate;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tracing::{info, warn};

pub use health::Lane;

use crate::outbound::dkim::DkimSigner;
use crate::outbound::mx::{MxResolver, ResolverSettings};
use crate::outbound::route::{MxRoute, RouteError, SiteKey};
use crate::outbound::shaping::Shaping;
use crate::outbound::smtp::{Credentials, Timeouts};
use crate::outbound::tls::{TlsClient, TlsPolicy, TlsVerify};
use site::{Push, Site, Target};

/// A compiled campaign, shared by every job of that campaign.
pub struct CompiledCampaign {
    /// The bundle as received.
    pub bundle: TemplateBundle,
    /// Its compiled templates.
    pub template: MessageTemplate,
}

/// One recipient to render and send.
pub struct Job {
    /// Link generation the job came from.
    pub generation: u64,
    /// Campaign to render with.
    pub campaign: Arc<CompiledCampaign>,
    /// Recipient data.
    pub recipient: RecipientData,
    /// Where the result goes.
    pub results: mpsc::UnboundedSender<RecipientResult>,
    /// Times the job was throttled and retried on the smurf (see [`ThrottleHold`]).
    pub held: ThrottleHold,
    /// A message ready to send as it is (forwarding, notices) instead of a template render;
    /// the campaign then only routes it (its relay, else the recipient's MX).
    pub raw: Option<Arc<RawMessage>>,
}

/// A message the engine sends as it is: envelope and data, no render, no DKIM signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// Envelope sender (empty for the null sender).
    pub mail_from: String,
    /// Envelope recipient.
    pub rcpt_to: String,
    /// The complete message, CRLF line endings, not dot-stuffed.
    pub data: Vec<u8>,
}

/// How often, and since when, a job was refused by a throttling site and put back in its
/// site's queue. Such a refusal was not the message's fault: it is retried on the smurf within
/// seconds, under the site's lowered rate, without using one of its retries, up to
/// [`ThrottleHold::MAX_TRIES`] times or [`ThrottleHold::MAX_TIME`]; then it is reported
/// deferred as any other 4xx.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThrottleHold {
    /// Throttled attempts so far.
    pub tries: u32,
    /// When it was first throttled.
    pub since: Option<Instant>,
}

impl ThrottleHold {
    /// Most throttled attempts retried on the smurf.
    pub const MAX_TRIES: u32 = 50;
    /// Longest time a throttled job is held on the smurf.
    pub const MAX_TIME: Duration = Duration::from_secs(300);

    /// Counts one more throttled attempt; whether the job may be retried on the smurf.
    pub fn hold(&mut self, now: Instant) -> bool {
        let since = *self.since.get_or_insert(now);
        self.tries += 1;
        self.tries <= Self::MAX_TRIES && now.duration_since(since) <= Self::MAX_TIME
    }
}

impl Job {
    /// The recipient's address (empty when missing).
    fn email(&self) -> &str {
        if let Some(raw) = &self.raw {
            return &raw.rcpt_to;
        }
        let field = self.campaign.bundle.email_field as usize;
        self.recipient
            .values
            .get(field)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Sends a result that no server gave.
    fn report(&self, outcome: Outcome, code: u16, enhanced: Option<(u8, u16, u16)>, text: String) {
        let _ = self.results.send(RecipientResult {
            id: self.recipient.id,
            outcome,
            code,
            enhanced,
            text,
            rendered_bytes: 0,
            remote: String::new(),
            duration_ms: 0,
        });
    }
}

/// Tunables of the sending engine. [`DeliverySettings::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct DeliverySettings {
    /// EHLO name.
    pub helo_name: String,
    /// Messages per SMTP session before it is closed and reopened, unless the shaping file
    /// says otherwise for the site (default 1000).
    pub max_messages_per_connection: u32,
    /// An idle session is closed after this long (default 5 s).
    pub idle_timeout: Duration,
    /// Connect timeout (default 30 s).
    pub connect_timeout: Duration,
    /// SMTP timeouts per phase (default: RFC 5321's).
    pub timeouts: Timeouts,
    /// When set, every campaign is delivered here instead of its own relay or the MX hosts
    /// (capture mode, tests).
    pub relay_override: Option<String>,
    /// Port of MX hosts (default 25; tests use others).
    pub smtp_port: u16,
    /// DNS resolver for MX delivery.
    pub resolver: ResolverSettings,
    /// STARTTLS policy, unless the shaping file sets one for a site (default opportunistic).
    pub tls_policy: TlsPolicy,
    /// The TLS client configuration (certificate checks); `None`: unauthenticated
    /// opportunistic TLS ([`TlsVerify::Insecure`]).
    pub tls_client: Option<TlsClient>,
    /// AUTH credentials per relay, keyed by the relay's `host:port` as the campaign or
    /// [`relay_override`](Self::relay_override) spells it.
    pub relay_auth: HashMap<String, Credentials>,
    /// DKIM keys; a message is signed when a key for its From domain exists.
    pub dkim: Option<Arc<DkimSigner>>,
}

impl DeliverySettings {
    /// Defaults with the given EHLO name.
    pub fn new(helo_name: impl Into<String>) -> Self {
        Self {
            helo_name: helo_name.into(),
            max_messages_per_connection: 1000,
            idle_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(30),
            timeouts: Timeouts::default(),
            relay_override: None,
            smtp_port: 25,
            resolver: ResolverSettings::default(),
            tls_policy: TlsPolicy::Opportunistic,
            tls_client: None,
            relay_auth: HashMap::new(),
            dkim: None,
        }
    }
}

/// One site, as [`DeliveryEngine::stats`] sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteStats {
    /// The site.
    pub key: SiteKey,
    /// Its lane.
    pub lane: Lane,
    /// Messages waiting in its queue.
    pub queued: u32,
    /// Messages being sent (taken by a worker).
    pub sending: u32,
    /// Sessions (workers) open or opening.
    pub connections: u32,
    /// The connection cap in force (after backoff; 1 in the bog).
    pub max_connections: u32,
    /// The message rate in force, per second (after ramp-up, backoff, bog); `None`: unlimited.
    pub rate: Option<f64>,
    /// Whether a backoff cut is in force.
    pub backing_off: bool,
    /// Recipient domains seen on the site (counted up to 10 000).
    pub domains: u32,
    /// The configured message rate (this smurf's share, before ramp-up and learning).
    pub configured_rate: Option<f64>,
    /// The configured connection cap (this smurf's share).
    pub configured_connections: u32,
    /// The rate learnt from throttling replies, if any.
    pub learnt_rate: Option<f64>,
    /// The connection count learnt from "too many connections", if any.
    pub learnt_connections: Option<u32>,
    /// Throttling replies seen.
    pub throttled: u64,
    /// Messages per second the site accepted over the last second.
    pub accepted_rate: f64,
    /// The last throttling reply.
    pub last_reply: Option<String>,
    /// Suspended by an operator's rule.
    pub suspended: bool,
}

impl SiteStats {
    /// The site as reported to the coordinator.
    pub fn throttle_report(&self, cut: bool) -> SiteThrottle {
        SiteThrottle {
            site: self.key.0.to_string(),
            configured_milli: self.configured_rate.map(to_milli),
            learnt_milli: self.learnt_rate.map(to_milli),
            configured_connections: self.configured_connections,
            learnt_connections: self.learnt_connections,
            accepted_milli: Some(to_milli(self.accepted_rate)),
            connections: self.connections,
            throttled: self.throttled,
            last_reply: self.last_reply.clone(),
            cut,
        }
    }
}

/// What the engine holds, for load reports and tests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EngineStats {
    /// Messages waiting (in site queues or for their MX lookup).
    pub queued: u32,
    /// Messages being sent.
    pub sending: u32,
    /// Sites in the bog.
    pub bog_sites: u32,
    /// Messages waiting in bogged sites' queues.
    pub bog_queued: u32,
    /// Every live site, by key.
    pub sites: Vec<SiteStats>,
}

impl EngineStats {
    /// The site with this key, if live.
    pub fn site(&self, key: &str) -> Option<&SiteStats> {
        self.sites.iter().find(|s| &*s.key.0 == key)
    }
}

/// This smurf's share of a site's farm-wide learnt rate and connection count.
type FarmShare = (Option<f64>, Option<u32>);

/// State shared by the engine, its sites' dispatchers and their workers.
struct Shared {
    settings: DeliverySettings,
    tls_client: TlsClient,
    dkim: Option<Arc<DkimSigner>>,
    resolver: Result<MxResolver, String>,
    generation: AtomicU64,
    closing: AtomicBool,
    shaping: RwLock<Arc<Shaping>>,
    sites: Mutex<HashMap<SiteKey, Arc<Site>>>,
    /// Dispatchers and MX lookups.
    tasks: Mutex<JoinSet<()>>,
    /// Jobs waiting for their MX lookup.
    resolving: AtomicU32,
    /// The site of each domain that has a shaping section, learnt as soon as the shaping is
    /// applied: the section then governs the whole site even before (or without) any message
    /// to that domain on this smurf.
    shaped_domains: Mutex<HashMap<String, SiteKey>>,
    /// This smurf's share of each site's farm-wide learnt rate and connections, from the
    /// coordinator: applied to live sites at once and to sites created later.
    farm_rates: Mutex<HashMap<SiteKey, FarmShare>>,
    /// Woken when a site's learnt values were cut (the coordinator should hear of it).
    throttle_changed: Arc<Notify>,
    /// The rate limiters' clock, made once: making one calibrates it with CPUID, which a
    /// virtual machine traps (it was 12 % of a smurf's CPU when each limiter update made one).
    clock: governor::clock::DefaultClock,
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn shaping(&self) -> Arc<Shaping> {
        self.shaping
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn is_current(&self, job: &Job) -> bool {
        job.generation == self.generation.load(Ordering::SeqCst)
    }

    fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    /// Puts a job on its site's queue, creating the site (and its dispatcher) on first use.
    fn enqueue(self: &Arc<Self>, mut job: Job, key: SiteKey, target: Target, domain: Option<&str>) {
        if !self.is_current(&job) {
            return;
        }
        if self.closing() {
            job.report(Outcome::Deferred, 0, None, "smurf shutting down".into());
            return;
        }
        loop {
            let site = {
                let mut sites = lock(&self.sites);
                match sites.get(&key) {
                    Some(site) => site.clone(),
                    None => {
                        let known = lock(&self.shaped_domains)
                            .iter()
                            .filter(|(_, site)| **site == key)
                            .map(|(domain, _)| domain.clone())
                            .collect();
                        let shaping = self.shaping();
                        let farm = lock(&self.farm_rates).get(&key).copied();
                        let site = Arc::new(Site::new(
                            key.clone(),
                            target.clone(),
                            known,
                            &shaping,
                            farm,
                            self.clock.clone(),
                        ));
                        sites.insert(key.clone(), site.clone());
                        self.spawn(site::dispatch(site.clone(), self.clone()));
                        site
                    }
                }
            };
            match site.push(job, &target, domain, &self.shaping()) {
                Push::Queued => return,
                Push::Overflow(job) => {
                    job.report(
                        Outcome::Deferred,
                        0,
                        None,
                        format!("site {key} is in the bog (failing): deferred without an attempt"),
                    );
                    return;
                }
                Push::Closed(back) => {
                    // Reaped between the lookup and the push: make a new one.
                    let mut sites = lock(&self.sites);
                    if sites.get(&key).is_some_and(|s| Arc::ptr_eq(s, &site)) {
                        sites.remove(&key);
                    }
                    job = back;
                }
            }
        }
    }

    /// Records that `domain`, which has a shaping section, routes to `key`.
    fn learn_domain_site(&self, domain: &str, key: &SiteKey) {
        let changed =
            lock(&self.shaped_domains).insert(domain.to_owned(), key.clone()) != Some(key.clone());
        if changed {
            let site = lock(&self.sites).get(key).cloned();
            if let Some(site) = site {
                site.add_domain(domain, &self.shaping());
            }
        }
    }
}

/// The engine: sites with their queues, dispatchers and workers.
pub struct DeliveryEngine {
    shared: Arc<Shared>,
}

impl DeliveryEngine {
    /// An engine with no sites yet, and the built-in shaping until
    /// [`apply_shaping`](Self::apply_shaping).
    pub fn new(settings: DeliverySettings) -> Self {
        let tls_client = match settings.tls_client.clone() {
            Some(client) => client,
            // Building the unauthenticated client involves no file and no system store.
            None => TlsClient::new(&TlsVerify::Insecure)
                .expect("the built-in TLS client configuration is valid"),
        };
        let resolver = MxResolver::new(settings.resolver.clone()).map_err(|e| {
            warn!("MX delivery unavailable: {e}");
            e.to_string()
        });
        Self {
            shared: Arc::new(Shared {
                dkim: settings.dkim.clone(),
                settings,
                tls_client,
                resolver,
                generation: AtomicU64::new(0),
                closing: AtomicBool::new(false),
                shaping: RwLock::new(Arc::new(Shaping::default())),
                sites: Mutex::new(HashMap::new()),
                tasks: Mutex::new(JoinSet::new()),
                resolving: AtomicU32::new(0),
                shaped_domains: Mutex::new(HashMap::new()),
                farm_rates: Mutex::new(HashMap::new()),
                throttle_changed: Arc::new(Notify::new()),
                clock: governor::clock::DefaultClock::default(),
            }),
        }
    }

    /// Takes new shaping rules and this smurf's share of them, and applies them to every live
    /// site at once. A file with errors is refused (each error is logged) and the rules in
    /// force stay.
    pub fn apply_shaping(&mut self, update: ShapingUpdate) {
        let shaping = match Shaping::from_update(&update) {
            Ok(shaping) => Arc::new(shaping),
            Err(errors) => {
                for e in &errors {
                    warn!("shaping file refused: {e}");
                }
                return;
            }
        };
        info!(share = update.share(), "shaping update applied");
        *self
            .shared
            .shaping
            .write()
            .unwrap_or_else(PoisonError::into_inner) = shaping.clone();
        let sites: Vec<Arc<Site>> = lock(&self.shared.sites).values().cloned().collect();
        for site in sites {
            site.reshape(&shaping);
        }
        // Find the site of every domain with a section now, so that the section applies to
        // its site from the first message, whichever domain of the site comes first.
        lock(&self.shared.shaped_domains).retain(|domain, _| shaping.has_domain(domain));
        if let Ok(resolver) = &self.shared.resolver {
            for domain in shaping.domain_names() {
                let (shared, resolver) = (self.shared.clone(), resolver.clone());
                let domain = domain.to_owned();
                self.shared.spawn(async move {
                    if let Ok(route) = resolver.resolve(&domain).await {
                        shared.learn_domain_site(&domain, &route.site);
                    }
                });
            }
        }
    }

    /// Starts a new link generation: queued jobs of earlier links are dropped (the coordinator
    /// takes their recipients back).
    pub fn next_generation(&self) -> u64 {
        let generation = self.shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let sites: Vec<Arc<Site>> = lock(&self.shared.sites).values().cloned().collect();
        for site in sites {
            site.purge_stale(generation);
        }
        generation
    }

    /// Takes every queued job of the current generation that no worker has started, and returns
    /// the recipient ids: they are given back to the coordinator unattempted (role switch,
    /// drain, shutdown). Jobs being sent finish and report as usual; a job still waiting for its
    /// MX lookup is queued and sent afterwards.
    pub fn hand_back(&self) -> Vec<u64> {
        let generation = self.shared.generation.load(Ordering::SeqCst);
        let sites: Vec<Arc<Site>> = lock(&self.shared.sites).values().cloned().collect();
        sites
            .iter()
            .flat_map(|site| site.take_queued(generation))
            .collect()
    }

    /// Routes a job to its site's queue (after an MX lookup in MX mode). Never blocks; every
    /// job of the current generation gets a result.
    pub fn submit(&mut self, job: Job) {
        let shared = &self.shared;
        if !shared.is_current(&job) {
            return;
        }
        let relay = shared
            .settings
            .relay_override
            .clone()
            .or_else(|| job.campaign.bundle.delivery.relay.clone());
        if let Some(relay) = relay {
            let Some((host, port)) = split_relay(&relay) else {
                job.report(
                    Outcome::Deferred,
                    0,
                    None,
                    format!("invalid relay address {relay:?}: expected host:port"),
                );
                return;
            };
            let key = SiteKey(format!("relay:{}", relay.to_ascii_lowercase()).into());
            let target = Target::Relay {
                host,
                port,
                auth: shared.settings.relay_auth.get(&relay).cloned(),
                connections: u32::from(job.campaign.bundle.delivery.connections.max(1)),
            };
            shared.enqueue(job, key, target, None);
            return;
        }
        let domain = match mailfarm_templates::address::domain_of(job.email()) {
            domain if !domain.is_empty() => domain,
            _ => {
                let text = format!("recipient address {:?} has no domain", job.email());
                job.report(Outcome::Failed, 553, Some((5, 1, 3)), text);
                return;
            }
        };
        let resolver = match &shared.resolver {
            Ok(resolver) => resolver.clone(),
            Err(reason) => {
                job.report(Outcome::Deferred, 451, Some((4, 4, 3)), reason.clone());
                return;
            }
        };
        shared.resolving.fetch_add(1, Ordering::SeqCst);
        let task_shared = shared.clone();
        shared.spawn(async move {
            let route = resolver.resolve(&domain).await;
            task_shared.resolving.fetch_sub(1, Ordering::SeqCst);
            match route {
                Ok(route) => route_job(&task_shared, job, route, &domain),
                Err(e) => {
                    if task_shared.is_current(&job) {
                        let (outcome, code, enhanced) = route_error_reply(&e);
                        job.report(outcome, code, Some(enhanced), e.to_string());
                    }
                }
            }
        });
    }

    /// Takes this smurf's share of sites' farm-wide learnt values (from the coordinator).
    pub fn apply_site_rates(&self, rates: Vec<SiteRate>) {
        for rate in rates {
            let key = SiteKey(rate.site.into());
            let value = (rate.rate_milli.map(from_milli), rate.connections);
            lock(&self.shared.farm_rates).insert(key.clone(), value);
            let site = lock(&self.shared.sites).get(&key).cloned();
            if let Some(site) = site {
                site.set_farm(value.0, value.1);
            }
        }
    }

    /// Woken when a site's learnt values were cut: then send [`Self::throttle_reports`].
    pub fn throttle_signal(&self) -> Arc<Notify> {
        self.shared.throttle_changed.clone()
    }

    /// What every site that ever throttled learnt, for the coordinator (`cut` set on the sites
    /// cut since the last call).
    pub fn throttle_reports(&self) -> Vec<SiteThrottle> {
        let sites: Vec<Arc<Site>> = lock(&self.shared.sites).values().cloned().collect();
        let mut out = Vec::new();
        for site in sites {
            let cut = site.take_cut();
            let s = site.stats();
            if s.throttled > 0 || s.learnt_rate.is_some() || s.learnt_connections.is_some() {
                out.push(s.throttle_report(cut));
            }
        }
        out.sort_by(|a, b| a.site.cmp(&b.site));
        out
    }

    /// What the engine holds right now.
    pub fn stats(&self) -> EngineStats {
        let sites: Vec<Arc<Site>> = lock(&self.shared.sites).values().cloned().collect();
        let mut stats = EngineStats {
            queued: self.shared.resolving.load(Ordering::SeqCst),
            ..EngineStats::default()
        };
        for site in sites {
            let s = site.stats();
            stats.queued += s.queued;
            stats.sending += s.sending;
            if s.lane == Lane::Bog {
                stats.bog_sites += 1;
                stats.bog_queued += s.queued;
            }
            stats.sites.push(s);
        }
        stats.sites.sort_by(|a, b| a.key.cmp(&b.key));
        stats
    }

    /// Stops taking jobs: jobs still queued are deferred ("smurf shutting down"; dropped if
    /// their link generation ended), messages being sent finish, sessions are closed.
    pub async fn shutdown(self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        let sites: Vec<Arc<Site>> = lock(&self.shared.sites).values().cloned().collect();
        for site in sites {
            site.wake_all();
        }
        loop {
            let next = {
                let mut tasks = lock(&self.shared.tasks);
                if tasks.is_empty() {
                    break;
                }
                // Take the set out so that tasks spawned meanwhile land in a fresh one.
                std::mem::take(&mut *tasks)
            };
            let mut next = next;
            while next.join_next().await.is_some() {}
        }
    }
}

/// Queues an MX-routed job on its route's site.
fn route_job(shared: &Arc<Shared>, job: Job, route: Arc<MxRoute>, domain: &str) {
    let key = route.site.clone();
    if shared.shaping().has_domain(domain) {
        // Keep up with MX changes.
        shared.learn_domain_site(domain, &key);
    }
    shared.enqueue(job, key, Target::Mx(route), Some(domain));
}

/// Outcome, code and enhanced code reported for a route error.
fn route_error_reply(e: &RouteError) -> (Outcome, u16, (u8, u16, u16)) {
    match e {
        RouteError::NullMx { .. } => (Outcome::Failed, 556, (5, 1, 10)),
        RouteError::NoSuchDomain { .. } => (Outcome::Failed, 550, (5, 1, 2)),
        RouteError::NoAddresses { .. } => (Outcome::Failed, 550, (5, 4, 4)),
        RouteError::Temporary { .. } => (Outcome::Deferred, 451, (4, 4, 3)),
    }
}

/// `host:port` (or `[v6]:port`) into its parts.
fn split_relay(relay: &str) -> Option<(String, u16)> {
    let (host, port) = relay.trim().rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse().ok()?;
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_addresses() {
        assert_eq!(
            split_relay("smtp.test:587"),
            Some(("smtp.test".into(), 587))
        );
        assert_eq!(split_relay("[::1]:25"), Some(("::1".into(), 25)));
        assert_eq!(split_relay("smtp.test"), None);
        assert_eq!(split_relay(":25"), None);
        assert_eq!(split_relay("a:b"), None);
    }

    #[test]
    fn route_errors_map_to_rfc_codes() {
        let d = || "x.test".to_owned();
        let null = route_error_reply(&RouteError::NullMx { domain: d() });
        assert_eq!(null, (Outcome::Failed, 556, (5, 1, 10)));
        let temp = route_error_reply(&RouteError::Temporary {
            domain: d(),
            reason: "SERVFAIL".into(),
        });
        assert_eq!(temp.0, Outcome::Deferred);
    }
}
