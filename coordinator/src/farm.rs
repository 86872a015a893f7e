//! The coordinator's live state on top of the durable [`Store`]: campaigns and their counters,
//! the ready buffers smurf links lease from, what is in flight on which node, and the retry
//! schedule.
//!
//! The store is the source of truth; this module keeps only bounded working sets in memory:
//! at most `ready_buffer` recipients per campaign are loaded ahead of leasing, and in-flight
//! recipients are bounded by the smurfs' windows. Links wait on a watch channel that is bumped
//! whenever work appears.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use mailfarm_protocol::{
    CampaignCounters, CampaignState, NodeInfo, Outcome, Rate, RecipientData, RecipientResult,
    SmurfLoad, TemplateBundle,
};
use tokio::sync::watch;
use tracing::warn;

use crate::flow::{domain_of, DomainFlows};
use crate::store::{
    split_id, CampaignRecord, CampaignStatus, RecipientRecord, Store, StoreError, StoredState,
};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Retry policy for temporary failures.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Waits before attempt 2, 3, ...; the last one repeats. Default 5m, 10m, 30m, 1h, 2h, 4h.
    pub schedule: Vec<Duration>,
    /// A recipient still deferred this long after its first attempt fails. Default 3 days.
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        Self {
            schedule: vec![m(5), m(10), m(30), m(60), m(120), m(240)],
            max_age: Duration::from_secs(3 * 86_400),
        }
    }
}

impl RetryPolicy {
    /// When to retry after `attempts` attempts, with ±10 % jitter; None when the recipient is
    /// too old to retry.
    fn next_retry(&self, attempts: u16, first_attempt_ms: u64, now: u64) -> Option<u64> {
        let index =
            usize::from(attempts.saturating_sub(1)).min(self.schedule.len().saturating_sub(1));
        let wait = self
            .schedule
            .get(index)
            .copied()
            .unwrap_or(Duration::from_secs(300));
        let jitter = 0.9 + rand::random::<f64>() * 0.2;
        let at = now + (wait.as_millis() as f64 * jitter) as u64;
        (at.saturating_sub(first_attempt_ms) <= self.max_age.as_millis() as u64).then_some(at)
    }
}

struct Live {
    record: CampaignRecord,
    bundle: Arc<TemplateBundle>,
    counters: CampaignCounters,
    ready: VecDeque<RecipientData>,
    /// Recipients over their domain's in-flight cap, waiting on the coordinator.
    parked: HashMap<String, VecDeque<RecipientData>>,
    parked_len: usize,
    scan_from: u32,
    scan_exhausted: bool,
    limiter: Option<DefaultDirectRateLimiter>,
    reasons: HashMap<String, u64>,
}

impl Live {
    fn new(record: CampaignRecord) -> Self {
        let counters = CampaignCounters {
            id: record.bundle.campaign_id.clone(),
            total: record.total,
            rejected_rows: record.rejected_rows,
            suppressed: record.suppressed,
            ..Default::default()
        };
        let limiter = record.rate_cap.as_ref().and_then(limiter);
        Self {
            bundle: Arc::new(record.bundle.clone()),
            counters,
            ready: VecDeque::new(),
            parked: HashMap::new(),
            parked_len: 0,
            scan_from: 0,
            scan_exhausted: false,
            limiter,
            reasons: HashMap::new(),
            record,
        }
    }

    fn state(&self, now: u64) -> CampaignState {
        match self.record.status {
            CampaignStatus::Running if self.record.start_at_ms.is_some_and(|t| t > now) => {
                CampaignState::Scheduled
            }
            CampaignStatus::Running => CampaignState::Running,
            CampaignStatus::Paused => CampaignState::Paused,
            CampaignStatus::Cancelled => CampaignState::Cancelled,
            CampaignStatus::Finished => CampaignState::Finished,
        }
    }

    fn snapshot(&self, now: u64) -> CampaignCounters {
        let mut c = self.counters.clone();
        c.state = self.state(now);
        c.finished = match self.record.status {
            CampaignStatus::Finished => true,
            CampaignStatus::Cancelled => c.in_flight == 0,
            _ => false,
        };
        let end = self.record.finished_ms.unwrap_or(now);
        c.elapsed_ms = end.saturating_sub(self.record.created_ms);
        c
    }

    fn is_done(&self) -> bool {
        let c = &self.counters;
        self.record.ingest_complete && c.queued == 0 && c.in_flight == 0 && c.deferred == 0
    }
}

fn limiter(rate: &Rate) -> Option<DefaultDirectRateLimiter> {
    let count = NonZeroU32::new(rate.count)?;
    let quota = Quota::with_period(rate.per / rate.count)?
        .allow_burst(count.min(NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN)));
    Some(RateLimiter::direct(quota))
}

struct InFlight {
    data: RecipientData,
}

struct Node {
    name: String,
    window: u32,
    in_flight: u64,
    draining: bool,
    load: SmurfLoad,
    results: u64,
}

#[derive(Default)]
struct FarmState {
    /// No leasing before this time (ms): after a restart, reconnecting smurfs first report the
    /// results they kept, so those messages are not sent again.
    lease_not_before: u64,
    /// Reconnecting smurfs still reporting results they kept: no leasing meanwhile.
    holds: usize,
    nodes: Vec<Node>,
    campaigns: BTreeMap<u32, Live>,
    by_id: HashMap<String, u32>,
    next_campaign: u32,
    in_flight: HashMap<u64, InFlight>,
    flows: DomainFlows,
    draining: bool,
}

/// Shared handle on the coordinator's state.
pub struct Farm {
    store: Store,
    state: Mutex<FarmState>,
    work: watch::Sender<u64>,
    shaping: watch::Sender<u64>,
    shaping_toml: Mutex<Arc<str>>,
    retry: RetryPolicy,
    ready_buffer: usize,
}

/// Leasing is on hold while this lives (see [`Farm::hold_leasing`]).
pub struct LeaseHold<'a> {
    farm: &'a Farm,
}

impl Drop for LeaseHold<'_> {
    fn drop(&mut self) {
        {
            let mut state = self.farm.lock();
            state.holds = state.holds.saturating_sub(1);
        }
        self.farm.signal_work();
    }
}

/// A lease: recipients to send with a template.
pub struct Lease {
    /// Template bundle of the campaign.
    pub bundle: Arc<TemplateBundle>,
    /// The recipients.
    pub recipients: Vec<RecipientData>,
}

/// One delivery attempt, as the accounting log records it.
#[derive(Debug, serde::Serialize)]
pub struct Attempt {
    /// Time, ms since the epoch.
    pub time_ms: u64,
    /// Campaign id.
    pub campaign: String,
    /// Recipient id.
    pub recipient_id: u64,
    /// Recipient address.
    pub recipient: String,
    /// Smurf that made the attempt.
    pub smurf: String,
    /// Server that answered.
    pub remote: String,
    /// Outcome of the attempt.
    pub outcome: &'static str,
    /// What the coordinator decided: delivered, deferred (will retry), failed.
    pub state: &'static str,
    /// SMTP reply code.
    pub code: u16,
    /// Enhanced status code.
    pub enhanced: Option<String>,
    /// Reply text.
    pub text: String,
    /// Attempt duration.
    pub duration_ms: u32,
}

impl Attempt {
    /// The accounting line of `result`, which left its recipient in state `label`.
    fn of(
        result: &RecipientResult,
        time_ms: u64,
        campaign: &str,
        recipient: String,
        smurf: &str,
        label: &'static str,
    ) -> Self {
        Attempt {
            time_ms,
            campaign: campaign.to_owned(),
            recipient_id: result.id,
            recipient,
            smurf: smurf.to_owned(),
            remote: result.remote.clone(),
            outcome: match result.outcome {
                Outcome::Delivered => "delivered",
                Outcome::Deferred => "deferred",
                Outcome::Failed => "failed",
            },
            state: label,
            code: result.code,
            enhanced: result.enhanced.map(|(a, b, c)| format!("{a}.{b}.{c}")),
            text: result.text.clone(),
            duration_ms: result.duration_ms,
        }
    }
}

impl Farm {
    /// Loads the farm state from `store`.
    pub fn open(store: Store, retry: RetryPolicy) -> Result<Self, StoreError> {
        let mut state = FarmState::default();
        for record in store.campaigns()? {
            let seq = record.seq;
            let mut live = Live::new(record);
            let counts = store.count_states(seq)?;
            let c = &mut live.counters;
            c.queued = counts.pending;
            c.delivered = counts.delivered;
            c.deferred = counts.deferred;
            c.failed = counts.failed;
            c.skipped = counts.skipped;
            state.by_id.insert(c.id.clone(), seq);
            state.campaigns.insert(seq, live);
        }
        if state.campaigns.values().any(|l| l.counters.queued > 0) {
            state.lease_not_before = now_ms() + RECOVERY_GRACE_MS;
        }
        Ok(Self {
            store,
            state: Mutex::new(state),
            work: watch::Sender::new(0),
            shaping: watch::Sender::new(0),
            shaping_toml: Mutex::new(Arc::from("")),
            retry,
            ready_buffer: 2048,
        })
    }

    fn lock(&self) -> MutexGuard<'_, FarmState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The durable store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A receiver that changes whenever new work may be available.
    pub fn work_signal(&self) -> watch::Receiver<u64> {
        self.work.subscribe()
    }

    /// Wakes the links so they try to lease.
    pub fn signal_work(&self) {
        self.work.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Records that a smurf joined.
    pub fn smurf_joined(&self, node: &str, window: u32) {
        self.lock().nodes.push(Node {
            name: node.to_owned(),
            window,
            in_flight: 0,
            draining: false,
            load: SmurfLoad::default(),
            results: 0,
        });
        self.reshape();
    }

    /// Records that a smurf left.
    pub fn smurf_left(&self, node: &str) {
        {
            let mut state = self.lock();
            if let Some(i) = state.nodes.iter().position(|n| n.name == node) {
                state.nodes.swap_remove(i);
            }
        }
        self.reshape();
    }

    /// Sets the shaping file text sent to smurfs.
    pub fn set_shaping(&self, toml: &str) {
        *self.shaping_toml.lock().unwrap_or_else(|e| e.into_inner()) = Arc::from(toml);
        self.reshape();
    }

    fn reshape(&self) {
        self.shaping.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A receiver that changes whenever the shaping rules or the farm's membership change.
    pub fn shaping_signal(&self) -> watch::Receiver<u64> {
        self.shaping.subscribe()
    }

    /// The shaping update for `node`: the rules and an equal share among the active smurfs
    /// (draining ones send nothing new, so they are not counted).
    pub fn shaping_for(&self, node: &str) -> mailfarm_protocol::ShapingUpdate {
        let toml = self
            .shaping_toml
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .to_string();
        let state = self.lock();
        let active = state.nodes.iter().filter(|n| !n.draining).count().max(1);
        let me_draining = state.nodes.iter().any(|n| n.name == node && n.draining);
        mailfarm_protocol::ShapingUpdate {
            toml,
            share_numerator: 1,
            share_denominator: u32::try_from(active + usize::from(me_draining)).unwrap_or(u32::MAX),
        }
    }

    /// Names of the smurfs connected now.
    pub fn smurfs(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().nodes.iter().map(|n| n.name.clone()).collect();
        names.sort();
        names
    }

    /// Connected smurfs with their figures.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut nodes: Vec<NodeInfo> = self
            .lock()
            .nodes
            .iter()
            .map(|n| NodeInfo {
                node: n.name.clone(),
                in_flight: n.in_flight,
                window: n.window,
                draining: n.draining,
                load: n.load.clone(),
                results: n.results,
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        nodes
    }

    /// Stores a smurf's load report.
    pub fn report_load(&self, node: &str, load: SmurfLoad) {
        if let Some(n) = self.lock().nodes.iter_mut().find(|n| n.name == node) {
            n.load = load;
        }
    }

    /// Marks a node draining (or not). Returns false when no such node is connected.
    pub fn set_draining(&self, node: &str, draining: bool) -> bool {
        let found = {
            let mut state = self.lock();
            let mut found = false;
            for n in state.nodes.iter_mut().filter(|n| n.name == node) {
                n.draining = draining;
                found = true;
            }
            found
        };
        self.signal_work();
        self.reshape();
        found
    }

    /// Whether a node is draining.
    pub fn is_draining(&self, node: &str) -> bool {
        let state = self.lock();
        state.draining || state.nodes.iter().any(|n| n.name == node && n.draining)
    }

    /// Stops all leasing (coordinator shutdown).
    pub fn stop_leasing(&self) {
        self.lock().draining = true;
        self.signal_work();
    }

    /// Recipients in flight on the whole farm.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    /// Whether a campaign id is taken.
    pub fn contains(&self, id: &str) -> bool {
        self.lock().by_id.contains_key(id)
    }

    /// Stores a new campaign and registers it; refuses a taken id.
    pub fn create_campaign(&self, record: CampaignRecord) -> Result<CampaignRecord, String> {
        let mut state = self.lock();
        let id = record.bundle.campaign_id.clone();
        if state.by_id.contains_key(&id) {
            return Err(format!("{id} already exists on this coordinator"));
        }
        let record = self
            .store
            .create_campaign(record)
            .map_err(|e| e.to_string())?;
        let seq = record.seq;
        state.by_id.insert(id, seq);
        state.campaigns.insert(seq, Live::new(record.clone()));
        Ok(record)
    }

    /// Counts rows just committed by ingest, and wakes the links.
    pub fn rows_added(&self, seq: u32, accepted: u64, rejected: u64, suppressed: u64) {
        {
            let mut state = self.lock();
            if let Some(live) = state.campaigns.get_mut(&seq) {
                live.counters.total += accepted;
                live.counters.queued += accepted;
                live.counters.rejected_rows += rejected;
                live.counters.suppressed += suppressed;
                live.scan_exhausted = false;
            }
        }
        self.signal_work();
    }

    /// Records the end of ingest.
    pub fn ingest_done(&self, seq: u32) -> Result<(), StoreError> {
        let record = {
            let mut state = self.lock();
            let Some(live) = state.campaigns.get_mut(&seq) else {
                return Ok(());
            };
            live.record.ingest_complete = true;
            live.record.total = live.counters.total;
            live.record.rejected_rows = live.counters.rejected_rows;
            live.record.suppressed = live.counters.suppressed;
            live.record.clone()
        };
        self.store.update_campaign(&record)?;
        self.check_finished(seq)
    }

    fn check_finished(&self, seq: u32) -> Result<(), StoreError> {
        let record = {
            let mut state = self.lock();
            let Some(live) = state.campaigns.get_mut(&seq) else {
                return Ok(());
            };
            if live.record.status != CampaignStatus::Running || !live.is_done() {
                return Ok(());
            }
            live.record.status = CampaignStatus::Finished;
            live.record.finished_ms = Some(now_ms());
            live.record.clone()
        };
        self.store.update_campaign(&record)
    }

    fn refill(
        &self,
        live: &mut Live,
        in_flight: &HashMap<u64, InFlight>,
    ) -> Result<(), StoreError> {
        if live.scan_exhausted || live.ready.len() >= self.ready_buffer / 2 {
            return Ok(());
        }
        let want = self.ready_buffer - live.ready.len();
        let (rows, next) = self
            .store
            .scan_pending(live.record.seq, live.scan_from, want)?;
        for (id, values) in rows {
            if !in_flight.contains_key(&id) {
                live.ready.push_back(RecipientData { id, values });
            }
        }
        match next {
            Some(row) => live.scan_from = row,
            None => {
                live.scan_exhausted = true;
                live.scan_from = live.scan_from.max(
                    live.ready
                        .back()
                        .map_or(live.scan_from, |r| split_id(r.id).1.saturating_add(1)),
                );
            }
        }
        Ok(())
    }

    /// Leases up to `max` recipients of one campaign to `node`, taking campaigns in turn and
    /// honouring pause, schedule and rate caps.
    pub fn lease(&self, node: &str, max: usize) -> Option<Lease> {
        if max == 0 {
            return None;
        }
        let now = now_ms();
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.draining
            || now < state.lease_not_before
            || state.holds > 0
            || state.nodes.iter().any(|n| n.name == node && n.draining)
        {
            return None;
        }
        let max = load_adjusted(&state.nodes, node, max);
        let seqs: Vec<u32> = state.campaigns.keys().copied().collect();
        let start = seqs
            .iter()
            .position(|&s| s >= state.next_campaign)
            .unwrap_or(0);
        let FarmState {
            campaigns,
            in_flight,
            flows,
            nodes,
            next_campaign,
            ..
        } = state;
        for &seq in seqs[start..].iter().chain(&seqs[..start]) {
            let Some(live) = campaigns.get_mut(&seq) else {
                continue;
            };
            if live.state(now) != CampaignState::Running || live.counters.queued == 0 {
                continue;
            }
            let email_field = live.bundle.email_field as usize;
            let mut recipients = Vec::new();
            // Parked recipients first, as far as their domains have room again.
            if live.parked_len > 0 {
                for (domain, queue) in live.parked.iter_mut() {
                    while recipients.len() < max && flows.has_room(domain) {
                        let Some(r) = queue.pop_front() else { break };
                        flows.leased(domain);
                        live.parked_len -= 1;
                        recipients.push(r);
                    }
                }
                live.parked.retain(|_, q| !q.is_empty());
            }
            let mut scans = self.ready_buffer * 2;
            while recipients.len() < max && scans > 0 {
                scans -= 1;
                if let Err(e) = self.refill(live, in_flight) {
                    warn!(campaign = %live.counters.id, "cannot load recipients: {e}");
                    break;
                }
                let Some(r) = live.ready.pop_front() else {
                    break;
                };
                let domain = domain_of(&r, email_field);
                if flows.has_room(&domain) {
                    flows.leased(&domain);
                    recipients.push(r);
                } else if live.parked_len < MAX_PARKED {
                    live.parked.entry(domain).or_default().push_back(r);
                    live.parked_len += 1;
                } else {
                    live.ready.push_front(r);
                    break;
                }
            }
            let mut take = recipients.len();
            if let Some(limiter) = &live.limiter {
                let mut allowed = 0;
                while allowed < take && limiter.check().is_ok() {
                    allowed += 1;
                }
                take = allowed;
            }
            // What the rate cap does not allow goes back, in order.
            for r in recipients.drain(take..).rev() {
                flows.returned(&domain_of(&r, email_field), false);
                live.ready.push_front(r);
            }
            if take == 0 {
                continue;
            }
            live.counters.queued = live.counters.queued.saturating_sub(take as u64);
            live.counters.in_flight += take as u64;
            let bundle = live.bundle.clone();
            for r in &recipients {
                in_flight.insert(r.id, InFlight { data: r.clone() });
            }
            if let Some(n) = nodes.iter_mut().find(|n| n.name == node) {
                n.in_flight += take as u64;
            }
            *next_campaign = seq.wrapping_add(1);
            return Some(Lease { bundle, recipients });
        }
        None
    }

    /// Whether some campaign has queued work that leasing could not hand out now (rate cap or
    /// schedule), so links should poll again soon.
    pub fn has_waiting_work(&self) -> bool {
        self.lock()
            .campaigns
            .values()
            .any(|l| l.counters.queued > 0 && matches!(l.record.status, CampaignStatus::Running))
    }

    /// Records results durably, then updates counters. Returns the attempts for the
    /// accounting log. Results for recipients not in flight are ignored.
    pub fn apply_results(
        &self,
        node: &str,
        results: &[RecipientResult],
        frame_bytes: u64,
    ) -> Result<Vec<Attempt>, StoreError> {
        let now = now_ms();
        let known: Vec<(usize, u64, String)> = {
            let state = self.lock();
            results
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    let f = state.in_flight.get(&r.id)?;
                    let (seq, _) = split_id(r.id);
                    let email_field = state.campaigns.get(&seq)?.bundle.email_field as usize;
                    let email = f.data.values.get(email_field).cloned().unwrap_or_default();
                    Some((i, r.id, email))
                })
                .collect()
        };
        let ids: Vec<u64> = known.iter().map(|k| k.1).collect();
        let new_states = self.store.apply(&ids, |k, record: &mut RecipientRecord| {
            self.record_attempt(record, &results[known[k].0], now);
        })?;
        let mut attempts = Vec::with_capacity(known.len());
        let mut touched = HashSet::new();
        {
            let mut state = self.lock();
            let share = frame_bytes / results.len().max(1) as u64;
            let mut freed = 0u64;
            for ((i, id, email), new_state) in known.into_iter().zip(new_states) {
                let result = &results[i];
                let (seq, _) = split_id(id);
                state.in_flight.remove(&id);
                let domain = mailfarm_templates::address::domain_of(&email);
                state.flows.returned(&domain, true);
                freed += 1;
                let Some(live) = state.campaigns.get_mut(&seq) else {
                    continue;
                };
                touched.insert(seq);
                let c = &mut live.counters;
                c.in_flight = c.in_flight.saturating_sub(1);
                c.wire_bytes += share;
                c.rendered_bytes += u64::from(result.rendered_bytes);
                c.attempts += 1;
                let label = match new_state {
                    Some(StoredState::Delivered) => {
                        c.delivered += 1;
                        "delivered"
                    }
                    Some(StoredState::Deferred { .. }) => {
                        c.deferred += 1;
                        "deferred"
                    }
                    Some(StoredState::Failed) => {
                        c.failed += 1;
                        "failed"
                    }
                    // Not pending in the store (e.g. cancelled meanwhile): nothing to count.
                    _ => "ignored",
                };
                if result.outcome != Outcome::Delivered {
                    let reason = format!("{} {}", result.code, result.text);
                    let len = live.reasons.len();
                    if let Some(n) = live.reasons.get_mut(&reason) {
                        *n += 1;
                    } else if len < MAX_REASONS {
                        live.reasons.insert(reason, 1);
                    }
                }
                attempts.push(Attempt::of(
                    result,
                    now,
                    &live.counters.id,
                    email,
                    node,
                    label,
                ));
            }
            if let Some(n) = state.nodes.iter_mut().find(|n| n.name == node) {
                n.in_flight = n.in_flight.saturating_sub(freed);
                n.results += freed;
            }
        }
        for seq in touched {
            self.check_finished(seq)?;
        }
        Ok(attempts)
    }

    fn record_attempt(&self, record: &mut RecipientRecord, result: &RecipientResult, now: u64) {
        record.attempts = record.attempts.saturating_add(1);
        if record.first_attempt_ms == 0 {
            record.first_attempt_ms = now;
        }
        record.last_code = result.code;
        record.last_text = result.text.clone();
        record.state = match result.outcome {
            Outcome::Delivered => StoredState::Delivered,
            Outcome::Failed => StoredState::Failed,
            Outcome::Deferred => {
                match self
                    .retry
                    .next_retry(record.attempts, record.first_attempt_ms, now)
                {
                    Some(retry_at_ms) => StoredState::Deferred { retry_at_ms },
                    None => StoredState::Failed,
                }
            }
        };
    }

    /// Applies results a smurf kept from an earlier link. A recipient that is still pending
    /// (queued again, or even re-leased) takes the result, so its message is not sent again;
    /// if it was re-leased, the later result of that lease is ignored.
    pub fn apply_late_results(
        &self,
        node: &str,
        results: &[RecipientResult],
    ) -> Result<Vec<Attempt>, StoreError> {
        let now = now_ms();
        let ids: Vec<u64> = results.iter().map(|r| r.id).collect();
        let new_states = self.store.apply(&ids, |i, record: &mut RecipientRecord| {
            self.record_attempt(record, &results[i], now);
        })?;
        let mut attempts = Vec::new();
        let mut touched = HashSet::new();
        {
            let mut state = self.lock();
            for (result, new_state) in results.iter().zip(new_states) {
                let Some(new_state) = new_state else { continue };
                let (seq, _) = split_id(result.id);
                let re_leased = state.in_flight.contains_key(&result.id);
                let Some(live) = state.campaigns.get_mut(&seq) else {
                    continue;
                };
                touched.insert(seq);
                let c = &mut live.counters;
                if !re_leased {
                    // Queued again: take it out of the queue.
                    c.queued = c.queued.saturating_sub(1);
                    if let Some(pos) = live.ready.iter().position(|r| r.id == result.id) {
                        live.ready.remove(pos);
                    }
                    for queue in live.parked.values_mut() {
                        if let Some(pos) = queue.iter().position(|r| r.id == result.id) {
                            queue.remove(pos);
                            live.parked_len -= 1;
                        }
                    }
                }
                c.attempts += 1;
                let label = match new_state {
                    StoredState::Delivered => {
                        c.delivered += 1;
                        "delivered"
                    }
                    StoredState::Deferred { .. } => {
                        c.deferred += 1;
                        "deferred"
                    }
                    _ => {
                        c.failed += 1;
                        "failed"
                    }
                };
                attempts.push(Attempt::of(result, now, &c.id, String::new(), node, label));
            }
        }
        for seq in touched {
            self.check_finished(seq)?;
        }
        Ok(attempts)
    }

    /// Puts recipients that were in flight on a lost link back at the front of their queues.
    pub fn requeue(&self, node: &str, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        {
            let mut state = self.lock();
            let mut freed = 0;
            for &id in ids {
                let Some(f) = state.in_flight.remove(&id) else {
                    continue;
                };
                freed += 1;
                let (seq, _) = split_id(id);
                if let Some(live) = state.campaigns.get(&seq) {
                    let domain = domain_of(&f.data, live.bundle.email_field as usize);
                    state.flows.returned(&domain, false);
                }
                if let Some(live) = state.campaigns.get_mut(&seq) {
                    live.counters.in_flight = live.counters.in_flight.saturating_sub(1);
                    live.counters.queued += 1;
                    live.ready.push_front(f.data);
                }
            }
            if let Some(n) = state.nodes.iter_mut().find(|n| n.name == node) {
                n.in_flight = n.in_flight.saturating_sub(freed);
            }
        }
        self.signal_work();
    }

    /// Moves deferred recipients whose retry time has come back into their queues.
    pub fn release_due_retries(&self) -> Result<usize, StoreError> {
        let due = self.store.take_due_retries(now_ms(), 10_000)?;
        if due.is_empty() {
            return Ok(0);
        }
        let count = due.len();
        {
            let mut state = self.lock();
            for (id, values) in due {
                let (seq, _) = split_id(id);
                if let Some(live) = state.campaigns.get_mut(&seq) {
                    live.counters.deferred = live.counters.deferred.saturating_sub(1);
                    live.counters.queued += 1;
                    live.ready.push_back(RecipientData { id, values });
                }
            }
        }
        self.signal_work();
        Ok(count)
    }

    fn set_status(&self, id: &str, status: CampaignStatus) -> Result<CampaignRecord, String> {
        let mut state = self.lock();
        let Some(&seq) = state.by_id.get(id) else {
            return Err(format!("no campaign {id:?} on this coordinator"));
        };
        let Some(live) = state.campaigns.get_mut(&seq) else {
            return Err(format!("no campaign {id:?} on this coordinator"));
        };
        match (live.record.status, status) {
            (CampaignStatus::Finished, _) => return Err(format!("campaign {id} already finished")),
            (CampaignStatus::Cancelled, _) => return Err(format!("campaign {id} was cancelled")),
            _ => {}
        }
        live.record.status = status;
        Ok(live.record.clone())
    }

    /// Pauses a campaign: nothing new is leased; in-flight messages finish.
    pub fn pause(&self, id: &str) -> Result<(), String> {
        let record = self.set_status(id, CampaignStatus::Paused)?;
        self.store
            .update_campaign(&record)
            .map_err(|e| e.to_string())
    }

    /// Resumes a paused campaign.
    pub fn resume(&self, id: &str) -> Result<(), String> {
        let record = self.set_status(id, CampaignStatus::Running)?;
        self.store
            .update_campaign(&record)
            .map_err(|e| e.to_string())?;
        self.signal_work();
        let seq = record.seq;
        self.check_finished(seq).map_err(|e| e.to_string())
    }

    /// Cancels a campaign: unsent recipients are skipped; in-flight messages finish.
    /// Returns how many were skipped.
    pub fn cancel(&self, id: &str) -> Result<u64, String> {
        let record = self.set_status(id, CampaignStatus::Cancelled)?;
        let seq = record.seq;
        let keep: HashSet<u64> = self
            .lock()
            .in_flight
            .keys()
            .copied()
            .filter(|&i| split_id(i).0 == seq)
            .collect();
        self.store
            .update_campaign(&record)
            .map_err(|e| e.to_string())?;
        let skipped = self
            .store
            .skip_unsent(seq, &keep)
            .map_err(|e| e.to_string())?;
        let mut state = self.lock();
        if let Some(live) = state.campaigns.get_mut(&seq) {
            live.ready.clear();
            live.parked.clear();
            live.parked_len = 0;
            live.scan_exhausted = true;
            live.counters.skipped += skipped;
            live.counters.queued = 0;
            live.counters.deferred = 0;
        }
        Ok(skipped)
    }

    /// Counters of one campaign.
    pub fn counters(&self, id: &str) -> Option<CampaignCounters> {
        let state = self.lock();
        let seq = state.by_id.get(id)?;
        state.campaigns.get(seq).map(|l| l.snapshot(now_ms()))
    }

    /// Whether a campaign that can still send uses the template `hash` (false once it finished,
    /// or was cancelled and has nothing in flight, and for hashes no campaign has): smurfs are
    /// told to forget the others.
    pub fn template_live(&self, hash: &mailfarm_protocol::ContentHash) -> bool {
        self.lock().campaigns.values().any(|l| {
            l.bundle.hash == *hash
                && match l.record.status {
                    CampaignStatus::Finished => false,
                    CampaignStatus::Cancelled => l.counters.in_flight > 0,
                    CampaignStatus::Running | CampaignStatus::Paused => true,
                }
        })
    }

    /// Counters of every campaign, in launch order.
    pub fn all_counters(&self) -> Vec<CampaignCounters> {
        let now = now_ms();
        self.lock()
            .campaigns
            .values()
            .map(|l| l.snapshot(now))
            .collect()
    }

    /// Counts the bytes of a batch frame against its campaign.
    pub fn record_batch_bytes(&self, campaign_id: &str, bytes: u64) {
        let mut state = self.lock();
        if let Some(seq) = state.by_id.get(campaign_id).copied() {
            if let Some(live) = state.campaigns.get_mut(&seq) {
                live.counters.wire_bytes += bytes;
            }
        }
    }

    /// Counts one shipment of a campaign's template.
    pub fn record_template_shipment(&self, campaign_id: &str, bytes: u64) {
        let mut state = self.lock();
        if let Some(seq) = state.by_id.get(campaign_id).copied() {
            if let Some(live) = state.campaigns.get_mut(&seq) {
                live.counters.template_shipments += 1;
                live.counters.template_bytes += bytes;
            }
        }
    }

    /// The most frequent non-delivery reasons of a campaign, most frequent first.
    pub fn top_reasons(&self, id: &str, limit: usize) -> Vec<(String, u64)> {
        let state = self.lock();
        let Some(live) = state.by_id.get(id).and_then(|s| state.campaigns.get(s)) else {
            return Vec::new();
        };
        let mut reasons: Vec<(String, u64)> =
            live.reasons.iter().map(|(r, n)| (r.clone(), *n)).collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        reasons.truncate(limit);
        reasons
    }

    /// Puts leasing on hold farm-wide until the guard is dropped.
    pub fn hold_leasing(&self) -> LeaseHold<'_> {
        self.lock().holds += 1;
        LeaseHold { farm: self }
    }

    /// Ends the post-restart pause in leasing at once (tests and tools).
    pub fn end_recovery_grace(&self) {
        self.lock().lease_not_before = 0;
    }
}

/// Balances by what smurfs report: a node whose delivery queue is more than twice the
/// average of the others', or whose CPU is saturated, gets smaller leases, so work flows to the
/// nodes that keep up (the credit window alone only bounds what a node holds).
fn load_adjusted(nodes: &[Node], node: &str, max: usize) -> usize {
    let Some(me) = nodes.iter().find(|n| n.name == node) else {
        return max;
    };
    let others: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.name != node && !n.draining)
        .collect();
    let mut max = max;
    if me.load.cpu_percent >= 95 {
        max = max.div_ceil(2);
    }
    if !others.is_empty() {
        let average =
            others.iter().map(|n| u64::from(n.load.queued)).sum::<u64>() / others.len() as u64;
        if u64::from(me.load.queued) > 2 * average.max(16) {
            max = max.div_ceil(4);
        }
    }
    max.max(1)
}

/// How long a restarted coordinator waits before leasing, so reconnecting smurfs can report
/// the results they kept (see [`Farm::apply_late_results`]).
const RECOVERY_GRACE_MS: u64 = 3000;

/// Recipients parked per campaign over their domains' caps; beyond it leasing waits.
const MAX_PARKED: usize = 50_000;

/// Distinct failure reasons kept per campaign, so a hostile server cannot grow the map.
const MAX_REASONS: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use mailfarm_protocol::{ContentHash, DeliveryTarget};

    fn record(id: &str) -> CampaignRecord {
        CampaignRecord {
            seq: 0,
            bundle: TemplateBundle {
                hash: ContentHash([1; 32]),
                campaign_id: id.into(),
                subject: String::new(),
                text: String::new(),
                html: None,
                from: "a@b.example".into(),
                reply_to: None,
                list_id: "l".into(),
                bounce_domain: "b.example".into(),
                list_unsubscribe: None,
                field_names: vec!["email".into()],
                email_field: 0,
                verp_key: vec![],
                delivery: DeliveryTarget {
                    relay: Some("127.0.0.1:25".into()),
                    connections: 1,
                },
            },
            status: CampaignStatus::Running,
            created_ms: now_ms(),
            start_at_ms: None,
            rate_cap: None,
            ingest_complete: false,
            total: 0,
            rejected_rows: 0,
            suppressed: 0,
            finished_ms: None,
        }
    }

    fn farm_with(id: &str, rows: u32, retry: RetryPolicy) -> Farm {
        let farm = Farm::open(Store::open(None, false).unwrap(), retry).unwrap();
        let record = farm.create_campaign(record(id)).unwrap();
        let batch: Vec<(u32, String, Vec<String>)> = (0..rows)
            .map(|i| {
                (
                    i,
                    format!("u{i}@x.example"),
                    vec![format!("u{i}@x.example")],
                )
            })
            .collect();
        farm.store().ingest_rows(record.seq, &batch).unwrap();
        farm.rows_added(record.seq, u64::from(rows), 0, 0);
        farm.ingest_done(record.seq).unwrap();
        farm.smurf_joined("s1", 100);
        farm
    }

    fn result(id: u64, outcome: Outcome, code: u16) -> RecipientResult {
        RecipientResult {
            id,
            outcome,
            code,
            enhanced: None,
            text: "x".into(),
            rendered_bytes: 10,
            remote: String::new(),
            duration_ms: 1,
        }
    }

    #[test]
    fn lease_results_requeue_and_retry_keep_counts_consistent() {
        let retry = RetryPolicy {
            schedule: vec![Duration::from_millis(1)],
            max_age: Duration::from_secs(60),
        };
        let farm = farm_with("c", 5, retry);
        let lease = farm.lease("s1", 3).unwrap();
        let ids: Vec<u64> = lease.recipients.iter().map(|r| r.id).collect();
        farm.apply_results("s1", &[result(ids[0], Outcome::Delivered, 250)], 30)
            .unwrap();
        // A late duplicate result for the same id is ignored.
        farm.apply_results("s1", &[result(ids[0], Outcome::Failed, 550)], 30)
            .unwrap();
        farm.apply_results("s1", &[result(ids[1], Outcome::Deferred, 451)], 30)
            .unwrap();
        farm.requeue("s1", &ids);
        let c = farm.counters("c").unwrap();
        assert_eq!(
            (c.queued, c.in_flight, c.delivered, c.deferred, c.failed),
            (3, 0, 1, 1, 0)
        );
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(farm.release_due_retries().unwrap(), 1);
        let rest = farm.lease("s1", 10).unwrap();
        assert_eq!(rest.recipients.len(), 4);
        let results: Vec<_> = rest
            .recipients
            .iter()
            .map(|r| result(r.id, Outcome::Delivered, 250))
            .collect();
        farm.apply_results("s1", &results, 40).unwrap();
        let c = farm.counters("c").unwrap();
        assert!(c.finished, "{c:?}");
        assert_eq!((c.delivered, c.deferred, c.attempts), (5, 0, 6));
        assert!(farm.lease("s1", 10).is_none());
    }

    #[test]
    fn state_survives_reopening_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let farm = Farm::open(
                Store::open(Some(&path), true).unwrap(),
                RetryPolicy::default(),
            )
            .unwrap();
            let record = farm.create_campaign(record("persist")).unwrap();
            let batch: Vec<(u32, String, Vec<String>)> = (0..4)
                .map(|i| {
                    (
                        i,
                        format!("u{i}@x.example"),
                        vec![format!("u{i}@x.example")],
                    )
                })
                .collect();
            farm.store().ingest_rows(record.seq, &batch).unwrap();
            farm.rows_added(record.seq, 4, 0, 0);
            farm.ingest_done(record.seq).unwrap();
            farm.smurf_joined("s1", 10);
            let lease = farm.lease("s1", 4).unwrap();
            farm.apply_results(
                "s1",
                &[result(lease.recipients[0].id, Outcome::Delivered, 250)],
                10,
            )
            .unwrap();
            // The other three are in flight when the process "dies".
        }
        let farm = Farm::open(
            Store::open(Some(&path), true).unwrap(),
            RetryPolicy::default(),
        )
        .unwrap();
        let c = farm.counters("persist").unwrap();
        assert_eq!((c.delivered, c.queued, c.in_flight), (1, 3, 0), "{c:?}");
        farm.smurf_joined("s1", 10);
        assert!(
            farm.lease("s1", 10).is_none(),
            "recovery grace after a restart"
        );
        farm.end_recovery_grace();
        assert_eq!(farm.lease("s1", 10).unwrap().recipients.len(), 3);
    }

    #[test]
    fn cancel_skips_unsent_but_lets_in_flight_finish() {
        let farm = farm_with("c", 10, RetryPolicy::default());
        let lease = farm.lease("s1", 2).unwrap();
        assert_eq!(farm.cancel("c").unwrap(), 8);
        assert!(!farm.counters("c").unwrap().finished, "two still in flight");
        let results: Vec<_> = lease
            .recipients
            .iter()
            .map(|r| result(r.id, Outcome::Delivered, 250))
            .collect();
        farm.apply_results("s1", &results, 10).unwrap();
        let c = farm.counters("c").unwrap();
        assert!(c.finished);
        assert_eq!((c.delivered, c.skipped, c.queued), (2, 8, 0));
        assert!(farm.resume("c").is_err());
    }

    #[test]
    fn an_overloaded_node_gets_smaller_leases() {
        let node = |name: &str, queued: u32, cpu: u16| Node {
            name: name.into(),
            window: 100,
            in_flight: 0,
            draining: false,
            load: SmurfLoad {
                queued,
                cpu_percent: cpu,
                ..SmurfLoad::default()
            },
            results: 0,
        };
        let nodes = vec![node("a", 400, 50), node("b", 20, 50), node("c", 10, 99)];
        assert_eq!(load_adjusted(&nodes, "a", 128), 32);
        assert_eq!(load_adjusted(&nodes, "b", 128), 128);
        assert_eq!(load_adjusted(&nodes, "c", 128), 64);
    }
}
