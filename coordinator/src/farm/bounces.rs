//! The bounce queue on the farm: returned mail from `in` nodes is stored durably, leased to
//! `bounce` nodes a window at a time, and each verdict is applied once: hard bounces and
//! complaints suppress the address farm-wide, and every campaign counts its bounces.

use mailfarm_protocol::{BounceJob, BounceVerdict, NodeRole, ReturnKind, ReturnedMail};

use super::*;
use crate::store::VerdictEffects;

/// Returned messages a `bounce` node may hold at once.
pub const BOUNCE_WINDOW: usize = 64;

/// Which queued returned messages are leased, to whom.
#[derive(Default)]
pub(crate) struct BounceLeases {
    /// Sequence -> node holding it.
    leased: HashMap<u64, String>,
}

/// One applied bounce, for the accounting log.
#[derive(Debug, serde::Serialize)]
pub struct BounceLine {
    /// Time, ms since the epoch.
    pub time_ms: u64,
    /// Always `bounce`, to tell these lines from delivery attempts.
    pub event: &'static str,
    /// What the message was.
    pub kind: &'static str,
    /// Campaign the VERP token named.
    pub campaign: Option<String>,
    /// Recipient id the VERP token named.
    pub recipient_id: Option<u64>,
    /// The address reported.
    pub recipient: String,
    /// Why.
    pub reason: String,
    /// Hard (suppressed) or soft.
    pub hard: bool,
    /// Enhanced status code.
    pub status: Option<String>,
    /// The bounce node that analysed it.
    pub smurf: String,
}

impl Farm {
    /// Stores returned mail from an `in` node durably; returns the names it can delete.
    pub fn enqueue_returned(&self, mails: &[ReturnedMail]) -> Result<Vec<String>, FarmError> {
        if mails.is_empty() {
            return Ok(Vec::new());
        }
        self.store.enqueue_returned(mails)?;
        self.signal_work();
        Ok(mails.iter().map(|m| m.name.clone()).collect())
    }

    /// Returned messages waiting for analysis (leased or not).
    pub fn bounce_depth(&self) -> u64 {
        self.store.returned_depth().unwrap_or(0)
    }

    /// Leases up to `max` queued returned messages to `node`, if it is an active `bounce` node.
    pub fn lease_bounces(&self, node: &str, max: usize) -> Result<Vec<BounceJob>, FarmError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut state = self.lock();
        let active = state.nodes.iter().any(|n| {
            n.name == node
                && n.links > 0
                && n.role == NodeRole::Bounce
                && n.state == mailfarm_protocol::NodeState::Active
        });
        if !active || state.draining {
            return Ok(Vec::new());
        }
        let taken = state.bounces.leased.len();
        let candidates = self.store.returned_from(0, taken + max)?;
        let mut jobs = Vec::new();
        for (seq, mail) in candidates {
            if jobs.len() >= max {
                break;
            }
            if state.bounces.leased.contains_key(&seq) {
                continue;
            }
            state.bounces.leased.insert(seq, node.to_owned());
            jobs.push(BounceJob { seq, raw: mail.raw });
        }
        Ok(jobs)
    }

    /// Gives back the returned messages leased to `node` (its link ended).
    pub fn return_bounces(&self, node: &str) {
        let mut state = self.lock();
        let before = state.bounces.leased.len();
        state.bounces.leased.retain(|_, holder| holder != node);
        let freed = before - state.bounces.leased.len();
        drop(state);
        if freed > 0 {
            self.signal_work();
        }
    }

    /// Applies a `bounce` node's verdicts: suppression and counters, once per message.
    pub fn apply_verdicts(
        &self,
        node: &str,
        verdicts: &[BounceVerdict],
    ) -> Result<Vec<BounceLine>, FarmError> {
        let now = now_ms();
        let mut lines = Vec::new();
        for verdict in verdicts {
            let mut verdict = verdict.clone();
            // The recipient the signed return path names is the one we mailed: its address
            // is what gets suppressed, whatever the report calls it.
            if let Some(address) = verdict.recipient_id.and_then(|id| self.address_of(id)) {
                for r in &mut verdict.recipients {
                    r.address = address.clone();
                }
            }
            let verdict = &verdict;
            let mut effects = VerdictEffects::default();
            let campaign = verdict.campaign.clone().unwrap_or_default();
            let count = |effects: &mut VerdictEffects, name: String| {
                if !campaign.is_empty() {
                    effects.counts.push((campaign.clone(), name));
                }
            };
            match verdict.kind {
                ReturnKind::Bounce => {
                    for r in &verdict.recipients {
                        count(&mut effects, if r.hard { "hard" } else { "soft" }.into());
                        count(&mut effects, format!("reason:{}", r.reason));
                        if r.hard && !r.address.is_empty() {
                            effects
                                .suppress
                                .push((r.address.clone(), format!("bounce: {}", r.reason)));
                        }
                    }
                }
                ReturnKind::Unsubscribe => {
                    if let Some(address) = verdict.recipient_id.and_then(|id| self.address_of(id)) {
                        count(&mut effects, "unsubscribed".into());
                        let list = self.list_of(&campaign);
                        let reason = format!("unsubscribed: {}", list.as_deref().unwrap_or("list"));
                        effects.suppress.push((address, reason));
                    }
                }
                ReturnKind::Complaint => {
                    for r in &verdict.recipients {
                        count(&mut effects, "complaints".into());
                        if !r.address.is_empty() {
                            effects
                                .suppress
                                .push((r.address.clone(), "complaint".into()));
                        }
                    }
                }
                _ => {}
            }
            // Farm-wide tallies by kind live under the empty campaign id.
            effects
                .counts
                .push((String::new(), format!("kind:{}", verdict.kind.as_str())));
            let applied = self.store.apply_verdict(verdict.seq, &effects)?;
            self.lock().bounces.leased.remove(&verdict.seq);
            if applied {
                self.note_suppressed(effects.suppress.iter().map(|(a, _)| a.clone()));
            }
            if !applied {
                continue;
            }
            for r in &verdict.recipients {
                lines.push(BounceLine {
                    time_ms: now,
                    event: "bounce",
                    kind: verdict.kind.as_str(),
                    campaign: verdict.campaign.clone(),
                    recipient_id: verdict.recipient_id,
                    recipient: r.address.clone(),
                    reason: r.reason.clone(),
                    hard: r.hard,
                    status: r.status.clone(),
                    smurf: node.to_owned(),
                });
            }
        }
        self.signal_work();
        Ok(lines)
    }

    /// The address of recipient `id`, if it is still stored.
    fn address_of(&self, id: u64) -> Option<String> {
        let (seq, _) = split_id(id);
        let field = {
            let state = self.lock();
            state.campaigns.get(&seq)?.bundle.email_field as usize
        };
        let record = self.store.recipient(id).ok()??;
        record
            .values
            .get(field)
            .map(|a| a.trim().to_ascii_lowercase())
    }

    /// Adds a campaign's bounce counters to its counters.
    pub(crate) fn with_bounces(&self, mut c: CampaignCounters) -> CampaignCounters {
        let Ok(counts) = self.store.bounce_counts(&c.id) else {
            return c;
        };
        for (name, n) in counts {
            match name.as_str() {
                "hard" => c.bounced_hard += n,
                "soft" => c.bounced_soft += n,
                "complaints" => c.complaints += n,
                "unsubscribed" => c.unsubscribed += n,
                other => {
                    if let Some(reason) = other.strip_prefix("reason:") {
                        c.bounce_reasons.push((reason.to_owned(), n));
                    }
                }
            }
        }
        c
    }
}

/// One applied unsubscribe (or undo), for the accounting log.
#[derive(Debug, serde::Serialize)]
pub struct UnsubscribeLine {
    /// Time, ms since the epoch.
    pub time_ms: u64,
    /// `unsubscribe` or `resubscribe`.
    pub event: &'static str,
    /// Campaign the link came from.
    pub campaign: String,
    /// List left (or rejoined).
    pub list: Option<String>,
    /// Recipient id.
    pub recipient_id: u64,
    /// The address, when the recipient is still stored.
    pub recipient: Option<String>,
    /// The web node that took it.
    pub smurf: String,
}

impl Farm {
    /// Applies unsubscribes a `web` node recorded: the address is suppressed farm-wide
    /// (skipped from now on in running campaigns and at ingest in later ones) and counted on
    /// its campaign; an undo takes it off the list again. Returns the accounting lines.
    pub fn apply_unsubscribes(
        &self,
        node: &str,
        events: &[mailfarm_protocol::Unsubscription],
    ) -> Result<Vec<UnsubscribeLine>, FarmError> {
        let now = now_ms();
        let mut lines = Vec::with_capacity(events.len());
        for event in events {
            let address = self.address_of(event.recipient_id);
            let list = event
                .list_id
                .clone()
                .or_else(|| self.list_of(&event.campaign_id));
            if let Some(address) = &address {
                if event.resubscribe {
                    self.store.unsuppress(address)?;
                    self.lock().suppressed.remove(address);
                } else {
                    let reason = format!("unsubscribed: {}", list.as_deref().unwrap_or("list"));
                    let effects = VerdictEffects {
                        counts: vec![(event.campaign_id.clone(), "unsubscribed".into())],
                        suppress: vec![(address.clone(), reason)],
                    };
                    self.store.record_bounces(&effects)?;
                    self.note_suppressed([address.clone()]);
                }
            }
            lines.push(UnsubscribeLine {
                time_ms: now,
                event: if event.resubscribe {
                    "resubscribe"
                } else {
                    "unsubscribe"
                },
                campaign: event.campaign_id.clone(),
                list,
                recipient_id: event.recipient_id,
                recipient: address,
                smurf: node.to_owned(),
            });
        }
        self.signal_work();
        Ok(lines)
    }

    /// The list id of a campaign.
    fn list_of(&self, campaign: &str) -> Option<String> {
        let state = self.lock();
        let seq = state.by_id.get(campaign)?;
        Some(state.campaigns.get(seq)?.bundle.list_id.clone())
    }
}
