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
    CampaignCounters, CampaignState, InboundCounters, Outcome, Rate, RecipientData,
    RecipientResult, TemplateBundle,
};
use tokio::sync::watch;
use tracing::warn;

mod bounces;
mod leasing;
mod results;
mod retries;

pub use bounces::{BounceLine, UnsubscribeLine, BOUNCE_WINDOW};
pub use leasing::{Lease, LeaseHold};
pub use results::{Attempt, ResultsFrame};
pub use retries::RetryPolicy;

use crate::flow::{domain_of, DomainFlows};
use crate::nodes::{load_adjusted, Node};
use crate::store::{
    split_id, CampaignRecord, CampaignStatus, RecipientRecord, RowVerdict, Store, StoreError,
    StoredState,
};

/// Why a farm operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FarmError {
    /// The durable store failed: nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No node of that name has ever joined this coordinator.
    #[error("no smurf {0:?} is known to this coordinator (it must join once first)")]
    UnknownNode(String),
    /// The node is the last sending `out` node and a campaign is sending.
    #[error(
        "{node} is the last `out` node and campaign {campaign} is sending: assigning it away \
         would stop the campaign; add another `out` node first, or use --force"
    )]
    LastSender {
        /// The node.
        node: String,
        /// A campaign that is sending.
        campaign: String,
    },
    /// A campaign of that id is already on this coordinator.
    #[error("{0} already exists on this coordinator")]
    CampaignExists(String),
    /// No campaign of that id is on this coordinator.
    #[error("no campaign {0:?} on this coordinator")]
    NoCampaign(String),
    /// The campaign finished: its status no longer changes.
    #[error("campaign {0} already finished")]
    CampaignFinished(String),
    /// The campaign was cancelled: its status no longer changes.
    #[error("campaign {0} was cancelled")]
    CampaignCancelled(String),
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) struct Live {
    record: CampaignRecord,
    pub(crate) bundle: Arc<TemplateBundle>,
    pub(crate) counters: CampaignCounters,
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

    pub(crate) fn state(&self, now: u64) -> CampaignState {
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

/// The one in-flight ledger: every leased recipient without a result, with the node holding
/// it. Per-node and per-campaign figures are counted from it or kept in step with it here.
pub(crate) struct InFlight {
    data: RecipientData,
    /// The node it was leased to.
    pub(crate) node: Arc<str>,
}

#[derive(Default)]
pub(crate) struct FarmState {
    /// No leasing before this time (ms): after a restart, reconnecting smurfs first report the
    /// results they kept, so those messages are not sent again.
    pub(crate) lease_not_before: u64,
    /// Reconnecting smurfs still reporting results they kept: no leasing meanwhile.
    pub(crate) holds: usize,
    pub(crate) nodes: Vec<Node>,
    pub(crate) campaigns: BTreeMap<u32, Live>,
    pub(crate) by_id: HashMap<String, u32>,
    pub(crate) next_campaign: u32,
    pub(crate) in_flight: HashMap<u64, InFlight>,
    pub(crate) flows: DomainFlows,
    pub(crate) draining: bool,
    /// Inbound counters summed over the `in` nodes' reports.
    pub(crate) inbound: InboundCounters,
    /// Returned messages leased to `bounce` nodes.
    pub(crate) bounces: bounces::BounceLeases,
    /// Every suppressed address (lower case): checked when leasing, so an address suppressed
    /// while its campaign runs is skipped.
    pub(crate) suppressed: HashSet<String>,
    /// Recipients skipped at lease time, to be marked in the store.
    pub(crate) pending_skips: Vec<u64>,
}

/// Shared handle on the coordinator's state.
pub struct Farm {
    store: Store,
    state: Mutex<FarmState>,
    work: watch::Sender<u64>,
    shaping: watch::Sender<u64>,
    /// Bumped when an assignment or the inbound policy changes.
    nodes_changed: watch::Sender<u64>,
    shaping_toml: Mutex<Arc<str>>,
    retry: RetryPolicy,
    ready_buffer: usize,
    /// Farm-wide learnt rates of throttling sites.
    throttle: crate::throttle::ThrottleBook,
}

impl Farm {
    /// Loads the farm state from `store`.
    pub fn open(store: Store, retry: RetryPolicy) -> Result<Self, FarmError> {
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
            c.attempts = counts.attempts;
            // The byte and shipment counters are this process's: they count from now.
            c.traffic_since_ms = now_ms();
            state.by_id.insert(c.id.clone(), seq);
            state.campaigns.insert(seq, live);
        }
        if state.campaigns.values().any(|l| l.counters.queued > 0) {
            state.lease_not_before = now_ms() + RECOVERY_GRACE_MS;
        }
        let farm = Self {
            store,
            state: Mutex::new(state),
            work: watch::Sender::new(0),
            shaping: watch::Sender::new(0),
            nodes_changed: watch::Sender::new(0),
            shaping_toml: Mutex::new(Arc::from("")),
            retry,
            ready_buffer: 2048,
            throttle: crate::throttle::ThrottleBook::default(),
        };
        farm.load_nodes()?;
        let suppressed = farm.store.suppressed_addresses()?;
        farm.lock().suppressed = suppressed.into_iter().collect();
        Ok(farm)
    }

    /// Farm-wide learnt rates of throttling sites.
    pub fn throttle(&self) -> &crate::throttle::ThrottleBook {
        &self.throttle
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, FarmState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The durable store (the farm's own modules and tests only: callers go through the farm,
    /// which keeps the counters in step).
    pub(crate) fn store(&self) -> &Store {
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

    /// Sets the shaping file text sent to smurfs.
    pub fn set_shaping(&self, toml: &str) {
        *self.shaping_toml.lock().unwrap_or_else(|e| e.into_inner()) = Arc::from(toml);
        self.reshape();
    }

    pub(crate) fn reshape(&self) {
        self.shaping.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The shaping file text.
    pub(crate) fn shaping_text(&self) -> String {
        self.shaping_toml
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .to_string()
    }

    /// A receiver that changes whenever an assignment or the inbound policy changes.
    pub fn nodes_signal(&self) -> watch::Receiver<u64> {
        self.nodes_changed.subscribe()
    }

    /// Wakes the links so they resend assignments and the inbound policy if changed.
    pub(crate) fn signal_nodes(&self) {
        self.nodes_changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A receiver that changes whenever the shaping rules or the farm's membership change.
    pub fn shaping_signal(&self) -> watch::Receiver<u64> {
        self.shaping.subscribe()
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
    pub fn create_campaign(&self, record: CampaignRecord) -> Result<CampaignRecord, FarmError> {
        let mut state = self.lock();
        let id = record.bundle.campaign_id.clone();
        if state.by_id.contains_key(&id) {
            return Err(FarmError::CampaignExists(id));
        }
        let record = self.store.create_campaign(record)?;
        let seq = record.seq;
        state.by_id.insert(id, seq);
        state.campaigns.insert(seq, Live::new(record.clone()));
        drop(state);
        // A new bounce domain or Reply-To changes what `in` nodes accept.
        self.signal_nodes();
        Ok(record)
    }

    /// Stores a batch of ingested rows and counts them; returns each row's verdict
    /// (duplicates count as rejected rows, suppressed addresses as suppressed).
    pub fn ingest_rows(
        &self,
        seq: u32,
        batch: &[(u32, String, Vec<String>)],
    ) -> Result<Vec<RowVerdict>, StoreError> {
        let verdicts = self.store.ingest_rows(seq, batch)?;
        let count = |v: RowVerdict| verdicts.iter().filter(|&&x| x == v).count() as u64;
        self.rows_added(
            seq,
            count(RowVerdict::Accepted),
            count(RowVerdict::Duplicate),
            count(RowVerdict::Suppressed),
        );
        Ok(verdicts)
    }

    /// Counts rows set aside before they reached the store (unreadable, bad address).
    pub fn rows_rejected(&self, seq: u32, rejected: u64) {
        self.rows_added(seq, 0, rejected, 0);
    }

    /// Adds an address to the suppression list: it is skipped in every later campaign, and
    /// in running ones from now on.
    pub fn suppress(&self, address: &str, reason: &str) -> Result<(), StoreError> {
        self.store.suppress(address, reason)?;
        self.note_suppressed([address.trim().to_ascii_lowercase()]);
        Ok(())
    }

    /// Records addresses just suppressed in the store, for leasing.
    pub(crate) fn note_suppressed(&self, addresses: impl IntoIterator<Item = String>) {
        let mut state = self.lock();
        for address in addresses {
            state.suppressed.insert(address.trim().to_ascii_lowercase());
        }
    }

    /// Marks the recipients skipped at lease time in the store (the retry ticker calls it).
    pub fn flush_skips(&self) -> Result<u64, StoreError> {
        let ids = std::mem::take(&mut self.lock().pending_skips);
        if ids.is_empty() {
            return Ok(0);
        }
        let skipped = self.store.skip_recipients(&ids)?;
        let seqs: HashSet<u32> = ids.iter().map(|&id| split_id(id).0).collect();
        for seq in seqs {
            self.check_finished(seq)?;
        }
        Ok(skipped)
    }

    /// Counts rows just committed by ingest, and wakes the links.
    fn rows_added(&self, seq: u32, accepted: u64, rejected: u64, suppressed: u64) {
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
        self.store.drop_dedupe(seq)?;
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

    fn set_status(&self, id: &str, status: CampaignStatus) -> Result<CampaignRecord, FarmError> {
        let mut state = self.lock();
        let live = state
            .by_id
            .get(id)
            .copied()
            .and_then(|seq| state.campaigns.get_mut(&seq))
            .ok_or_else(|| FarmError::NoCampaign(id.to_owned()))?;
        match live.record.status {
            CampaignStatus::Finished => return Err(FarmError::CampaignFinished(id.to_owned())),
            CampaignStatus::Cancelled => return Err(FarmError::CampaignCancelled(id.to_owned())),
            _ => {}
        }
        live.record.status = status;
        Ok(live.record.clone())
    }

    /// Pauses a campaign: nothing new is leased; in-flight messages finish.
    pub fn pause(&self, id: &str) -> Result<(), FarmError> {
        let record = self.set_status(id, CampaignStatus::Paused)?;
        Ok(self.store.update_campaign(&record)?)
    }

    /// Resumes a paused campaign.
    pub fn resume(&self, id: &str) -> Result<(), FarmError> {
        let record = self.set_status(id, CampaignStatus::Running)?;
        self.store.update_campaign(&record)?;
        self.signal_work();
        Ok(self.check_finished(record.seq)?)
    }

    /// Cancels a campaign: unsent recipients are skipped; in-flight messages finish.
    /// Returns how many were skipped.
    pub fn cancel(&self, id: &str) -> Result<u64, FarmError> {
        let record = self.set_status(id, CampaignStatus::Cancelled)?;
        let seq = record.seq;
        let keep: HashSet<u64> = self
            .lock()
            .in_flight
            .keys()
            .copied()
            .filter(|&i| split_id(i).0 == seq)
            .collect();
        self.store.update_campaign(&record)?;
        let skipped = self.store.skip_unsent(seq, &keep)?;
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
        let snapshot = {
            let state = self.lock();
            let seq = state.by_id.get(id)?;
            state.campaigns.get(seq).map(|l| l.snapshot(now_ms()))?
        };
        Some(self.with_bounces(snapshot))
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
        let all: Vec<CampaignCounters> = self
            .lock()
            .campaigns
            .values()
            .map(|l| l.snapshot(now))
            .collect();
        all.into_iter().map(|c| self.with_bounces(c)).collect()
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
}

/// How long a restarted coordinator waits before leasing, so reconnecting smurfs can report
/// the results they kept (see [`Farm::apply_late_results`]).
const RECOVERY_GRACE_MS: u64 = 3000;

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
                unsubscribe_base_url: None,
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

    pub(super) fn farm_with(id: &str, rows: u32, retry: RetryPolicy) -> Farm {
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
        join_active(&farm, "s1", 100);
        farm
    }

    /// A smurf that joined as `out` and reported itself active.
    fn join_active(farm: &Farm, node: &str, window: u32) {
        farm.smurf_joined(node, window, None, "test").unwrap();
        farm.report_status(
            node,
            mailfarm_protocol::NodeStatus {
                state: mailfarm_protocol::NodeState::Active,
                ..Default::default()
            },
        );
    }

    pub(super) fn result(id: u64, outcome: Outcome, code: u16) -> RecipientResult {
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
            join_active(&farm, "s1", 10);
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
        join_active(&farm, "s1", 10);
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
}
