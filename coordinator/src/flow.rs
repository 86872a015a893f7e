//! Per-domain flow control of leasing, so that a slow destination cannot take the whole farm's
//! credit.
//!
//! Each smurf holds at most its window of recipients. Without this module, a campaign heavy in
//! a domain the smurfs may only send to slowly (a 50/s shaping limit, a throttling receiver)
//! would fill every window with that domain's recipients, and every other domain would wait.
//! So the coordinator caps the recipients of each domain in flight at what that domain has
//! recently been able to absorb: `max(64, completions per second × 3 s)`, learnt from results
//! as they come (like a congestion window). Recipients over their domain's cap are parked on
//! the coordinator, not leased.

use std::collections::HashMap;
use std::time::Instant;

use mailfarm_protocol::RecipientData;

/// Recipients of a domain that may always be in flight, whatever its measured rate.
pub const MIN_IN_FLIGHT: u32 = 64;
/// Seconds of a domain's measured throughput allowed in flight.
const HORIZON_SECS: f64 = 3.0;
/// Domains tracked before idle ones are forgotten.
const MAX_DOMAINS: usize = 100_000;

#[derive(Debug)]
struct DomainFlow {
    in_flight: u32,
    rate: f64,
    window_start: Instant,
    completed: u32,
}

impl DomainFlow {
    fn new() -> Self {
        Self {
            in_flight: 0,
            rate: 0.0,
            window_start: Instant::now(),
            completed: 0,
        }
    }

    fn cap(&self) -> u32 {
        let learnt = (self.rate * HORIZON_SECS).ceil();
        MIN_IN_FLIGHT.max(learnt.min(f64::from(u32::MAX)) as u32)
    }
}

/// In-flight counts and measured rates of every destination domain.
#[derive(Debug, Default)]
pub struct DomainFlows {
    map: HashMap<String, DomainFlow>,
}

/// The lower-cased domain of a recipient's address.
pub fn domain_of(data: &RecipientData, email_field: usize) -> String {
    data.values
        .get(email_field)
        .map_or_else(String::new, |e| mailfarm_templates::address::domain_of(e))
}

impl DomainFlows {
    /// Whether one more recipient of `domain` may be leased.
    pub fn has_room(&self, domain: &str) -> bool {
        self.map.get(domain).is_none_or(|f| f.in_flight < f.cap())
    }

    /// Counts a recipient of `domain` leased.
    pub fn leased(&mut self, domain: &str) {
        if self.map.len() >= MAX_DOMAINS && !self.map.contains_key(domain) {
            self.map.retain(|_, f| f.in_flight > 0);
        }
        self.map
            .entry(domain.to_owned())
            .or_insert_with(DomainFlow::new)
            .in_flight += 1;
    }

    /// Counts a recipient of `domain` back: with `attempted`, it got a result (which feeds the
    /// rate); otherwise it was handed back unsent.
    pub fn returned(&mut self, domain: &str, attempted: bool) {
        let Some(flow) = self.map.get_mut(domain) else {
            return;
        };
        flow.in_flight = flow.in_flight.saturating_sub(1);
        if !attempted {
            return;
        }
        flow.completed += 1;
        let elapsed = flow.window_start.elapsed().as_secs_f64();
        if elapsed >= 1.0 {
            let instant = f64::from(flow.completed) / elapsed;
            flow.rate = if flow.rate == 0.0 {
                instant
            } else {
                0.7 * flow.rate + 0.3 * instant
            };
            flow.completed = 0;
            flow.window_start = Instant::now();
        }
    }

    /// The current cap of a domain.
    #[cfg(test)]
    pub fn cap(&self, domain: &str) -> u32 {
        self.map.get(domain).map_or(MIN_IN_FLIGHT, DomainFlow::cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_domain_gets_the_minimum_then_what_it_absorbs() {
        let mut flows = DomainFlows::default();
        for _ in 0..MIN_IN_FLIGHT {
            assert!(flows.has_room("slow.example"));
            flows.leased("slow.example");
        }
        assert!(!flows.has_room("slow.example"), "capped at the minimum");
        assert!(flows.has_room("other.example"), "other domains unaffected");
        // 64 completions within about a second: the cap grows to ~3 s of that.
        for _ in 0..63 {
            flows.returned("slow.example", true);
        }
        if let Some(f) = flows.map.get_mut("slow.example") {
            f.window_start = Instant::now() - std::time::Duration::from_secs(1);
        }
        flows.returned("slow.example", true);
        assert!(
            flows.cap("slow.example") >= 150,
            "{}",
            flows.cap("slow.example")
        );
        flows.leased("slow.example");
        flows.returned("slow.example", false);
        assert_eq!(flows.map["slow.example"].in_flight, 0);
    }

    #[test]
    fn domain_is_taken_from_the_email_field() {
        let data = RecipientData {
            id: 1,
            values: vec!["x".into(), "A.B@Example.ORG".into()],
        };
        assert_eq!(domain_of(&data, 1), "example.org");
        assert_eq!(domain_of(&data, 5), "");
    }
}
