//! Leasing: handing queued recipients to `out` nodes in batches, one campaign at a time, within
//! pause, schedule, rate caps and the per-domain in-flight caps; and taking them back when a
//! link is lost or a node hands them back.

use super::*;

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

/// Recipients parked per campaign over their domains' caps; beyond it leasing waits.
const MAX_PARKED: usize = 50_000;

impl Farm {
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
            || !state.nodes.iter().any(|n| n.name == node && n.leasable())
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
            next_campaign,
            suppressed,
            pending_skips,
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
                if is_suppressed(suppressed, &r, email_field) {
                    // Suppressed while the campaign ran (unsubscribe, bounce, complaint).
                    live.counters.queued = live.counters.queued.saturating_sub(1);
                    live.counters.skipped += 1;
                    pending_skips.push(r.id);
                    continue;
                }
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
            let holder: Arc<str> = Arc::from(node);
            for r in &recipients {
                in_flight.insert(
                    r.id,
                    InFlight {
                        data: r.clone(),
                        node: holder.clone(),
                    },
                );
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

    /// Puts recipients that were in flight on a lost link back at the front of their queues.
    pub fn requeue(&self, node: &str, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        {
            let mut state = self.lock();
            for &id in ids {
                // Only what this node holds: a recipient re-leased elsewhere stays there.
                if state.in_flight.get(&id).is_none_or(|f| &*f.node != node) {
                    continue;
                }
                let Some(f) = state.in_flight.remove(&id) else {
                    continue;
                };
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
        }
        self.signal_work();
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

/// Whether a recipient's address joined the suppression list.
fn is_suppressed(suppressed: &HashSet<String>, r: &RecipientData, email_field: usize) -> bool {
    !suppressed.is_empty()
        && r.values
            .get(email_field)
            .is_some_and(|a| suppressed.contains(&a.trim().to_ascii_lowercase()))
}
