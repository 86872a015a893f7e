//! Wire types of farm-wide throttling (issue 11): what a smurf learnt about a site's
//! acceptable rate and connection count, the share of the farm-wide learnt values the
//! coordinator hands back, and the per-site view an operator asks for. Apart from
//! `messages.rs` so that the node-role work there and this merge without conflicts.
//!
//! Rates travel as thousandths of a message per second (integers keep the messages `Eq`).

use serde::{Deserialize, Serialize};

/// Thousandths of a message per second, from messages per second.
pub fn to_milli(rate: f64) -> u64 {
    if rate.is_finite() && rate > 0.0 {
        (rate * 1000.0).round().min(u64::MAX as f64) as u64
    } else {
        0
    }
}

/// Messages per second, from thousandths.
pub fn from_milli(milli: u64) -> f64 {
    milli as f64 / 1000.0
}

/// One site on one smurf, as the smurf reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteThrottle {
    /// The site key (`relay:host:port` or sorted MX host names joined by `,`).
    pub site: String,
    /// This smurf's configured rate (its share), thousandths per second; `None`: unlimited.
    pub configured_milli: Option<u64>,
    /// This smurf's learnt rate, thousandths per second; `None`: nothing learnt.
    pub learnt_milli: Option<u64>,
    /// This smurf's configured connection cap (its share).
    pub configured_connections: u32,
    /// This smurf's learnt connection count; `None`: nothing learnt.
    pub learnt_connections: Option<u32>,
    /// What the site accepted from this smurf over the last second, thousandths per second.
    pub accepted_milli: Option<u64>,
    /// Sessions open now.
    pub connections: u32,
    /// Throttling replies seen so far.
    pub throttled: u64,
    /// The last throttling reply.
    pub last_reply: Option<String>,
    /// The learnt values were just cut (the coordinator should pass it on).
    pub cut: bool,
}

/// This smurf's share of a site's farm-wide learnt values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRate {
    /// The site key.
    pub site: String,
    /// Rate for this smurf, thousandths per second; `None`: leave the rate alone.
    pub rate_milli: Option<u64>,
    /// Connections for this smurf; `None`: leave the count alone.
    pub connections: Option<u32>,
}

/// One site, farm-wide, for `farm sites` and `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteView {
    /// The site key.
    pub site: String,
    /// Sum of the smurfs' configured rates, thousandths per second; `None`: unlimited.
    pub configured_milli: Option<u64>,
    /// Farm-wide learnt rate (sum over smurfs), thousandths per second; `None`: none learnt.
    pub learnt_milli: Option<u64>,
    /// Farm-wide configured connection cap (sum over smurfs).
    pub configured_connections: u32,
    /// Farm-wide learnt connection count; `None`: none learnt.
    pub learnt_connections: Option<u32>,
    /// Sessions open, farm-wide.
    pub connections: u32,
    /// Throttling replies seen, farm-wide.
    pub throttled: u64,
    /// The last throttling reply any smurf saw.
    pub last_reply: Option<String>,
    /// Smurfs reporting the site.
    pub smurfs: u32,
}
