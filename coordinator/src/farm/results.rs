//! Results: applying what smurfs report (on the live link or late, after a reconnect) to the
//! store and the counters, and the accounting line of each attempt.

use super::*;
use crate::store::VerdictEffects;

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
    pub(super) fn of(
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

/// A permanent refusal from the receiving server during delivery goes through the same
/// classifier as returned mail: it counts as a bounce, and a hard one suppresses the address.
/// Local failures (render errors, no server reached: `remote` is empty) are not bounces.
fn sync_bounce(
    effects: &mut VerdictEffects,
    campaign: &str,
    email: &str,
    result: &RecipientResult,
) {
    if result.remote.is_empty() || !(500..600).contains(&result.code) {
        return;
    }
    let enhanced = result.enhanced.map(|(a, b, c)| format!("{a}.{b}.{c}"));
    let (reason, hard) =
        mailfarm_bounce::classify_reply(result.code, enhanced.as_deref(), &result.text);
    let kind = if hard { "hard" } else { "soft" };
    effects.counts.push((campaign.to_owned(), kind.to_owned()));
    effects
        .counts
        .push((campaign.to_owned(), format!("reason:{reason}")));
    if hard && !email.is_empty() {
        effects
            .suppress
            .push((email.trim().to_owned(), format!("refused: {reason}")));
    }
}

/// Distinct failure reasons kept per campaign, so a hostile server cannot grow the map.
const MAX_REASONS: usize = 64;

/// One results frame from a smurf, waiting for its transaction.
#[derive(Debug)]
pub struct ResultsFrame {
    /// The smurf that sent it.
    pub node: String,
    /// Its results.
    pub results: Vec<RecipientResult>,
    /// Its size on the wire (live results only: shared out over the campaign counters).
    pub frame_bytes: u64,
    /// Results kept from an earlier link ([`Farm::apply_late_results`] rules), not live ones.
    pub late: bool,
}

/// What a frame's results come to before its transaction: the store ids, and for live results
/// which result each id belongs to with the recipient's address.
enum Prepared {
    /// Live: (index in the frame, id, address) of each result for a recipient in flight.
    Live(Vec<(usize, u64, String)>),
    /// Late: every result, in frame order.
    Late,
}

impl Farm {
    /// Records results durably, then updates counters. Returns the attempts for the
    /// accounting log. Results for recipients not in flight are ignored.
    pub fn apply_results(
        &self,
        node: &str,
        results: &[RecipientResult],
        frame_bytes: u64,
    ) -> Result<Vec<Attempt>, StoreError> {
        self.apply_one(ResultsFrame {
            node: node.to_owned(),
            results: results.to_vec(),
            frame_bytes,
            late: false,
        })
    }

    /// Applies results a smurf kept from an earlier link. A recipient that is still pending
    /// (queued again, or even re-leased) takes the result, so its message is not sent again;
    /// if it was re-leased, the later result of that lease is ignored.
    pub fn apply_late_results(
        &self,
        node: &str,
        results: &[RecipientResult],
    ) -> Result<Vec<Attempt>, StoreError> {
        self.apply_one(ResultsFrame {
            node: node.to_owned(),
            results: results.to_vec(),
            frame_bytes: 0,
            late: true,
        })
    }

    fn apply_one(&self, frame: ResultsFrame) -> Result<Vec<Attempt>, StoreError> {
        Ok(self
            .apply_frames(std::slice::from_ref(&frame))?
            .pop()
            .unwrap_or_default())
    }

    /// Records the results of several frames in ONE store transaction (one commit, one fsync
    /// when durable), then updates the counters frame by frame, in order, exactly as if each
    /// frame had been applied alone: a recipient whose result is in two frames takes the first.
    /// Returns each frame's attempts for the accounting log. Nothing of it may be acknowledged
    /// to a smurf before this returns `Ok`: only then are the results on disk.
    pub fn apply_frames(&self, frames: &[ResultsFrame]) -> Result<Vec<Vec<Attempt>>, StoreError> {
        let now = now_ms();
        let prepared: Vec<Prepared> = {
            let state = self.lock();
            // A recipient taken by an earlier live frame of the group is no longer in flight
            // for a later one, as when the frames are applied one by one.
            let mut taken = HashSet::new();
            frames
                .iter()
                .map(|frame| {
                    if frame.late {
                        Prepared::Late
                    } else {
                        Prepared::Live(in_flight_of(&state, &frame.results, &mut taken))
                    }
                })
                .collect()
        };
        // Every id of every frame, and the (frame, result) it came from.
        let mut ids = Vec::new();
        let mut origin = Vec::new();
        for (f, (frame, prep)) in frames.iter().zip(&prepared).enumerate() {
            match prep {
                Prepared::Live(known) => {
                    for &(i, id, _) in known {
                        ids.push(id);
                        origin.push((f, i));
                    }
                }
                Prepared::Late => {
                    for (i, result) in frame.results.iter().enumerate() {
                        ids.push(result.id);
                        origin.push((f, i));
                    }
                }
            }
        }
        let new_states = self.store.apply(&ids, |k, record: &mut RecipientRecord| {
            let (f, i) = origin[k];
            self.retry
                .record_attempt(record, &frames[f].results[i], now);
        })?;
        let mut new_states = new_states.into_iter();
        let mut touched = HashSet::new();
        let mut refused = VerdictEffects::default();
        let mut out = Vec::with_capacity(frames.len());
        for (frame, prep) in frames.iter().zip(prepared) {
            let attempts = match prep {
                Prepared::Live(known) => {
                    let states: Vec<_> = new_states.by_ref().take(known.len()).collect();
                    let mut effects = Effects {
                        now,
                        touched: &mut touched,
                        refused: &mut refused,
                    };
                    self.after_live(frame, known, states, &mut effects)
                }
                Prepared::Late => {
                    let states: Vec<_> = new_states.by_ref().take(frame.results.len()).collect();
                    self.after_late(frame, states, now, &mut touched)
                }
            };
            out.push(attempts);
        }
        if !refused.counts.is_empty() {
            self.store.record_bounces(&refused)?;
            self.note_suppressed(refused.suppress.into_iter().map(|(a, _)| a));
        }
        for seq in touched {
            self.check_finished(seq)?;
        }
        Ok(out)
    }

    /// Counters and attempts of a live frame whose results are committed.
    fn after_live(
        &self,
        frame: &ResultsFrame,
        known: Vec<(usize, u64, String)>,
        new_states: Vec<Option<StoredState>>,
        effects: &mut Effects<'_>,
    ) -> Vec<Attempt> {
        let (node, results) = (frame.node.as_str(), &frame.results);
        let mut attempts = Vec::with_capacity(known.len());
        let mut state = self.lock();
        let share = frame.frame_bytes / results.len().max(1) as u64;
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
            effects.touched.insert(seq);
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
                    sync_bounce(effects.refused, &c.id, &email, result);
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
                effects.now,
                &live.counters.id,
                email,
                node,
                label,
            ));
        }
        if let Some(n) = state.nodes.iter_mut().find(|n| n.name == node) {
            n.results += freed;
        }
        attempts
    }

    /// Counters and attempts of a late frame whose results are committed.
    fn after_late(
        &self,
        frame: &ResultsFrame,
        new_states: Vec<Option<StoredState>>,
        now: u64,
        touched: &mut HashSet<u32>,
    ) -> Vec<Attempt> {
        let mut attempts = Vec::new();
        let mut state = self.lock();
        for (result, new_state) in frame.results.iter().zip(new_states) {
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
            attempts.push(Attempt::of(
                result,
                now,
                &c.id,
                String::new(),
                &frame.node,
                label,
            ));
        }
        attempts
    }
}

/// What the live frames of one group commit add up to besides their attempts.
struct Effects<'a> {
    now: u64,
    touched: &'a mut HashSet<u32>,
    refused: &'a mut VerdictEffects,
}

/// The results of `results` whose recipient is in flight and not in `taken` (which gets
/// them): (index, id, address).
fn in_flight_of(
    state: &FarmState,
    results: &[RecipientResult],
    taken: &mut HashSet<u64>,
) -> Vec<(usize, u64, String)> {
    results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let f = state.in_flight.get(&r.id)?;
            if !taken.insert(r.id) {
                return None;
            }
            let (seq, _) = split_id(r.id);
            let email_field = state.campaigns.get(&seq)?.bundle.email_field as usize;
            let email = f.data.values.get(email_field).cloned().unwrap_or_default();
            Some((i, r.id, email))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::farm::tests::{farm_with, result};

    #[test]
    fn one_group_commit_counts_like_frames_applied_one_by_one() {
        let run = |grouped: bool| {
            let farm = farm_with("c", 4, RetryPolicy::default());
            let ids: Vec<u64> = farm
                .lease("s1", 3)
                .unwrap()
                .recipients
                .iter()
                .map(|r| r.id)
                .collect();
            let frame = |late, results: Vec<RecipientResult>| ResultsFrame {
                node: "s1".into(),
                results,
                frame_bytes: 30,
                late,
            };
            let frames = vec![
                frame(false, vec![result(ids[0], Outcome::Delivered, 250)]),
                // A duplicate, live then late: both ignored.
                frame(false, vec![result(ids[0], Outcome::Failed, 550)]),
                frame(true, vec![result(ids[0], Outcome::Failed, 550)]),
                frame(false, vec![result(ids[1], Outcome::Deferred, 451)]),
                // A late result for a recipient still in flight takes it.
                frame(true, vec![result(ids[2], Outcome::Delivered, 250)]),
            ];
            let attempts: Vec<usize> = if grouped {
                farm.apply_frames(&frames)
                    .unwrap()
                    .iter()
                    .map(Vec::len)
                    .collect()
            } else {
                frames
                    .iter()
                    .map(|f| farm.apply_frames(std::slice::from_ref(f)).unwrap()[0].len())
                    .collect()
            };
            let c = farm.counters("c").unwrap();
            (
                attempts,
                (
                    c.queued,
                    c.in_flight,
                    c.delivered,
                    c.deferred,
                    c.failed,
                    c.attempts,
                ),
            )
        };
        let grouped = run(true);
        assert_eq!(grouped, run(false));
        assert_eq!(grouped, (vec![1, 0, 0, 1, 1], (1, 1, 2, 1, 0, 3)));
    }
}
