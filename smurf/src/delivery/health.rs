//! How a site is doing, and what that makes of its limits: ramp-up of a fresh site, adaptive
//! backoff when the site asks us to slow down, and the bog (slow lane) for a site that keeps
//! failing.
//!
//! Numbers (see also [`BogSettings`]):
//! - ramp-up: a site starts at [`RAMP_START`] of its message rate (never below 1/s, or its rate
//!   if lower) and grows linearly to the full rate over the shaping's `ramp_up`;
//! - backoff: a slow-down reply (see [`is_slow_down`]) halves the site's rate (from the lower of
//!   its current limit and the rate actually achieved) and its connection cap, at most once
//!   per [`CUT_COOLDOWN`] (replies already in flight say the same thing), with floors of
//!   [`RATE_FLOOR`] and one connection; each [`INTERVAL`] with successes and no slow-down
//!   reply then gives back 10 % of the rate and one connection (at least 10 %), until the
//!   shaped limits are reached again;
//! - the bog: after `after_failures` consecutive failed attempts, or `failure_ratio` of the
//!   last [`BOG_WINDOW`] attempts, a site gets one connection and the `[bog] rate`; its first
//!   working attempt (the probe) brings it back to the fast lane, ramping up afresh. Failed
//!   means the site did not work (no session, broken session, slow-down reply), not that one
//!   recipient got a 4xx (see [`Signal`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::outbound::shaping::{BogSettings, SiteLimits, BOG_WINDOW};
use crate::smtp::reply::EnhancedStatus;

/// Share of the message rate a fresh site starts at.
pub const RAMP_START: f64 = 0.1;
/// Lowest rate the backoff cuts to: one message a minute.
pub const RATE_FLOOR: f64 = 1.0 / 60.0;
/// Ignore further slow-down replies for this long after a cut.
pub const CUT_COOLDOWN: Duration = Duration::from_secs(1);
/// Length of a health interval (recovery steps, achieved-rate measurement).
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Rate used in place of "unlimited" when recovering from a cut: above it, the cut is lifted.
const UNLIMITED_CEILING: f64 = 10_000.0;

/// Which lane a site is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Normal delivery within the site's limits.
    Fast,
    /// The slow lane: one connection, the bog rate, until an attempt succeeds.
    Bog,
}

/// What one attempt says about the site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// The site worked: it answered the transaction (delivered, refused permanently, or
    /// deferred this one recipient without asking us to slow down).
    Success,
    /// The site did not work: no session (refused, timed out, greeting refused) or a broken
    /// one (dropped mid-DATA, timed out, protocol error).
    TempFailure,
    /// A reply asking us to slow down (see [`is_slow_down`]).
    SlowDown,
}

/// Whether a reply asks the client to slow down: 421, any 4.7.x, or a 4xx whose text speaks
/// of rates, throttling, too many connections or messages, or slowing down.
///
/// A bare "try again later" is not enough: receivers put it on every kind of 4xx (greylisting,
/// a full mailbox, a local error), so counting it would throttle a site down to the floor on
/// ordinary per-recipient deferrals, which the coordinator's retries handle.
pub fn is_slow_down(code: u16, enhanced: Option<EnhancedStatus>, text: &str) -> bool {
    if !(400..500).contains(&code) {
        return false;
    }
    if code == 421 || enhanced.is_some_and(|e| e.class == 4 && e.subject == 7) {
        return true;
    }
    let text = text.to_ascii_lowercase();
    const PHRASES: &[&str] = &[
        "too many connections",
        "too many messages",
        "too many concurrent",
        "slow down",
        "throttl",
        "too fast",
    ];
    PHRASES.iter().any(|p| text.contains(p))
        || text
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word == "rate" || word == "ratelimit" || word == "ratelimited")
}

/// The limits in force right now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Effective {
    /// Messages per second; `None`: unlimited.
    pub rate: Option<f64>,
    /// New sessions per second; `None`: unlimited.
    pub connection_rate: Option<f64>,
    /// Most sessions.
    pub connections: u32,
}

/// A site's health and the state of its ramp and backoff.
#[derive(Debug)]
pub struct Health {
    lane: Lane,
    consecutive_failures: u32,
    /// Last attempts, `true` for a failed one.
    window: VecDeque<bool>,
    backoff_rate: Option<f64>,
    backoff_connections: Option<u32>,
    last_cut: Option<Instant>,
    interval_start: Instant,
    attempts_in_interval: u32,
    successes_in_interval: u32,
    slowdown_in_interval: bool,
    /// Attempts per second over the last complete interval.
    achieved: f64,
    ramp_start: Instant,
}

impl Health {
    /// A fresh site, starting its ramp now.
    pub fn new(now: Instant) -> Self {
        Self {
            lane: Lane::Fast,
            consecutive_failures: 0,
            window: VecDeque::with_capacity(BOG_WINDOW),
            backoff_rate: None,
            backoff_connections: None,
            last_cut: None,
            interval_start: now,
            attempts_in_interval: 0,
            successes_in_interval: 0,
            slowdown_in_interval: false,
            achieved: 0.0,
            ramp_start: now,
        }
    }

    /// The lane.
    pub fn lane(&self) -> Lane {
        self.lane
    }

    /// Whether a backoff cut is in force.
    pub fn backing_off(&self) -> bool {
        self.backoff_rate.is_some() || self.backoff_connections.is_some()
    }

    /// Takes one attempt's signal; `current` are the limits it was made under. Returns whether
    /// the lane or the backoff changed.
    pub fn record(
        &mut self,
        signal: Signal,
        now: Instant,
        current: &Effective,
        bog: &BogSettings,
    ) -> bool {
        self.attempts_in_interval += 1;
        if signal == Signal::Success {
            self.successes_in_interval += 1;
            self.consecutive_failures = 0;
            self.push_window(false);
            if self.lane == Lane::Bog {
                // The probe went through: back to the fast lane, ramping up again.
                self.lane = Lane::Fast;
                self.window.clear();
                self.backoff_rate = None;
                self.backoff_connections = None;
                self.ramp_start = now;
                return true;
            }
            return false;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.push_window(true);
        if self.lane == Lane::Bog {
            return false;
        }
        let failed = self.window.iter().filter(|f| **f).count();
        let ratio_hit = self.window.len() >= BOG_WINDOW
            && failed as f64 >= bog.failure_ratio * self.window.len() as f64;
        if self.consecutive_failures >= bog.after_failures || ratio_hit {
            self.lane = Lane::Bog;
            self.backoff_rate = None;
            self.backoff_connections = None;
            return true;
        }
        if signal == Signal::SlowDown {
            self.slowdown_in_interval = true;
            if self
                .last_cut
                .is_some_and(|t| now.duration_since(t) < CUT_COOLDOWN)
            {
                return false;
            }
            self.last_cut = Some(now);
            // Cut from what the site really got, when known: halving a limit twice the
            // achieved rate would change nothing.
            let elapsed = now.duration_since(self.interval_start).as_secs_f64();
            let this_interval = f64::from(self.attempts_in_interval) / elapsed.max(1.0);
            let achieved = if self.achieved > 0.0 {
                Some(self.achieved)
            } else if elapsed >= 1.0 {
                Some(this_interval)
            } else {
                None
            };
            let base = match (current.rate, achieved) {
                (Some(rate), Some(achieved)) => rate.min(achieved),
                (Some(rate), None) => rate,
                (None, Some(achieved)) => achieved,
                (None, None) => this_interval,
            };
            self.backoff_rate = Some((base / 2.0).max(RATE_FLOOR));
            self.backoff_connections = Some((current.connections / 2).max(1));
            return true;
        }
        false
    }

    fn push_window(&mut self, failed: bool) {
        if self.window.len() == BOG_WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(failed);
    }

    /// Closes a health interval when due: measures the achieved rate and, after a healthy
    /// interval, gives back part of a backoff cut. Returns whether the backoff changed.
    pub fn tick(&mut self, now: Instant, limits: &SiteLimits) -> bool {
        let elapsed = now.duration_since(self.interval_start);
        if elapsed < INTERVAL {
            return false;
        }
        self.achieved = f64::from(self.attempts_in_interval) / elapsed.as_secs_f64();
        let healthy = !self.slowdown_in_interval && self.successes_in_interval > 0;
        self.interval_start = now;
        self.attempts_in_interval = 0;
        self.successes_in_interval = 0;
        self.slowdown_in_interval = false;
        if !healthy || self.lane == Lane::Bog || !self.backing_off() {
            return false;
        }
        if let Some(rate) = self.backoff_rate {
            let ceiling = limits
                .message_rate
                .map_or(UNLIMITED_CEILING, |r| r.per_second());
            let next = rate * 1.1;
            self.backoff_rate = (next < ceiling).then_some(next);
        }
        if let Some(connections) = self.backoff_connections {
            let next = (connections + 1).max((f64::from(connections) * 1.1).ceil() as u32);
            self.backoff_connections = (next < limits.max_connections).then_some(next);
        }
        true
    }

    /// The limits in force at `now`.
    pub fn effective(&self, limits: &SiteLimits, bog: &BogSettings, now: Instant) -> Effective {
        if self.lane == Lane::Bog {
            let rate = bog.rate.per_second();
            return Effective {
                rate: Some(rate),
                connection_rate: Some(rate),
                connections: 1,
            };
        }
        let mut rate = limits.message_rate.map(|r| r.per_second());
        if let Some(full) = rate {
            if !limits.ramp_up.is_zero() {
                let progress = (now.duration_since(self.ramp_start).as_secs_f64()
                    / limits.ramp_up.as_secs_f64())
                .min(1.0);
                let fraction = RAMP_START + (1.0 - RAMP_START) * progress;
                rate = Some((full * fraction).max(full.min(1.0)));
            }
        }
        if let Some(cut) = self.backoff_rate {
            rate = Some(rate.map_or(cut, |r| r.min(cut)));
        }
        let connections = self
            .backoff_connections
            .map_or(limits.max_connections, |c| c.min(limits.max_connections))
            .max(1);
        Effective {
            rate,
            connection_rate: limits.connection_rate.map(|r| r.per_second()),
            connections,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailfarm_protocol::Rate;

    fn limits(rate: &str, connections: u32, ramp: u64) -> SiteLimits {
        SiteLimits {
            max_connections: connections,
            max_messages_per_connection: None,
            message_rate: Some(rate.parse::<Rate>().unwrap()),
            connection_rate: None,
            ramp_up: Duration::from_secs(ramp),
            tls: None,
        }
    }

    #[test]
    fn slow_down_replies() {
        let e = |c, s, d| Some(EnhancedStatus::new(c, s, d));
        assert!(is_slow_down(421, None, "closing"));
        assert!(is_slow_down(451, e(4, 7, 1), "policy"));
        assert!(is_slow_down(450, None, "Too many connections from you"));
        assert!(is_slow_down(452, None, "Rate limit exceeded"));
        assert!(is_slow_down(451, None, "Throttled: try again later"));
        let tempfail = "Temporary failure, try again later";
        assert!(!is_slow_down(451, e(4, 3, 0), tempfail));
        assert!(!is_slow_down(451, e(4, 3, 0), "local error in processing"));
        assert!(!is_slow_down(450, None, "mailbox busy, separate issue"));
        assert!(!is_slow_down(550, e(5, 7, 1), "rate limit"));
        assert!(!is_slow_down(250, None, "slow down"));
    }

    #[test]
    fn ramp_grows_to_the_full_rate() {
        let start = Instant::now();
        let h = Health::new(start);
        let l = limits("100/s", 4, 10);
        let bog = BogSettings::default();
        let at = |s: u64| h.effective(&l, &bog, start + Duration::from_secs(s)).rate;
        assert_eq!(at(0), Some(10.0));
        assert!((at(5).unwrap() - 55.0).abs() < 1e-9);
        assert_eq!(at(10), Some(100.0));
        assert_eq!(at(60), Some(100.0));
        let slow = limits("2/s", 4, 10);
        assert_eq!(h.effective(&slow, &bog, start).rate, Some(1.0));
    }

    #[test]
    fn slow_down_halves_then_recovers() {
        let start = Instant::now();
        let mut h = Health::new(start);
        let l = limits("100/s", 8, 0);
        let bog = BogSettings::default();
        let mut now = start + Duration::from_secs(3);
        h.tick(now, &l);
        let eff = h.effective(&l, &bog, now);
        assert_eq!(eff.rate, Some(100.0));
        // 80 attempts in 2 s: the achieved rate is 40/s, below the limit.
        for _ in 0..80 {
            h.record(Signal::Success, now, &eff, &bog);
        }
        now += INTERVAL;
        h.tick(now, &l);
        now += Duration::from_millis(100);
        assert!(h.record(Signal::SlowDown, now, &eff, &bog));
        let cut = h.effective(&l, &bog, now);
        assert!((cut.rate.unwrap() - 20.0).abs() < 1e-9, "{cut:?}");
        assert_eq!(cut.connections, 4);
        // More slow-downs in the cooldown change nothing.
        assert!(!h.record(Signal::SlowDown, now, &cut, &bog));
        // A healthy interval gives back 10 % and a connection.
        now += INTERVAL;
        h.tick(now, &l);
        h.record(Signal::Success, now, &cut, &bog);
        now += INTERVAL;
        assert!(h.tick(now, &l));
        let back = h.effective(&l, &bog, now);
        assert!((back.rate.unwrap() - 22.0).abs() < 1e-9, "{back:?}");
        assert_eq!(back.connections, 5);
        // Intervals without traffic do not recover.
        now += INTERVAL;
        assert!(!h.tick(now, &l));
        assert_eq!(h.lane(), Lane::Fast);
    }

    #[test]
    fn early_slow_down_cuts_from_the_limit() {
        let start = Instant::now();
        let mut h = Health::new(start);
        let l = limits("100/s", 4, 0);
        let bog = BogSettings::default();
        let eff = h.effective(&l, &bog, start);
        for _ in 0..5 {
            h.record(Signal::Success, start, &eff, &bog);
        }
        let now = start + Duration::from_millis(50);
        assert!(h.record(Signal::SlowDown, now, &eff, &bog));
        assert_eq!(h.effective(&l, &bog, now).rate, Some(50.0));
        assert_eq!(h.effective(&l, &bog, now).connections, 2);
    }

    #[test]
    fn consecutive_failures_send_to_the_bog_and_a_success_brings_back() {
        let start = Instant::now();
        let mut h = Health::new(start);
        let l = limits("100/s", 4, 10);
        let bog = BogSettings::default();
        let eff = h.effective(&l, &bog, start);
        for i in 1..bog.after_failures {
            assert!(!h.record(Signal::TempFailure, start, &eff, &bog), "{i}");
        }
        assert!(h.record(Signal::TempFailure, start, &eff, &bog));
        assert_eq!(h.lane(), Lane::Bog);
        let bogged = h.effective(&l, &bog, start);
        assert_eq!(bogged.connections, 1);
        assert_eq!(bogged.rate, Some(0.2));
        let later = start + Duration::from_secs(30);
        assert!(h.record(Signal::Success, later, &bogged, &bog));
        assert_eq!(h.lane(), Lane::Fast);
        // Ramping afresh.
        assert_eq!(h.effective(&l, &bog, later).rate, Some(10.0));
    }

    #[test]
    fn failure_ratio_sends_to_the_bog() {
        let start = Instant::now();
        let mut h = Health::new(start);
        let l = limits("100/s", 4, 0);
        let bog = BogSettings::default();
        let eff = h.effective(&l, &bog, start);
        // One success, four failures, repeated: 80 % over 20 attempts, never 10 in a row.
        for i in 0..BOG_WINDOW {
            let signal = if i % 5 == 0 {
                Signal::Success
            } else {
                Signal::TempFailure
            };
            h.record(signal, start, &eff, &bog);
        }
        assert_eq!(h.lane(), Lane::Bog);
    }
}
