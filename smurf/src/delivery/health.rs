//! How a site is doing, and what that makes of its limits: ramp-up of a fresh site and the bog
//! (slow lane) for a site that keeps failing. Throttling replies ("slow down") are not
//! failures: they are learnt by [`super::adaptive`].
//!
//! Numbers (see also [`BogSettings`]):
//! - ramp-up: a site starts at [`RAMP_START`] of its message rate (never below 1/s, or its rate
//!   if lower) and grows linearly to the full rate over the shaping's `ramp_up`;
//! - the bog: after `after_failures` consecutive failed attempts, or `failure_ratio` of the
//!   last [`BOG_WINDOW`] attempts, a site gets one connection and the `[bog] rate`; its first
//!   working attempt (the probe) brings it back to the fast lane, ramping up afresh. Failed
//!   means the site did not work (no session, broken session), not that one recipient got a
//!   4xx or that the site asked us to slow down (see [`Signal`]).

use std::collections::VecDeque;
use std::time::Instant;

use crate::outbound::shaping::{BogSettings, SiteLimits, BOG_WINDOW};

/// Share of the message rate a fresh site starts at.
pub const RAMP_START: f64 = 0.1;
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

/// A site's health and the state of its ramp.
#[derive(Debug)]
pub struct Health {
    lane: Lane,
    consecutive_failures: u32,
    /// Last attempts, `true` for a failed one.
    window: VecDeque<bool>,
    ramp_start: Instant,
}

impl Health {
    /// A fresh site, starting its ramp now.
    pub fn new(now: Instant) -> Self {
        Self {
            lane: Lane::Fast,
            consecutive_failures: 0,
            window: VecDeque::with_capacity(BOG_WINDOW),
            ramp_start: now,
        }
    }

    /// The lane.
    pub fn lane(&self) -> Lane {
        self.lane
    }

    /// Moves the site to the bog now (an operator's rule said so).
    pub fn bog_now(&mut self) -> bool {
        let changed = self.lane != Lane::Bog;
        self.lane = Lane::Bog;
        changed
    }

    /// Takes one attempt's signal. Returns whether the lane changed.
    pub fn record(&mut self, signal: Signal, now: Instant, bog: &BogSettings) -> bool {
        if signal == Signal::Success {
            self.consecutive_failures = 0;
            self.push_window(false);
            if self.lane == Lane::Bog {
                // The probe went through: back to the fast lane, ramping up again.
                self.lane = Lane::Fast;
                self.window.clear();
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
        let connections = limits.max_connections.max(1);
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
    use std::time::Duration;

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
    fn consecutive_failures_send_to_the_bog_and_a_success_brings_back() {
        let start = Instant::now();
        let mut h = Health::new(start);
        let l = limits("100/s", 4, 10);
        let bog = BogSettings::default();
        for i in 1..bog.after_failures {
            assert!(!h.record(Signal::TempFailure, start, &bog), "{i}");
        }
        assert!(h.record(Signal::TempFailure, start, &bog));
        assert_eq!(h.lane(), Lane::Bog);
        let bogged = h.effective(&l, &bog, start);
        assert_eq!(bogged.connections, 1);
        assert_eq!(bogged.rate, Some(0.2));
        let later = start + Duration::from_secs(30);
        assert!(h.record(Signal::Success, later, &bog));
        assert_eq!(h.lane(), Lane::Fast);
        // Ramping afresh.
        assert_eq!(h.effective(&l, &bog, later).rate, Some(10.0));
    }

    #[test]
    fn failure_ratio_sends_to_the_bog() {
        let start = Instant::now();
        let mut h = Health::new(start);
        let bog = BogSettings::default();
        // One success, four failures, repeated: 80 % over 20 attempts, never 10 in a row.
        for i in 0..BOG_WINDOW {
            let signal = if i % 5 == 0 {
                Signal::Success
            } else {
                Signal::TempFailure
            };
            h.record(signal, start, &bog);
        }
        assert_eq!(h.lane(), Lane::Bog);
    }
}
