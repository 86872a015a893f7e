//! The rate and connection count a site has shown it accepts, learnt from its throttling
//! replies (AIMD, as TCP does with its window), plus the operator's temporary caps and
//! suspensions. Kept apart from [`super::health`] (ramp-up and the bog) because it is fed by
//! another signal (a throttling reply means the site works, only too fast for it) and because
//! its state is shared farm-wide through the coordinator.
//!
//! - Multiplicative decrease: a throttling reply sets the learnt rate to [`BETA`] times the
//!   lower of the rate in force and the rate the site accepts (measured, see
//!   [`Adaptive::estimate`]), once per flight: replies to messages sent before the last cut
//!   are ignored (see [`Adaptive::cut_rate`]).
//! - Additive increase: while the site is backlogged and calm, the learnt rate grows by
//!   [`STEP`] of its value at the last cut per second, so a cycle back to the cut point lasts
//!   about `(1 - BETA) / STEP` seconds whatever the rate (3 s). Reaching the configured limit
//!   lifts the learnt rate: configured limits stay the ceiling. After [`PROBE_DOUBLING`]
//!   without a cut the step doubles, and again each period after (at most 16 times), so a
//!   raised limit is found within seconds.
//! - Connections: "too many connections" (or a drop at banner time) sets the learnt count to
//!   the sessions open beside the refused one (at least 1); after [`CONNECTION_CALM`] without
//!   one, it grows by one.
//! - Only a rate in use grows: the site must have accepted about the learnt rate over the
//!   last second.
//! - The coordinator may set the learnt values (the farm-wide learnt rate split among the
//!   smurfs sending to the site, see [`Adaptive::set_farm`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Multiplicative decrease factor.
pub const BETA: f64 = 0.85;
/// Additive increase per second, as a share of the rate right after the last cut.
pub const STEP: f64 = 0.05;
/// No additive increase for this long after a cut; no second connection cut within it.
pub const COOLDOWN: Duration = Duration::from_secs(1);
/// Lowest learnt rate: one message a minute.
pub const RATE_FLOOR: f64 = 1.0 / 60.0;
/// Calm time before one more connection is tried: long, because every probe beyond a
/// site's limit is a refused connection, and sessions are reused for many messages.
pub const CONNECTION_CALM: Duration = Duration::from_secs(60);
/// After this long without a cut, the additive step doubles (and again after each further
/// period, up to 16 times): a raised limit is found in seconds, not minutes.
pub const PROBE_DOUBLING: Duration = Duration::from_secs(6);
/// Window over which the accepted rate is measured.
const WINDOW: Duration = Duration::from_secs(1);
/// Window of the long-run accepted rate (see [`Adaptive::estimate`]).
pub const LONG_WINDOW: Duration = Duration::from_secs(10);
/// Above this, an "unlimited" site's learnt rate is dropped (no limit learnt any more).
const UNLIMITED_CEILING: f64 = 100_000.0;

/// What a site has learnt, and the operator's caps.
#[derive(Debug)]
pub struct Adaptive {
    started: Instant,
    learnt_rate: Option<f64>,
    learnt_connections: Option<u32>,
    /// Rate after the last cut (sizes the additive step).
    step_base: f64,
    last_cut: Option<Instant>,
    last_connection_cut: Option<Instant>,
    /// The last "too many connections".
    last_refusal: Option<Instant>,
    last_step: Instant,
    /// When the site accepted messages, over the last [`LONG_WINDOW`].
    accepted: VecDeque<Instant>,
    cap_rate: Option<(f64, Instant)>,
    cap_connections: Option<(u32, Instant)>,
    suspended_until: Option<Instant>,
    /// Throttling replies seen.
    pub throttled: u64,
    /// The last throttling reply, as the site wrote it.
    pub last_reply: Option<String>,
    /// A cut happened since the coordinator last heard from this site.
    pub cut_pending: bool,
}

impl Adaptive {
    /// Nothing learnt yet.
    pub fn new(now: Instant) -> Self {
        Self {
            started: now,
            learnt_rate: None,
            learnt_connections: None,
            step_base: 0.0,
            last_cut: None,
            last_connection_cut: None,
            last_refusal: None,
            last_step: now,
            accepted: VecDeque::new(),
            cap_rate: None,
            cap_connections: None,
            suspended_until: None,
            throttled: 0,
            last_reply: None,
            cut_pending: false,
        }
    }

    /// The learnt rate (messages per second), if any.
    pub fn learnt_rate(&self) -> Option<f64> {
        self.learnt_rate
    }

    /// The learnt connection count, if any.
    pub fn learnt_connections(&self) -> Option<u32> {
        self.learnt_connections
    }

    /// Whether anything learnt or capped is in force.
    pub fn active(&self, now: Instant) -> bool {
        self.learnt_rate.is_some()
            || self.learnt_connections.is_some()
            || self.cap_rate.is_some_and(|(_, t)| t > now)
            || self.cap_connections.is_some_and(|(_, t)| t > now)
            || self.suspended(now)
    }

    /// Whether the site is suspended at `now`.
    pub fn suspended(&self, now: Instant) -> bool {
        self.suspended_until.is_some_and(|t| t > now)
    }

    /// When a suspension ends.
    pub fn suspended_until(&self) -> Option<Instant> {
        self.suspended_until
    }

    /// The site accepted a message.
    pub fn on_accepted(&mut self, now: Instant) {
        self.accepted.push_back(now);
        self.trim(now);
    }

    fn trim(&mut self, now: Instant) {
        while self
            .accepted
            .front()
            .is_some_and(|t| now.duration_since(*t) > LONG_WINDOW)
        {
            self.accepted.pop_front();
        }
    }

    /// Messages the site accepted over the last second.
    pub fn accepted_now(&mut self, now: Instant) -> f64 {
        self.trim(now);
        self.accepted
            .iter()
            .rev()
            .take_while(|t| now.duration_since(**t) <= WINDOW)
            .count() as f64
    }

    /// A throttling reply to a message sent at `sent` while `current` was in force (`None`:
    /// unlimited) over `sessions` sessions. Returns whether the learnt rate changed.
    ///
    /// One cut per flight, as TCP does once per window: replies to messages sent before the
    /// last cut say nothing new. The cut goes to [`BETA`] times the lower of the rate in force
    /// and what the site accepts ([`Adaptive::estimate`]), but not below [`BETA`] times what it
    /// accepted over the last second; a cut that would not lower the rate is no cut.
    pub fn cut_rate(
        &mut self,
        (current, sessions): (Option<f64>, u32),
        sent: Instant,
        now: Instant,
    ) -> bool {
        self.throttled += 1;
        if self.last_cut.is_some_and(|t| sent < t) {
            return false;
        }
        // Nothing accepted yet (the replies of the ones accepted may not have been counted
        // yet): no measure, so from the rate in force, or one message a second per session.
        let estimate = Some(self.estimate(now)).filter(|e| *e > 0.0);
        let base = match (current, estimate) {
            (Some(c), Some(e)) => c.min(e),
            (Some(c), None) => c,
            (None, Some(e)) => e,
            (None, None) => f64::from(sessions.max(1)),
        };
        // Never below what it took over the last second: a per-second counter (SES) still
        // refuses messages sent right after a cut, for the sends before it.
        let next = (BETA * base)
            .max(BETA * self.accepted_now(now))
            .max(RATE_FLOOR);
        let in_force = self.learnt_rate.or(current).unwrap_or(f64::INFINITY);
        if next >= in_force {
            return false;
        }
        self.learnt_rate = Some(next);
        self.step_base = next;
        self.last_cut = Some(now);
        self.last_step = now;
        self.cut_pending = true;
        true
    }

    /// What the site accepts, messages per second. On a young site (under a second) the count
    /// so far over its age (at least a tenth of a second); later the larger of the last
    /// second's count and the average over the last [`LONG_WINDOW`]. The average keeps a
    /// receiver that counts per window (SES per second, Postfix's anvil per
    /// `anvil_rate_time_unit`) from driving the rate to the floor while it refuses everything
    /// for the rest of its window.
    fn estimate(&mut self, now: Instant) -> f64 {
        self.trim(now);
        let age = now.duration_since(self.started);
        let last_second = self
            .accepted
            .iter()
            .rev()
            .take_while(|t| now.duration_since(**t) <= WINDOW)
            .count() as f64;
        if age < WINDOW {
            return last_second / age.max(Duration::from_millis(100)).as_secs_f64();
        }
        let long = self.accepted.len() as f64 / age.min(LONG_WINDOW).as_secs_f64();
        last_second.max(long)
    }

    /// A "too many connections" reply (or a drop at banner time) to a session opened beside
    /// `others` open or opening. Returns whether the learnt count changed.
    pub fn cut_connections(&mut self, others: u32, now: Instant) -> bool {
        self.throttled += 1;
        // The site refused one more session beside `others`: that many is what it allows us.
        let next = others.max(1);
        let current = self.learnt_connections.unwrap_or(u32::MAX);
        self.last_connection_cut = Some(now);
        self.last_refusal = Some(now);
        if next >= current {
            return false;
        }
        self.learnt_connections = Some(next);
        self.cut_pending = true;
        true
    }

    /// Whether a new session may be opened: not within [`COOLDOWN`] of a refused one (a
    /// site at its limit would refuse it too, as fast as sessions are opened).
    pub fn may_open(&self, now: Instant) -> bool {
        self.last_refusal
            .is_none_or(|t| now.duration_since(t) >= COOLDOWN)
    }

    /// Advances the additive increase. `backlogged`: the site has messages waiting (only then
    /// does a calm site prove it takes more). `ceiling`: the configured rate (`None`:
    /// unlimited) and connection cap. Returns whether anything changed.
    pub fn tick(
        &mut self,
        now: Instant,
        backlogged: bool,
        ceiling_rate: Option<f64>,
        ceiling_connections: u32,
    ) -> bool {
        let mut changed = false;
        if self.cap_rate.is_some_and(|(_, t)| t <= now) {
            self.cap_rate = None;
            changed = true;
        }
        if self.cap_connections.is_some_and(|(_, t)| t <= now) {
            self.cap_connections = None;
            changed = true;
        }
        if self.suspended_until.is_some_and(|t| t <= now) {
            self.suspended_until = None;
            changed = true;
        }
        let dt = now.duration_since(self.last_step).as_secs_f64();
        self.last_step = now;
        let calm = self
            .last_cut
            .is_none_or(|t| now.duration_since(t) >= COOLDOWN);
        // Grow only a rate in use: a site sending below its learnt rate for another reason
        // (few sessions, a slow peer) proves nothing about a higher one (RFC 7661's rule for
        // TCP's window).
        let last_second = self.accepted_now(now);
        let used = |rate: f64| last_second + 1.0 >= 0.8 * rate;
        if let Some(rate) = self.learnt_rate.filter(|r| used(*r)) {
            if backlogged && calm {
                // Calm for long (the limit was raised, or the cut was too deep): probe faster,
                // doubling the step every PROBE_DOUBLING after the first.
                let calm_for = now.duration_since(self.last_cut.unwrap_or(self.started));
                let doublings = calm_for.saturating_sub(PROBE_DOUBLING).as_secs_f64()
                    / PROBE_DOUBLING.as_secs_f64();
                let factor = 2f64.powf(doublings.min(4.0));
                let next = rate + self.step_base.max(RATE_FLOOR) * STEP * factor * dt;
                let ceiling = ceiling_rate.unwrap_or(UNLIMITED_CEILING);
                self.learnt_rate = (next < ceiling).then_some(next);
                changed = true;
            }
        }
        if let Some(n) = self.learnt_connections {
            let calm = self
                .last_connection_cut
                .is_none_or(|t| now.duration_since(t) >= CONNECTION_CALM);
            if backlogged && calm {
                self.learnt_connections = (n + 1 < ceiling_connections).then_some(n + 1);
                self.last_connection_cut = Some(now);
                changed = true;
            }
        }
        changed
    }

    /// The coordinator's view: this smurf's share of the farm-wide learnt rate and connection
    /// count (`None`: nothing learnt farm-wide).
    pub fn set_farm(&mut self, rate: Option<f64>, connections: Option<u32>, now: Instant) {
        if let Some(rate) = rate {
            let rate = rate.max(RATE_FLOOR);
            self.learnt_rate = Some(rate);
            self.step_base = rate;
            self.last_step = now;
        }
        if let Some(n) = connections {
            self.learnt_connections = Some(n.max(1));
        }
    }

    /// Applies an operator's rule: suspend until `until`.
    pub fn suspend(&mut self, until: Instant) {
        self.suspended_until = Some(self.suspended_until.map_or(until, |t| t.max(until)));
    }

    /// Applies an operator's rule: caps (this smurf's share) until `until`.
    pub fn cap(&mut self, rate: Option<f64>, connections: Option<u32>, until: Instant) {
        if let Some(rate) = rate {
            self.cap_rate = Some((rate.max(RATE_FLOOR), until));
        }
        if let Some(n) = connections {
            self.cap_connections = Some((n.max(1), until));
        }
    }

    /// The rate in force given the rate `base` from the configured limits (after ramp-up),
    /// `None`: unlimited.
    pub fn rate(&self, base: Option<f64>, now: Instant) -> Option<f64> {
        let mut rate = base;
        let mut lower = |r: f64| rate = Some(rate.map_or(r, |b: f64| b.min(r)));
        if let Some(r) = self.learnt_rate {
            lower(r);
        }
        if let Some((r, until)) = self.cap_rate {
            if until > now {
                lower(r);
            }
        }
        rate
    }

    /// The connection count in force given the configured cap `base`.
    pub fn connections(&self, base: u32, now: Instant) -> u32 {
        let mut n = base;
        if let Some(l) = self.learnt_connections {
            n = n.min(l);
        }
        if let Some((c, until)) = self.cap_connections {
            if until > now {
                n = n.min(c);
            }
        }
        n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_goes_below_what_the_site_accepted_then_climbs_back() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(t0);
        // 25 accepted over the last second at an unlimited rate.
        for i in 0..25 {
            a.on_accepted(t0 + Duration::from_millis(1040 + i * 40));
        }
        let now = t0 + Duration::from_millis(2000);
        assert!(a.cut_rate((None, 4), now, now));
        let cut = a.learnt_rate().unwrap();
        assert!((cut - 25.0 * BETA).abs() < 0.5, "{cut}");
        // Replies to messages sent before the cut change nothing; nor do later ones while the
        // site still takes what we send.
        assert!(!a.cut_rate(
            (None, 4),
            now - Duration::from_millis(1),
            now + Duration::from_millis(5)
        ));
        assert!(!a.cut_rate(
            (Some(cut), 4),
            now + Duration::from_millis(10),
            now + Duration::from_millis(20)
        ));
        assert_eq!(a.throttled, 3);
        // Calm, backlogged, and the rate in use: +STEP of the cut rate per second.
        let later = now + Duration::from_secs(2);
        for i in 0..21 {
            a.on_accepted(later - Duration::from_millis(i * 40));
        }
        assert!(a.tick(later, true, None, 4));
        let grown = a.learnt_rate().unwrap();
        assert!((grown - cut * (1.0 + 2.0 * STEP)).abs() < 1e-6, "{grown}");
        // Not backlogged: no growth; nor when the site took much less than the learnt rate.
        assert!(!a.tick(later + Duration::from_secs(5), false, None, 4));
        assert_eq!(a.learnt_rate(), Some(grown));
        assert!(!a.tick(later + Duration::from_secs(6), true, None, 4));
        assert_eq!(a.learnt_rate(), Some(grown));
        // The configured limit is the ceiling: reaching it lifts the learnt rate.
        let much_later = later + Duration::from_secs(60);
        for i in 0..21 {
            a.on_accepted(much_later - Duration::from_millis(i * 40));
        }
        assert!(a.tick(much_later, true, Some(22.0), 4));
        assert_eq!(a.learnt_rate(), None);
        assert_eq!(a.rate(Some(22.0), later), Some(22.0));
    }

    #[test]
    fn a_young_site_is_cut_from_its_rate_so_far_and_each_flight_cuts_again() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        // A token bucket of 30/s with a burst of 3, configured 100/s: refused at 20 ms.
        let mut a = Adaptive::new(t0);
        for i in 0..3 {
            a.on_accepted(ms(i));
        }
        assert!(a.cut_rate((Some(100.0), 4), ms(15), ms(20)));
        // 3 in the first tenth of a second: 30/s.
        assert!((a.learnt_rate().unwrap() - 30.0 * BETA).abs() < 1e-9);
        // A message sent after that cut and refused too: another cut.
        let learnt = a.learnt_rate();
        assert!(a.cut_rate((learnt, 4), ms(30), ms(40)));
        assert!(a.learnt_rate().unwrap() < learnt.unwrap());
        // A per-second counter (SES) after a burst of 25: refusals for the rest of the second
        // never go below what it took.
        let mut b = Adaptive::new(t0);
        for i in 0..25 {
            b.on_accepted(ms(i));
        }
        assert!(b.cut_rate((None, 4), ms(30), ms(140)));
        let mut now = 150;
        while now < 900 {
            b.cut_rate((b.learnt_rate(), 4), ms(now), ms(now + 5));
            now += 20;
        }
        assert!(
            b.learnt_rate().unwrap() >= 25.0 * BETA - 1e-9,
            "{:?}",
            b.learnt_rate()
        );
    }

    #[test]
    fn a_refusal_before_any_acceptance_was_counted_cuts_from_the_rate_in_force() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(t0);
        assert!(a.cut_rate((Some(100.0), 4), t0, t0 + Duration::from_millis(5)));
        assert_eq!(a.learnt_rate(), Some(100.0 * BETA));
        let mut b = Adaptive::new(t0);
        assert!(b.cut_rate((None, 4), t0, t0 + Duration::from_millis(5)));
        assert_eq!(b.learnt_rate(), Some(4.0 * BETA));
    }

    #[test]
    fn learning_never_goes_above_the_configured_limit() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(t0);
        a.set_farm(Some(80.0), None, t0);
        assert_eq!(a.rate(Some(50.0), t0), Some(50.0));
        assert_eq!(a.rate(None, t0), Some(80.0));
        assert_eq!(a.connections(4, t0), 4);
    }

    #[test]
    fn connections_are_cut_to_the_other_sessions_and_regrow_when_calm() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(t0);
        assert!(a.cut_connections(2, t0));
        assert_eq!(a.connections(8, t0), 2);
        assert!(!a.may_open(t0 + Duration::from_millis(500)));
        assert!(a.may_open(t0 + COOLDOWN));
        // A refusal beside as many sessions changes nothing.
        assert!(!a.cut_connections(2, t0));
        assert!(!a.tick(t0 + Duration::from_secs(5), true, None, 8));
        assert!(a.tick(t0 + CONNECTION_CALM, true, None, 8));
        assert_eq!(a.connections(8, t0 + CONNECTION_CALM), 3);
        assert!(a.cut_connections(0, t0 + CONNECTION_CALM));
        assert_eq!(a.connections(8, t0), 1);
    }

    #[test]
    fn operator_caps_and_suspensions_expire() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(t0);
        let until = t0 + Duration::from_secs(60);
        a.cap(Some(5.0), Some(1), until);
        a.suspend(until);
        assert!(a.suspended(t0));
        assert_eq!(a.rate(Some(50.0), t0), Some(5.0));
        assert_eq!(a.connections(4, t0), 1);
        assert!(a.tick(until, false, Some(50.0), 4));
        assert!(!a.suspended(until));
        assert_eq!(a.rate(Some(50.0), until), Some(50.0));
        assert!(!a.active(until));
    }
}
