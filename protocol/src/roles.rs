//! Node roles: what a smurf does at a given moment, and the messages that move it between roles.
//!
//! A smurf holds one [`NodeRole`] at a time. The coordinator owns the assignment (durably) and
//! sends it as an [`Assignment`] on every link; the smurf finishes or hands back the work of its
//! old role, starts the new one and reports where it stands as a [`NodeStatus`]. The types live
//! here, beside the other wire types, so that the switch's rules are tested without sockets.

use serde::{Deserialize, Serialize};

/// What a smurf does.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Sends campaigns (the default role of a new node).
    #[default]
    Out,
    /// Receives mail as the farm's inbound MX: bounces to VERP return paths, postmaster and
    /// abuse mail, replies.
    In,
    /// Processes bounces and complaints.
    Bounce,
    /// Serves HTTP: one-click unsubscribe and the dashboard.
    Web,
}

impl NodeRole {
    /// Every role, in display order.
    pub const ALL: [NodeRole; 4] = [NodeRole::Out, NodeRole::In, NodeRole::Bounce, NodeRole::Web];

    /// Lower-case name, as the CLI and config files spell it.
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeRole::Out => "out",
            NodeRole::In => "in",
            NodeRole::Bounce => "bounce",
            NodeRole::Web => "web",
        }
    }
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of `out`, `in`, `bounce`, `web`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected one of out, in, bounce, web")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for NodeRole {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeRole::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// Where a node stands in its role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Switching: finishing or handing back the old role's work, starting the new one.
    #[default]
    Starting,
    /// Doing its role's work.
    Active,
    /// Told to drain: takes no new work, finishes what it holds.
    Draining,
    /// Drained, or holds a role with nothing to do: may be stopped or reassigned.
    Idle,
}

impl NodeState {
    /// Lower-case name for display.
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeState::Starting => "starting",
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Idle => "idle",
        }
    }
}

/// The coordinator's word on what a node does: sent after the welcome and whenever it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The role to hold.
    pub role: NodeRole,
    /// Take no new work, hand back what is queued, finish what is being done (`farm drain`).
    pub drain: bool,
}

/// A smurf's report of its role and state, sent whenever either changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The role the node holds (or is switching to, while [`NodeState::Starting`]).
    pub role: NodeRole,
    /// Where it stands.
    pub state: NodeState,
    /// The address it serves in its role (`in`: SMTP, `web`: HTTP), if any.
    pub serving: Option<String>,
    /// Why the role could not start, if it could not.
    pub problem: Option<String>,
}

/// What an `in` node accepts, decided at RCPT time; sent to every node so that one switched to
/// `in` has it at once, and again whenever it changes (a campaign with a new bounce domain).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundPolicy {
    /// Key of the signed VERP return paths.
    pub verp_key: Vec<u8>,
    /// Domains of the VERP return paths (the campaigns' bounce domains), lower case.
    pub bounce_domains: Vec<String>,
    /// Addresses kept for the operator (postmaster@ and abuse@ of the farm's domains, the
    /// campaigns' Reply-To addresses, configured ones), lower case.
    pub local_addresses: Vec<String>,
    /// Forwarded addresses, lower case (the forwarding feature fills this).
    pub forwarded: Vec<String>,
}

/// Cumulative counters of an `in` node since its process started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundCounters {
    /// SMTP sessions accepted.
    pub sessions: u64,
    /// Messages received and stored (each got a 250).
    pub received: u64,
    /// Of those, kept for the operator (local addresses).
    pub kept: u64,
    /// Of those, stored for bounce processing (VERP return paths).
    pub to_bounce: u64,
    /// Of those, for forwarded addresses.
    pub forwarded: u64,
    /// Refusals by reason (`relay`, `unknown-user`, `forged-verp`, `size`, `limits`, ...).
    pub refused: Vec<(String, u64)>,
    /// Forwarded messages delivered to their new address (one per old recipient).
    pub forward_delivered: u64,
    /// Forwarded messages that failed for good.
    pub forward_failed: u64,
    /// Change-of-address notices sent (accepted by the sender's server).
    pub notices_sent: u64,
    /// Notices not sent, by reason (`null-sender`, `auto-submitted`, `precedence`, `list-id`,
    /// `already-sent`, `no-notice-list`, `failed`).
    pub notices_suppressed: Vec<(String, u64)>,
}

/// Adds `other`'s counts to `into`, by name, keeping them sorted.
fn add_named(into: &mut Vec<(String, u64)>, other: &[(String, u64)]) {
    for (reason, n) in other {
        match into.iter_mut().find(|(r, _)| r == reason) {
            Some((_, total)) => *total += n,
            None => into.push((reason.clone(), *n)),
        }
    }
    into.sort();
}

/// What `now` gained over `earlier`, by name.
fn named_since(now: &[(String, u64)], earlier: &[(String, u64)]) -> Vec<(String, u64)> {
    now.iter()
        .map(|(reason, n)| {
            let before = earlier
                .iter()
                .find(|(r, _)| r == reason)
                .map_or(0, |(_, b)| *b);
            (reason.clone(), n.saturating_sub(before))
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

impl InboundCounters {
    /// Adds `other` to these counters.
    pub fn add(&mut self, other: &InboundCounters) {
        self.sessions += other.sessions;
        self.received += other.received;
        self.kept += other.kept;
        self.to_bounce += other.to_bounce;
        self.forwarded += other.forwarded;
        self.forward_delivered += other.forward_delivered;
        self.forward_failed += other.forward_failed;
        self.notices_sent += other.notices_sent;
        add_named(&mut self.refused, &other.refused);
        add_named(&mut self.notices_suppressed, &other.notices_suppressed);
    }

    /// What these counters gained since `earlier` (counters only grow; a restart resets them,
    /// and then everything counts as new).
    pub fn since(&self, earlier: &InboundCounters) -> InboundCounters {
        if self.received < earlier.received || self.sessions < earlier.sessions {
            return self.clone();
        }
        InboundCounters {
            sessions: self.sessions - earlier.sessions,
            received: self.received - earlier.received,
            kept: self.kept.saturating_sub(earlier.kept),
            to_bounce: self.to_bounce.saturating_sub(earlier.to_bounce),
            forwarded: self.forwarded.saturating_sub(earlier.forwarded),
            refused: named_since(&self.refused, &earlier.refused),
            forward_delivered: self
                .forward_delivered
                .saturating_sub(earlier.forward_delivered),
            forward_failed: self.forward_failed.saturating_sub(earlier.forward_failed),
            notices_sent: self.notices_sent.saturating_sub(earlier.notices_sent),
            notices_suppressed: named_since(&self.notices_suppressed, &earlier.notices_suppressed),
        }
    }

    /// Total notices suppressed.
    pub fn notices_suppressed_total(&self) -> u64 {
        self.notices_suppressed.iter().map(|(_, n)| n).sum()
    }

    /// Total refusals.
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().map(|(_, n)| n).sum()
    }
}

/// One message an `in` node accepted, for the coordinator's accounting log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundRecord {
    /// When it was stored, ms since the Unix epoch.
    pub time_ms: u64,
    /// The client's IP address.
    pub client: String,
    /// Envelope sender (empty for the null sender).
    pub mail_from: String,
    /// Envelope recipients.
    pub rcpt_to: Vec<String>,
    /// What it is: `bounce`, `local` or `forward`.
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Name of the stored file.
    pub stored_as: String,
}

/// The whole farm at a glance: `farm watch` polls it every second.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarmSnapshot {
    /// Milliseconds since the Unix epoch, on the coordinator.
    pub time_ms: u64,
    /// Every known node.
    pub nodes: Vec<crate::NodeInfo>,
    /// Inbound counters summed over every `in` node since the coordinator started.
    pub inbound: InboundCounters,
    /// Every campaign's counters.
    pub campaigns: Vec<crate::CampaignCounters>,
    /// Returned messages waiting for a `bounce` node.
    pub bounce_queue: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_from_their_names_only() {
        for role in NodeRole::ALL {
            assert_eq!(role.as_str().parse::<NodeRole>(), Ok(role));
        }
        assert_eq!(" IN ".parse::<NodeRole>(), Ok(NodeRole::In));
        assert!("sender".parse::<NodeRole>().is_err());
        assert!("".parse::<NodeRole>().is_err());
    }

    #[test]
    fn counters_add_and_difference() {
        let a = InboundCounters {
            sessions: 3,
            received: 10,
            kept: 4,
            to_bounce: 6,
            forwarded: 0,
            refused: vec![("relay".into(), 2)],
            notices_suppressed: vec![("null-sender".into(), 1)],
            ..Default::default()
        };
        let b = InboundCounters {
            sessions: 5,
            received: 15,
            kept: 5,
            to_bounce: 10,
            forwarded: 0,
            refused: vec![("forged-verp".into(), 1), ("relay".into(), 3)],
            notices_sent: 2,
            notices_suppressed: vec![("auto-submitted".into(), 1), ("null-sender".into(), 3)],
            ..Default::default()
        };
        let delta = b.since(&a);
        assert_eq!(delta.received, 5);
        assert_eq!(delta.to_bounce, 4);
        assert_eq!(
            delta.refused,
            vec![("forged-verp".into(), 1), ("relay".into(), 1)]
        );
        assert_eq!(delta.notices_sent, 2);
        assert_eq!(
            delta.notices_suppressed,
            vec![("auto-submitted".into(), 1), ("null-sender".into(), 2)]
        );
        let mut total = a.clone();
        total.add(&delta);
        assert_eq!(total, b);
        // A restarted node starts from zero: all of it is new.
        let restarted = InboundCounters {
            received: 1,
            ..Default::default()
        };
        assert_eq!(restarted.since(&b), restarted);
    }
}
