//! Retries: the schedule of temporary failures and releasing deferred recipients when their
//! time comes.

use super::*;

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
    /// What an attempt's result does to its recipient's record: the store applies this rule
    /// inside its transaction, and it needs nothing but the policy (no call back into the farm).
    pub(super) fn record_attempt(
        &self,
        record: &mut RecipientRecord,
        result: &RecipientResult,
        now: u64,
    ) {
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
                match self.next_retry(record.attempts, record.first_attempt_ms, now) {
                    Some(retry_at_ms) => StoredState::Deferred { retry_at_ms },
                    None => StoredState::Failed,
                }
            }
        };
    }

    /// When to retry after `attempts` attempts, with ±10 % jitter; None when the recipient is
    /// too old to retry.
    pub(super) fn next_retry(&self, attempts: u16, first_attempt_ms: u64, now: u64) -> Option<u64> {
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

impl Farm {
    /// When the next deferred recipient is due, if any (ms since the epoch).
    pub fn next_retry_at(&self) -> Option<u64> {
        self.store.next_retry_at().ok().flatten()
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
}
