//! The coordinator's live state: campaigns, every recipient's state, and the work queue that
//! smurf links lease from.
//!
//! This is the in-memory store. Recipient ids carry their campaign (`campaign_seq << 32 | row`),
//! so a result is routed without a lookup table. Links wait on a watch channel that is bumped
//! whenever work appears (a launch, recipients handed back by a lost smurf).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use mailfarm_protocol::{
    CampaignCounters, Outcome, RecipientData, RecipientResult, TemplateBundle,
};
use tokio::sync::watch;

/// State of one recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecipientState {
    /// Waiting to be leased.
    Queued,
    /// Leased to a smurf.
    InFlight,
    /// Accepted by the receiving server.
    Delivered,
    /// Temporarily refused on its last attempt.
    Deferred,
    /// Permanently failed.
    Failed,
}

struct Campaign {
    bundle: Arc<TemplateBundle>,
    rows: Vec<Vec<String>>,
    states: Vec<RecipientState>,
    queue: VecDeque<u32>,
    counters: CampaignCounters,
    started: Instant,
    finished_at: Option<Instant>,
    reasons: HashMap<String, u64>,
}

impl Campaign {
    fn update_finished(&mut self) {
        let c = &mut self.counters;
        if c.queued == 0 && c.in_flight == 0 && self.finished_at.is_none() {
            self.finished_at = Some(Instant::now());
            c.finished = true;
        }
    }

    fn snapshot(&self) -> CampaignCounters {
        let mut c = self.counters.clone();
        let end = self.finished_at.unwrap_or_else(Instant::now);
        c.elapsed_ms = end.duration_since(self.started).as_millis() as u64;
        c
    }
}

/// Distinct failure reasons kept per campaign, so a hostile server cannot grow the map.
const MAX_REASONS: usize = 64;

#[derive(Default)]
struct FarmState {
    smurfs: Vec<String>,
    campaigns: Vec<Campaign>,
    by_id: HashMap<String, usize>,
    next_campaign: usize,
}

/// Shared handle on the coordinator's state.
pub struct Farm {
    state: Mutex<FarmState>,
    work: watch::Sender<u64>,
}

/// A lease: recipients to send with a template.
pub struct Lease {
    /// Template bundle of the campaign.
    pub bundle: Arc<TemplateBundle>,
    /// The recipients.
    pub recipients: Vec<RecipientData>,
}

fn split_id(id: u64) -> (usize, usize) {
    ((id >> 32) as usize, (id & 0xffff_ffff) as usize)
}

impl Default for Farm {
    fn default() -> Self {
        Self::new()
    }
}

impl Farm {
    /// An empty farm.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(FarmState::default()),
            work: watch::Sender::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FarmState> {
        // A panic while holding the lock leaves consistent-enough counters; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that changes whenever new work is queued.
    pub fn work_signal(&self) -> watch::Receiver<u64> {
        self.work.subscribe()
    }

    fn signal_work(&self) {
        self.work.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Records that a smurf joined.
    pub fn smurf_joined(&self, node: &str) {
        self.lock().smurfs.push(node.to_owned());
    }

    /// Records that a smurf left.
    pub fn smurf_left(&self, node: &str) {
        let mut state = self.lock();
        if let Some(i) = state.smurfs.iter().position(|n| n == node) {
            state.smurfs.swap_remove(i);
        }
    }

    /// Names of the smurfs connected now (a node connected twice appears twice).
    pub fn smurfs(&self) -> Vec<String> {
        let mut smurfs = self.lock().smurfs.clone();
        smurfs.sort();
        smurfs
    }

    /// Whether a campaign id is taken.
    pub fn contains(&self, id: &str) -> bool {
        self.lock().by_id.contains_key(id)
    }

    /// Adds a campaign with its accepted rows; returns its counters. `rejected` counts rows set
    /// aside at ingest.
    pub fn add_campaign(
        &self,
        bundle: TemplateBundle,
        rows: Vec<Vec<String>>,
        rejected: u64,
    ) -> Result<CampaignCounters, String> {
        let mut state = self.lock();
        if state.by_id.contains_key(&bundle.campaign_id) {
            return Err(format!("campaign {} already exists", bundle.campaign_id));
        }
        if rows.len() > u32::MAX as usize {
            return Err("more than 4 billion recipients in one campaign".into());
        }
        let seq = state.campaigns.len();
        let total = rows.len() as u64;
        let mut campaign = Campaign {
            counters: CampaignCounters {
                id: bundle.campaign_id.clone(),
                total,
                queued: total,
                rejected_rows: rejected,
                ..Default::default()
            },
            bundle: Arc::new(bundle),
            states: vec![RecipientState::Queued; rows.len()],
            queue: (0..rows.len() as u32).collect(),
            rows,
            started: Instant::now(),
            finished_at: None,
            reasons: HashMap::new(),
        };
        campaign.update_finished();
        let counters = campaign.snapshot();
        state.by_id.insert(campaign.counters.id.clone(), seq);
        state.campaigns.push(campaign);
        drop(state);
        self.signal_work();
        Ok(counters)
    }

    /// Leases up to `max` queued recipients of one campaign, taking campaigns in turn.
    pub fn lease(&self, max: usize) -> Option<Lease> {
        if max == 0 {
            return None;
        }
        let mut state = self.lock();
        let count = state.campaigns.len();
        for step in 0..count {
            let seq = (state.next_campaign + step) % count;
            let campaign = &mut state.campaigns[seq];
            if campaign.queue.is_empty() {
                continue;
            }
            let take = max.min(campaign.queue.len());
            let mut recipients = Vec::with_capacity(take);
            for row in campaign.queue.drain(..take) {
                campaign.states[row as usize] = RecipientState::InFlight;
                recipients.push(RecipientData {
                    id: ((seq as u64) << 32) | u64::from(row),
                    values: campaign.rows[row as usize].clone(),
                });
            }
            campaign.counters.queued -= take as u64;
            campaign.counters.in_flight += take as u64;
            let bundle = campaign.bundle.clone();
            state.next_campaign = (seq + 1) % count;
            return Some(Lease { bundle, recipients });
        }
        None
    }

    /// Records the results of delivery attempts and the bytes their frame took on the wire.
    pub fn apply_results(&self, results: &[RecipientResult], frame_bytes: u64) {
        let mut state = self.lock();
        let share = frame_bytes / results.len().max(1) as u64;
        for result in results {
            let (seq, row) = split_id(result.id);
            let Some(campaign) = state.campaigns.get_mut(seq) else {
                continue;
            };
            let Some(slot) = campaign.states.get_mut(row) else {
                continue;
            };
            if *slot != RecipientState::InFlight {
                continue;
            }
            let c = &mut campaign.counters;
            c.in_flight -= 1;
            c.wire_bytes += share;
            c.rendered_bytes += u64::from(result.rendered_bytes);
            *slot = match result.outcome {
                Outcome::Delivered => {
                    c.delivered += 1;
                    RecipientState::Delivered
                }
                Outcome::Deferred => {
                    c.deferred += 1;
                    RecipientState::Deferred
                }
                Outcome::Failed => {
                    c.failed += 1;
                    RecipientState::Failed
                }
            };
            if result.outcome != Outcome::Delivered {
                let reason = format!("{} {}", result.code, result.text);
                let len = campaign.reasons.len();
                if let Some(n) = campaign.reasons.get_mut(&reason) {
                    *n += 1;
                } else if len < MAX_REASONS {
                    campaign.reasons.insert(reason, 1);
                }
            }
            campaign.update_finished();
        }
    }

    /// Counts the bytes of a batch frame against its campaign.
    pub fn record_batch_bytes(&self, campaign_id: &str, bytes: u64) {
        let mut state = self.lock();
        if let Some(&seq) = state.by_id.get(campaign_id) {
            state.campaigns[seq].counters.wire_bytes += bytes;
        }
    }

    /// Counts one shipment of a campaign's template.
    pub fn record_template_shipment(&self, campaign_id: &str, bytes: u64) {
        let mut state = self.lock();
        if let Some(&seq) = state.by_id.get(campaign_id) {
            let c = &mut state.campaigns[seq].counters;
            c.template_shipments += 1;
            c.template_bytes += bytes;
        }
    }

    /// Puts recipients that were in flight on a lost link back in their queues.
    pub fn requeue(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let mut state = self.lock();
        for &id in ids {
            let (seq, row) = split_id(id);
            let Some(campaign) = state.campaigns.get_mut(seq) else {
                continue;
            };
            if campaign.states.get(row) == Some(&RecipientState::InFlight) {
                campaign.states[row] = RecipientState::Queued;
                campaign.queue.push_front(row as u32);
                campaign.counters.in_flight -= 1;
                campaign.counters.queued += 1;
            }
        }
        drop(state);
        self.signal_work();
    }

    /// Counters of one campaign.
    pub fn counters(&self, id: &str) -> Option<CampaignCounters> {
        let state = self.lock();
        state
            .by_id
            .get(id)
            .map(|&seq| state.campaigns[seq].snapshot())
    }

    /// Counters of every campaign, in launch order.
    pub fn all_counters(&self) -> Vec<CampaignCounters> {
        self.lock()
            .campaigns
            .iter()
            .map(Campaign::snapshot)
            .collect()
    }

    /// The most frequent non-delivery reasons of a campaign, most frequent first.
    pub fn top_reasons(&self, id: &str, limit: usize) -> Vec<(String, u64)> {
        let state = self.lock();
        let Some(&seq) = state.by_id.get(id) else {
            return Vec::new();
        };
        let mut reasons: Vec<(String, u64)> = state.campaigns[seq]
            .reasons
            .iter()
            .map(|(r, n)| (r.clone(), *n))
            .collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        reasons.truncate(limit);
        reasons
    }

    /// State of one recipient, by campaign and row (for tests and tooling).
    pub fn recipient_state(&self, id: &str, row: usize) -> Option<RecipientState> {
        let state = self.lock();
        let &seq = state.by_id.get(id)?;
        state.campaigns[seq].states.get(row).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailfarm_protocol::{ContentHash, DeliveryTarget};

    fn bundle(id: &str) -> TemplateBundle {
        TemplateBundle {
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
                relay: "127.0.0.1:25".into(),
                connections: 1,
            },
        }
    }

    fn result(id: u64, outcome: Outcome) -> RecipientResult {
        RecipientResult {
            id,
            outcome,
            code: 250,
            enhanced: None,
            text: "x".into(),
            rendered_bytes: 10,
        }
    }

    #[test]
    fn lease_results_and_requeue_keep_counts_consistent() {
        let farm = Farm::new();
        let rows = (0..5).map(|i| vec![format!("u{i}@x.example")]).collect();
        farm.add_campaign(bundle("c"), rows, 1).unwrap();
        let lease = farm.lease(3).unwrap();
        assert_eq!(lease.recipients.len(), 3);
        let ids: Vec<u64> = lease.recipients.iter().map(|r| r.id).collect();
        farm.apply_results(&[result(ids[0], Outcome::Delivered)], 30);
        farm.apply_results(&[result(ids[0], Outcome::Failed)], 30);
        farm.requeue(&ids);
        let c = farm.counters("c").unwrap();
        assert_eq!((c.queued, c.in_flight, c.delivered, c.failed), (4, 0, 1, 0));
        let rest = farm.lease(10).unwrap();
        assert_eq!(rest.recipients.len(), 4);
        let results: Vec<_> = rest
            .recipients
            .iter()
            .map(|r| result(r.id, Outcome::Deferred))
            .collect();
        farm.apply_results(&results, 40);
        let c = farm.counters("c").unwrap();
        assert!(c.finished);
        assert_eq!((c.delivered, c.deferred, c.rejected_rows), (1, 4, 1));
        assert!(farm.lease(10).is_none());
    }

    #[test]
    fn campaigns_are_served_in_turn() {
        let farm = Farm::new();
        farm.add_campaign(bundle("a"), vec![vec!["1@x.example".into()]; 4], 0)
            .unwrap();
        farm.add_campaign(bundle("b"), vec![vec!["1@x.example".into()]; 4], 0)
            .unwrap();
        let first = farm.lease(2).unwrap().bundle.campaign_id.clone();
        let second = farm.lease(2).unwrap().bundle.campaign_id.clone();
        assert_ne!(first, second);
    }
}
