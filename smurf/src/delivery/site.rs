//! One site: its ready queue, limits and limiters, health, and the dispatcher task that keeps
//! the right number of workers (SMTP sessions) running for it.

use std::collections::{HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use mailfarm_protocol::Outcome;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::{debug, info};

use super::adaptive::Adaptive;
use super::health::{Effective, Health, Lane, Signal};
use super::{lock, Job, Shared, SiteStats};
use crate::outbound::route::{MxRoute, SiteKey};
use crate::outbound::shaping::{BogSettings, Shaping, SiteLimits};
use crate::outbound::smtp::Credentials;
use crate::outbound::throttle::{Action, ThrottleKind};
use crate::outbound::tls::TlsPolicy;

/// How often a dispatcher looks at its site without being woken.
const TICK: Duration = Duration::from_millis(250);
/// Longest single sleep while waiting for a limiter: a rebuilt limiter (new shaping, backoff,
/// lane change) is picked up at least this often.
const LIMITER_SLICE: Duration = Duration::from_millis(250);
/// A site with nothing queued and no session for this long is forgotten (its dispatcher ends).
const SITE_IDLE: Duration = Duration::from_secs(120);
/// A limiter is rebuilt when the rate in force drifts this far (relative) from its own.
const REBUILD_DRIFT: f64 = 0.03;
/// Recipient domains remembered per site; beyond this, only domains with a shaping section
/// are (memory stays bounded on sites such as a big hoster's, with countless domains).
const DOMAINS_MAX: usize = 10_000;

/// A direct rate limiter on clock `C` (the real clock, or a fake one in tests).
type Limiter<C = DefaultClock> =
    RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Where a site's sessions go.
#[derive(Clone, Debug)]
pub(super) enum Target {
    /// A relay (smart host).
    Relay {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
        /// AUTH credentials.
        auth: Option<Credentials>,
        /// Sessions per smurf the campaign asks for.
        connections: u32,
    },
    /// The MX hosts of the latest route seen for the site.
    Mx(Arc<MxRoute>),
}

/// What a worker needs to open a session.
pub(super) struct Plan {
    pub target: Target,
    pub tls: Option<TlsPolicy>,
    pub max_per_connection: Option<u32>,
}

/// Result of [`Site::push`].
pub(super) enum Push {
    Queued,
    /// The site is bogged and its queue full: defer the job.
    Overflow(Job),
    /// The site was reaped: queue on a new one.
    Closed(Job),
}

/// Which limiter.
#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    Message,
    Connection,
}

struct State {
    queue: VecDeque<Job>,
    target: Target,
    domains: HashSet<String>,
    limits: SiteLimits,
    bog: BogSettings,
    health: Health,
    adaptive: Adaptive,
    effective: Effective,
    message_limiter: Option<Paced>,
    connection_limiter: Option<Paced>,
    /// The engine's clock, shared by every limiter (never made per call: see `Shared::clock`).
    clock: DefaultClock,
    /// Workers running.
    workers: u32,
    /// Workers not holding a job (idle, starting, or between jobs).
    available: u32,
    /// Jobs held by workers.
    sending: u32,
    last_active: Instant,
    /// Reaped: takes no more jobs.
    closed: bool,
}

/// One site (see the module docs).
pub(super) struct Site {
    key: SiteKey,
    state: Mutex<State>,
    /// Wakes the dispatcher.
    wake: Notify,
    /// Wakes workers waiting for a job.
    ready: Notify,
}

/// Accounts for a running worker; dropping it (worker end, even by panic) releases its place.
pub(super) struct WorkerGuard {
    site: Arc<Site>,
    holding: bool,
    retired: bool,
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        if !self.retired {
            let mut st = lock(&self.site.state);
            st.workers -= 1;
            if self.holding {
                st.sending -= 1;
            } else {
                st.available -= 1;
            }
        }
        self.site.wake.notify_one();
    }
}

/// A limiter, the rate it was built for, and when it last let something through.
struct Paced<C: Clock = DefaultClock> {
    rate: f64,
    limiter: Arc<Limiter<C>>,
    last_grant: Option<Instant>,
}

impl<C: Clock + Clone> Paced<C> {
    fn with_clock(rate: f64, clock: &C) -> Self {
        Self {
            rate,
            limiter: limiter(rate, false, clock),
            last_grant: None,
        }
    }

    /// Rebuilds `slot` for `rate` if the rate moved far enough. The new limiter starts empty
    /// when the old one granted something less than one new interval ago (so a rebuild never
    /// lets anything through early), and ready otherwise (so frequent rebuilds, as during a
    /// ramp, never starve a slow site). `now` and `clock` tell the same time.
    fn repace_with(slot: &mut Option<Self>, rate: Option<f64>, now: Instant, clock: &C) {
        let current = slot.as_ref().map(|p| p.rate);
        if !drifted(current, rate) {
            return;
        }
        let last_grant = slot.as_ref().and_then(|p| p.last_grant);
        *slot = rate.map(|rate| {
            let recent =
                last_grant.is_some_and(|t| now.duration_since(t).as_secs_f64() * rate < 1.0);
            Paced {
                rate,
                limiter: limiter(rate, recent, clock),
                last_grant,
            }
        });
    }
}

fn limiter<C: Clock + Clone>(rate: f64, drained: bool, clock: &C) -> Arc<Limiter<C>> {
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-6)).max(Duration::from_micros(1));
    // Small bursts: a twentieth of a second's worth of messages.
    let burst = ((rate / 20.0).floor() as u32).clamp(1, 1000);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
    let limiter = Arc::new(RateLimiter::direct_with_clock(quota, clock.clone()));
    if drained {
        for _ in 0..burst {
            if limiter.check().is_err() {
                break;
            }
        }
    }
    limiter
}

fn drifted(old: Option<f64>, new: Option<f64>) -> bool {
    match (old, new) {
        (None, None) => false,
        (Some(a), Some(b)) => (a - b).abs() > REBUILD_DRIFT * a.max(b),
        _ => true,
    }
}

fn compute_limits(
    key: &SiteKey,
    target: &Target,
    domains: &HashSet<String>,
    s: &Shaping,
) -> SiteLimits {
    match target {
        Target::Relay { connections, .. } => s.relay_limits(key, *connections),
        Target::Mx(_) => {
            let names: Vec<&str> = domains
                .iter()
                .map(String::as_str)
                .filter(|d| s.has_domain(d))
                .collect();
            s.limits_for(key, &names)
        }
    }
}

impl State {
    /// Recomputes the limits in force; rebuilds limiters whose rate moved. Returns whether
    /// the connection cap went down.
    fn update_effective(&mut self, now: Instant) -> bool {
        let mut eff = self.health.effective(&self.limits, &self.bog, now);
        if self.health.lane() == Lane::Fast {
            eff.rate = self.adaptive.rate(eff.rate, now);
            eff.connections = self.adaptive.connections(eff.connections, now);
        }
        Paced::repace_with(&mut self.message_limiter, eff.rate, now, &self.clock);
        Paced::repace_with(
            &mut self.connection_limiter,
            eff.connection_rate,
            now,
            &self.clock,
        );
        let lowered = eff.connections < self.effective.connections;
        self.effective = eff;
        lowered
    }

    fn relimit(&mut self, key: &SiteKey, shaping: &Shaping, now: Instant) -> bool {
        self.limits = compute_limits(key, &self.target, &self.domains, shaping);
        self.bog = shaping.bog().clone();
        self.update_effective(now)
    }

    fn retire(&mut self, guard: &mut WorkerGuard) {
        self.workers -= 1;
        self.available -= 1;
        guard.retired = true;
    }
}

impl Site {
    /// A site; `domains` are recipient domains known to route to it already (those with a
    /// shaping section, learnt when the shaping was applied); `farm`: this smurf's share of
    /// the farm-wide learnt rate and connection count, when the coordinator sent one.
    pub(super) fn new(
        key: SiteKey,
        target: Target,
        domains: HashSet<String>,
        shaping: &Shaping,
        farm: Option<super::FarmShare>,
        clock: DefaultClock,
    ) -> Self {
        let now = Instant::now();
        let limits = compute_limits(&key, &target, &domains, shaping);
        let bog = shaping.bog().clone();
        let health = Health::new(now);
        let mut adaptive = Adaptive::new(now);
        if let Some((rate, connections)) = farm {
            adaptive.set_farm(rate, connections, now);
        }
        let mut effective = health.effective(&limits, &bog, now);
        effective.rate = adaptive.rate(effective.rate, now);
        effective.connections = adaptive.connections(effective.connections, now);
        let mut state = State {
            queue: VecDeque::new(),
            target,
            domains,
            limits,
            bog,
            health,
            adaptive,
            effective,
            message_limiter: None,
            connection_limiter: None,
            workers: 0,
            available: 0,
            sending: 0,
            last_active: now,
            closed: false,
            clock,
        };
        state.message_limiter = effective.rate.map(|r| Paced::with_clock(r, &state.clock));
        state.connection_limiter = effective
            .connection_rate
            .map(|r| Paced::with_clock(r, &state.clock));
        Self {
            key,
            state: Mutex::new(state),
            wake: Notify::new(),
            ready: Notify::new(),
        }
    }

    /// Queues a job; `target` refreshes the site's route (or relay settings), `domain` adds the
    /// recipient domain to the site's (for domain shaping sections).
    pub(super) fn push(
        &self,
        job: Job,
        target: &Target,
        domain: Option<&str>,
        shaping: &Shaping,
    ) -> Push {
        let now = Instant::now();
        let mut st = lock(&self.state);
        if st.closed {
            return Push::Closed(job);
        }
        let mut relimit = false;
        match (&mut st.target, target) {
            (Target::Mx(old), Target::Mx(new)) => {
                if !Arc::ptr_eq(old, new) {
                    *old = new.clone();
                }
            }
            (
                Target::Relay {
                    connections, auth, ..
                },
                Target::Relay {
                    connections: c,
                    auth: a,
                    ..
                },
            ) => {
                if *c > *connections {
                    *connections = *c;
                    relimit = true;
                }
                if auth != a {
                    auth.clone_from(a);
                }
            }
            (old, new) => {
                *old = new.clone();
                relimit = true;
            }
        }
        if let Some(domain) = domain {
            if !st.domains.contains(domain) {
                // Only a domain with its own section changes the site's limits.
                let shaped = shaping.has_domain(domain);
                if shaped || st.domains.len() < DOMAINS_MAX {
                    st.domains.insert(domain.to_owned());
                }
                relimit |= shaped;
            }
        }
        if relimit {
            let lowered = st.relimit(&self.key, shaping, now);
            if lowered {
                self.ready.notify_waiters();
            }
        }
        if st.health.lane() == Lane::Bog && st.queue.len() >= st.bog.max_queued as usize {
            return Push::Overflow(job);
        }
        st.queue.push_back(job);
        st.last_active = now;
        let wake_dispatcher = st.queue.len() > st.available as usize;
        drop(st);
        self.ready.notify_one();
        if wake_dispatcher {
            self.wake.notify_one();
        }
        Push::Queued
    }

    /// Adds a recipient domain found to route here (with its shaping section).
    pub(super) fn add_domain(&self, domain: &str, shaping: &Shaping) {
        let mut st = lock(&self.state);
        if st.domains.insert(domain.to_owned()) && st.relimit(&self.key, shaping, Instant::now()) {
            self.ready.notify_waiters();
        }
    }

    /// Applies new shaping rules.
    pub(super) fn reshape(&self, shaping: &Shaping) {
        let mut st = lock(&self.state);
        if st.relimit(&self.key, shaping, Instant::now()) {
            self.ready.notify_waiters();
        }
        drop(st);
        self.wake.notify_one();
    }

    /// Drops queued jobs of other generations.
    pub(super) fn purge_stale(&self, generation: u64) {
        lock(&self.state)
            .queue
            .retain(|job| job.generation == generation);
    }

    /// Removes the queued jobs of `generation` and returns their recipient ids (hand-back).
    pub(super) fn take_queued(&self, generation: u64) -> Vec<u64> {
        let mut st = lock(&self.state);
        let ids = st
            .queue
            .iter()
            .filter(|job| job.generation == generation)
            .map(|job| job.recipient.id)
            .collect();
        st.queue.clear();
        ids
    }

    /// Wakes the dispatcher and every idle worker (shutdown).
    pub(super) fn wake_all(&self) {
        self.wake.notify_one();
        self.ready.notify_waiters();
    }

    pub(super) fn stats(&self) -> SiteStats {
        let now = Instant::now();
        let mut st = lock(&self.state);
        SiteStats {
            accepted_rate: st.adaptive.accepted_now(now),
            configured_rate: st.limits.message_rate.map(|r| r.per_second()),
            configured_connections: st.limits.max_connections,
            learnt_rate: st.adaptive.learnt_rate(),
            learnt_connections: st.adaptive.learnt_connections(),
            throttled: st.adaptive.throttled,
            last_reply: st.adaptive.last_reply.clone(),
            suspended: st.adaptive.suspended(now),
            key: self.key.clone(),
            lane: st.health.lane(),
            queued: u32::try_from(st.queue.len()).unwrap_or(u32::MAX),
            sending: st.sending,
            connections: st.workers,
            max_connections: st.effective.connections,
            rate: st.effective.rate,
            backing_off: st.adaptive.active(now),
            domains: u32::try_from(st.domains.len()).unwrap_or(u32::MAX),
        }
    }

    pub(super) fn key(&self) -> &SiteKey {
        &self.key
    }

    /// What a worker needs to open a session now.
    pub(super) fn plan(&self) -> Plan {
        let st = lock(&self.state);
        Plan {
            target: st.target.clone(),
            tls: st.limits.tls,
            max_per_connection: st.limits.max_messages_per_connection,
        }
    }

    /// Takes one attempt's signal into the site's health (the bog).
    pub(super) fn record(&self, signal: Signal) {
        let now = Instant::now();
        let mut st = lock(&self.state);
        let bog = st.bog.clone();
        if !st.health.record(signal, now, &bog) {
            return;
        }
        let lowered = st.update_effective(now);
        let eff = st.effective;
        match st.health.lane() {
            Lane::Bog => {
                info!(site = %self.key, rate = ?eff.rate, "site keeps failing: moved to the bog");
            }
            Lane::Fast => info!(site = %self.key, "probe succeeded: site back in the fast lane"),
        }
        drop(st);
        if lowered {
            self.ready.notify_waiters();
        }
        self.wake.notify_one();
    }

    /// The site accepted a message (measures the rate it takes).
    pub(super) fn delivered(&self) {
        lock(&self.state).adaptive.on_accepted(Instant::now());
    }

    /// Acts on a throttling reply to an attempt started at `sent` (or an operator's rule
    /// matching a reply): cuts the learnt rate or connection count, suspends, caps or bogs the
    /// site. Returns whether the learnt values changed (the coordinator should hear of it).
    pub(super) fn throttled(
        &self,
        action: &Action,
        reply: &str,
        share: f64,
        sent: Instant,
    ) -> bool {
        let now = Instant::now();
        let mut st = lock(&self.state);
        st.adaptive.last_reply = Some(reply.chars().take(300).collect());
        let current = st.effective;
        let changed = match action {
            Action::Ignore => false,
            Action::Throttle(ThrottleKind::Rate) => {
                let sessions = st.workers;
                st.adaptive.cut_rate((current.rate, sessions), sent, now)
            }
            Action::Throttle(ThrottleKind::Connections) => {
                // This worker's session was refused: the others are what the site allows.
                let others = st.workers.saturating_sub(1);
                st.adaptive.cut_connections(others, now)
            }
            Action::Suspend(d) => {
                st.adaptive.throttled += 1;
                st.adaptive.suspend(now + *d);
                true
            }
            Action::Cap {
                rate,
                connections,
                duration,
            } => {
                st.adaptive.throttled += 1;
                let rate = rate.map(|r| r.scaled(share).per_second());
                let connections =
                    connections.map(|c| ((f64::from(c) * share).floor() as u32).max(1));
                st.adaptive.cap(rate, connections, now + *duration);
                true
            }
            Action::Bog => {
                st.adaptive.throttled += 1;
                st.health.bog_now()
            }
        };
        if !changed {
            return false;
        }
        let lowered = st.update_effective(now);
        let eff = st.effective;
        info!(site = %self.key, rate = ?eff.rate, connections = eff.connections, ?action,
            "site asked us to slow down: {reply}");
        drop(st);
        if lowered {
            self.ready.notify_waiters();
        }
        self.wake.notify_one();
        true
    }

    /// Puts back a job the site throttled, at the head of the queue: it is retried here under
    /// the lowered rate, without a result to the coordinator.
    pub(super) fn requeue(&self, job: Job) {
        let mut st = lock(&self.state);
        st.queue.push_front(job);
        st.last_active = Instant::now();
        drop(st);
        self.ready.notify_one();
        self.wake.notify_one();
    }

    /// Takes this smurf's share of the farm-wide learnt values.
    pub(super) fn set_farm(&self, rate: Option<f64>, connections: Option<u32>) {
        let now = Instant::now();
        let mut st = lock(&self.state);
        st.adaptive.set_farm(rate, connections, now);
        if st.update_effective(now) {
            self.ready.notify_waiters();
        }
    }

    /// Whether a learnt value changed since the last call (then the coordinator should hear).
    pub(super) fn take_cut(&self) -> bool {
        std::mem::take(&mut lock(&self.state).adaptive.cut_pending)
    }

    /// A guard for a worker the dispatcher just counted.
    fn guard(self: &Arc<Self>) -> WorkerGuard {
        WorkerGuard {
            site: self.clone(),
            holding: false,
            retired: false,
        }
    }

    /// The next job for a worker; `None` when the worker should end (idle too long, over the
    /// connection cap, shutting down).
    pub(super) async fn next_job(&self, shared: &Shared, guard: &mut WorkerGuard) -> Option<Job> {
        let deadline = tokio::time::Instant::now() + shared.settings.idle_timeout;
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = lock(&self.state);
                if st.workers > st.effective.connections || shared.closing() {
                    st.retire(guard);
                    return None;
                }
                // Read now: the link may have changed while this worker waited.
                let generation = shared.generation.load(Ordering::SeqCst);
                while let Some(job) = st.queue.pop_front() {
                    if job.generation != generation {
                        continue;
                    }
                    st.available -= 1;
                    st.sending += 1;
                    st.last_active = Instant::now();
                    guard.holding = true;
                    return Some(job);
                }
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => {
                    let mut st = lock(&self.state);
                    if st.queue.is_empty() {
                        st.retire(guard);
                        return None;
                    }
                }
            }
        }
    }

    /// A worker finished its job.
    pub(super) fn job_done(&self, guard: &mut WorkerGuard) {
        let mut st = lock(&self.state);
        st.sending -= 1;
        st.available += 1;
        st.last_active = Instant::now();
        guard.holding = false;
    }

    /// Waits until the limiter allows one more message or session; `false` if the engine is
    /// shutting down meanwhile.
    pub(super) async fn acquire(&self, kind: Kind, shared: &Shared) -> bool {
        loop {
            if shared.closing() {
                return false;
            }
            let suspended = lock(&self.state)
                .adaptive
                .suspended_until()
                .and_then(|until| until.checked_duration_since(Instant::now()));
            if let Some(wait) = suspended.filter(|w| !w.is_zero()) {
                tokio::time::sleep(wait.min(LIMITER_SLICE)).await;
                continue;
            }
            let limiter = {
                let st = lock(&self.state);
                match kind {
                    Kind::Message => st.message_limiter.as_ref(),
                    Kind::Connection => st.connection_limiter.as_ref(),
                }
                .map(|p| p.limiter.clone())
            };
            let Some(limiter) = limiter else {
                return true;
            };
            match limiter.check() {
                Ok(()) => {
                    let mut st = lock(&self.state);
                    let paced = match kind {
                        Kind::Message => st.message_limiter.as_mut(),
                        Kind::Connection => st.connection_limiter.as_mut(),
                    };
                    if let Some(paced) = paced {
                        paced.last_grant = Some(Instant::now());
                    }
                    return true;
                }
                Err(not_until) => {
                    let wait = not_until.wait_time_from(limiter.clock().now());
                    tokio::time::sleep(wait.min(LIMITER_SLICE)).await;
                }
            }
        }
    }
}

/// The site's dispatcher: keeps up to the connection cap of workers busy while jobs wait,
/// advances ramp-up and backoff, sheds a bogged site's excess, and ends the site when it has
/// been idle for long (or the engine shuts down).
pub(super) async fn dispatch(site: Arc<Site>, shared: Arc<Shared>) {
    let mut workers = JoinSet::new();
    // An idle site (nothing queued, no session, no backoff to wind down) is only looked at
    // again when woken, or when it is time to forget it.
    let mut pause = TICK;
    loop {
        tokio::select! {
            () = site.wake.notified() => {}
            () = tokio::time::sleep(pause) => {}
            Some(_) = workers.join_next(), if !workers.is_empty() => {}
        }
        let now = Instant::now();
        let closing = shared.closing();
        let mut shed = Vec::new();
        let mut spawn = 0;
        let mut exit = false;
        let mut maybe_idle = false;
        {
            let mut st = lock(&site.state);
            let st = &mut *st;
            let base = st.health.effective(&st.limits, &st.bog, now);
            let backlogged = !st.queue.is_empty();
            st.adaptive
                .tick(now, backlogged, base.rate, base.connections);
            if st.update_effective(now) {
                site.ready.notify_waiters();
            }
            if closing {
                shed.extend(st.queue.drain(..));
                exit = st.workers == 0;
                st.closed |= exit;
            } else {
                if st.health.lane() == Lane::Bog {
                    let keep = st.bog.max_queued as usize;
                    if st.queue.len() > keep {
                        shed.extend(st.queue.drain(keep..));
                    }
                }
                while st.workers < st.effective.connections
                    && st.queue.len() > st.available as usize
                    && st.adaptive.may_open(now)
                {
                    st.workers += 1;
                    st.available += 1;
                    spawn += 1;
                }
                let quiet = st.queue.is_empty() && st.workers == 0;
                maybe_idle = quiet && now.duration_since(st.last_active) >= SITE_IDLE;
                pause = if quiet && !st.adaptive.active(now) {
                    SITE_IDLE
                } else {
                    TICK
                };
            }
        }
        for job in shed {
            if shared.is_current(&job) {
                let text = if closing {
                    "smurf shutting down".to_owned()
                } else {
                    format!(
                        "site {} is in the bog (failing): deferred without an attempt",
                        site.key
                    )
                };
                job.report(Outcome::Deferred, 0, None, text);
            }
        }
        for _ in 0..spawn {
            let guard = site.guard();
            workers.spawn(super::worker::run(site.clone(), shared.clone(), guard));
        }
        if maybe_idle {
            let mut sites = lock(&shared.sites);
            let mut st = lock(&site.state);
            if st.queue.is_empty() && st.workers == 0 {
                st.closed = true;
                if sites.get(&site.key).is_some_and(|s| Arc::ptr_eq(s, &site)) {
                    sites.remove(&site.key);
                }
                exit = true;
                debug!(site = %site.key, "site idle: forgotten");
            }
        }
        if exit {
            while workers.join_next().await.is_some() {}
            return;
        }
    }
}

#[cfg(test)]
#[path = "site_tests.rs"]
mod tests;
