//! Provider-style limits of the fault sink (`mailfarm sink --rate R --max-connections C`): a
//! per-second message rate answered as Amazon SES does at the end of DATA (the session stays
//! open), and the connection-limit refusal text Postfix's anvil uses. Users and tests can then
//! watch the farm learn a site's rate (issue 11). Kept in its own file, with two call sites in
//! the sink, so that the sink can move onto another SMTP server core without touching it.
//!
//! The rate is a sliding window: a message is accepted when fewer than `R` were accepted in the
//! last second, so a sender that paces evenly below `R` is never refused, and one above it has
//! exactly its excess refused. The rate can be changed while the sink runs (the bench raises
//! it mid-campaign).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::lock;

/// SES's reply beyond the rate, at the end of DATA.
pub const RATE_REPLY: (u16, &str) = (454, "Throttling failure: Maximum sending rate exceeded.");
/// The greeting refusal beyond the connection limit (Postfix's words).
pub const CONNECTIONS_REFUSAL: (u16, &str) = (421, "4.7.0 Error: too many connections");

/// The window the rate is counted over.
const WINDOW: Duration = Duration::from_secs(1);

/// A message rate per second, changeable at run time.
#[derive(Debug)]
pub struct ProviderRate {
    /// Messages per second, as `f64` bits.
    rate: AtomicU64,
    accepted: Mutex<VecDeque<Instant>>,
    /// Messages refused with [`RATE_REPLY`].
    pub refused: AtomicU64,
}

impl ProviderRate {
    /// A limit of `rate` messages per second.
    pub fn new(rate: f64) -> Self {
        Self {
            rate: AtomicU64::new(rate.to_bits()),
            accepted: Mutex::new(VecDeque::new()),
            refused: AtomicU64::new(0),
        }
    }

    /// The limit in force.
    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }

    /// Changes the limit (positive; other values are ignored).
    pub fn set_rate(&self, rate: f64) {
        if rate.is_finite() && rate > 0.0 {
            self.rate.store(rate.to_bits(), Ordering::Relaxed);
        }
    }

    /// Takes one message at `now`: `None` when accepted, the refusal otherwise.
    pub fn admit(&self, now: Instant) -> Option<(u16, &'static str)> {
        let limit = self.rate().max(1.0) as usize;
        let mut accepted = lock(&self.accepted);
        while accepted
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            accepted.pop_front();
        }
        if accepted.len() < limit {
            accepted.push_back(now);
            None
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            Some(RATE_REPLY)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_the_rate_in_any_second_and_follows_changes() {
        let limit = ProviderRate::new(5.0);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        for i in 0..5 {
            assert_eq!(limit.admit(at(i * 10)), None);
        }
        assert_eq!(limit.admit(at(60)), Some(RATE_REPLY));
        // A second after the first, one slot is free again.
        assert_eq!(limit.admit(at(1000)), None);
        assert_eq!(limit.admit(at(1001)), Some(RATE_REPLY));
        assert_eq!(limit.refused.load(Ordering::Relaxed), 2);
        limit.set_rate(7.0);
        assert_eq!(limit.admit(at(1002)), None);
        assert_eq!(limit.admit(at(1003)), None);
        assert_eq!(limit.admit(at(1004)), Some(RATE_REPLY));
        limit.set_rate(-1.0);
        assert_eq!(limit.rate(), 7.0);
    }
}
