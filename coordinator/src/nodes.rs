//! The farm's nodes: who is connected, which role each holds, where it stands in it, and how
//! much sending work each may take.
//!
//! Roles are the coordinator's to give: an assignment is stored durably (a node that reconnects,
//! or a coordinator restarted with kill -9, finds the same role), sent to the node on every link,
//! and changed with `farm assign`. Only connected `out` nodes that report themselves active and
//! are not draining get leases, and the farm-wide limits are shared among exactly those.

use mailfarm_protocol::{
    Assignment, CampaignState, FarmSnapshot, InboundCounters, InboundPolicy, NodeInfo, NodeRole,
    NodeState, NodeStatus, ShapingUpdate, SmurfLoad,
};
use tracing::info;

use crate::farm::{now_ms, Farm, FarmError};

/// One node as the coordinator knows it; kept after it disconnects, with its assignment.
#[derive(Debug, Default)]
pub(crate) struct Node {
    pub(crate) name: String,
    /// Open links of this node (a reconnect may overlap the old link's end).
    pub(crate) links: u32,
    pub(crate) window: u32,
    pub(crate) draining: bool,
    pub(crate) role: NodeRole,
    pub(crate) state: NodeState,
    pub(crate) version: String,
    pub(crate) serving: Option<String>,
    pub(crate) problem: Option<String>,
    pub(crate) load: SmurfLoad,
    pub(crate) results: u64,
}

impl Node {
    /// Whether the node takes sending work now.
    pub(crate) fn leasable(&self) -> bool {
        self.links > 0 && self.role == NodeRole::Out && self.state == NodeState::Active
    }

    /// Whether the node counts in the farm's sending capacity (shares of the limits).
    fn sending(&self) -> bool {
        self.links > 0 && self.role == NodeRole::Out && !self.draining
    }
}

impl Farm {
    /// Loads the stored assignments: known nodes appear (disconnected) with their roles.
    pub(crate) fn load_nodes(&self) -> Result<(), FarmError> {
        let roles = self.store().node_roles()?;
        let mut state = self.lock();
        for (name, role) in roles {
            if !state.nodes.iter().any(|n| n.name == name) {
                state.nodes.push(Node {
                    name,
                    role,
                    state: NodeState::Idle,
                    ..Node::default()
                });
            }
        }
        Ok(())
    }

    /// Records that a smurf joined; returns its assignment. A node never seen before gets the
    /// role its config names (`initial_role`), else `out`, and that is stored.
    pub fn smurf_joined(
        &self,
        node: &str,
        window: u32,
        initial_role: Option<NodeRole>,
        version: &str,
    ) -> Result<Assignment, FarmError> {
        let (assignment, new_role) = {
            let mut state = self.lock();
            let new_role = match state.nodes.iter_mut().find(|n| n.name == node) {
                Some(n) => {
                    n.links += 1;
                    n.window = window;
                    n.version = version.to_owned();
                    n.state = NodeState::Starting;
                    None
                }
                None => {
                    let role = initial_role.unwrap_or_default();
                    state.nodes.push(Node {
                        name: node.to_owned(),
                        links: 1,
                        window,
                        role,
                        version: version.to_owned(),
                        ..Node::default()
                    });
                    Some(role)
                }
            };
            let n = state.nodes.iter().find(|n| n.name == node);
            let assignment = n.map(|n| Assignment {
                role: n.role,
                drain: n.draining,
            });
            (assignment.unwrap_or_default(), new_role)
        };
        if let Some(role) = new_role {
            self.store().set_node_role(node, role)?;
        }
        self.reshape();
        Ok(assignment)
    }

    /// Records that one link of a smurf ended.
    pub fn smurf_left(&self, node: &str) {
        {
            let mut state = self.lock();
            if let Some(n) = state.nodes.iter_mut().find(|n| n.name == node) {
                n.links = n.links.saturating_sub(1);
                if n.links == 0 {
                    n.state = NodeState::Idle;
                    n.serving = None;
                }
            }
        }
        self.reshape();
    }

    /// The role `node` must hold now, and whether it drains.
    pub fn assignment(&self, node: &str) -> Assignment {
        self.lock()
            .nodes
            .iter()
            .find(|n| n.name == node)
            .map(|n| Assignment {
                role: n.role,
                drain: n.draining,
            })
            .unwrap_or_default()
    }

    /// Moves `node` to `role`, durably; it is told at once if connected. Taking away the last
    /// sending `out` node while a campaign is sending needs `force`.
    pub fn assign(&self, node: &str, role: NodeRole, force: bool) -> Result<String, FarmError> {
        {
            let mut state = self.lock();
            let now = now_ms();
            let Some(me) = state.nodes.iter().find(|n| n.name == node) else {
                return Err(FarmError::UnknownNode(node.to_owned()));
            };
            if me.role == role {
                return Ok(format!("{node} already holds the {role} role"));
            }
            let others_sending = state
                .nodes
                .iter()
                .filter(|n| n.name != node && n.sending())
                .count();
            let sending_campaign = state
                .campaigns
                .values()
                .find(|l| {
                    l.state(now) == CampaignState::Running
                        && l.counters.queued + l.counters.in_flight > 0
                })
                .map(|l| l.counters.id.clone());
            if me.role == NodeRole::Out && others_sending == 0 && !force {
                if let Some(campaign) = sending_campaign {
                    return Err(FarmError::LastSender {
                        node: node.to_owned(),
                        campaign,
                    });
                }
            }
            self.store().set_node_role(node, role)?;
            if let Some(n) = state.nodes.iter_mut().find(|n| n.name == node) {
                n.role = role;
                n.draining = false;
                if n.links > 0 {
                    n.state = NodeState::Starting;
                }
                n.serving = None;
                n.problem = None;
            }
        }
        info!(%node, %role, "node assigned");
        self.signal_nodes();
        self.signal_work();
        self.reshape();
        Ok(format!(
            "{node} assigned to {role}; `farm nodes` shows when it is active"
        ))
    }

    /// Marks a node draining (or not). Returns false when no such node is known.
    pub fn set_draining(&self, node: &str, draining: bool) -> bool {
        let found = {
            let mut state = self.lock();
            let mut found = false;
            for n in state.nodes.iter_mut().filter(|n| n.name == node) {
                n.draining = draining;
                found = true;
            }
            found
        };
        self.signal_nodes();
        self.signal_work();
        self.reshape();
        found
    }

    /// Whether a node is draining (or the coordinator is stopping).
    pub fn is_draining(&self, node: &str) -> bool {
        let state = self.lock();
        state.draining || state.nodes.iter().any(|n| n.name == node && n.draining)
    }

    /// Takes a node's report of its role and state.
    pub fn report_status(&self, node: &str, status: NodeStatus) {
        {
            let mut state = self.lock();
            let Some(n) = state.nodes.iter_mut().find(|n| n.name == node) else {
                return;
            };
            // A report about another role is stale (the assignment changed since).
            if status.role != n.role {
                return;
            }
            n.state = status.state;
            n.serving = status.serving;
            n.problem = status.problem;
        }
        self.signal_work();
        self.reshape();
    }

    /// Stores a smurf's load report; inbound counters are added to the farm's totals.
    pub fn report_load(&self, node: &str, load: SmurfLoad) {
        let mut state = self.lock();
        let Some(n) = state.nodes.iter_mut().find(|n| n.name == node) else {
            return;
        };
        let delta = load.inbound.since(&n.load.inbound);
        n.load = load;
        state.inbound.add(&delta);
    }

    /// The shaping update for `node`: the rules and an equal share among the sending nodes.
    pub fn shaping_for(&self, node: &str) -> ShapingUpdate {
        let toml = self.shaping_text();
        let state = self.lock();
        let active = state.nodes.iter().filter(|n| n.sending()).count();
        let me_counted = state.nodes.iter().any(|n| n.name == node && n.sending());
        ShapingUpdate {
            toml,
            share_numerator: 1,
            share_denominator: u32::try_from(active + usize::from(!me_counted))
                .unwrap_or(u32::MAX)
                .max(1),
        }
    }

    /// Names of the smurfs connected now.
    pub fn smurfs(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .lock()
            .nodes
            .iter()
            .filter(|n| n.links > 0)
            .map(|n| n.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Every known node with its figures.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let state = self.lock();
        let mut held: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
        for f in state.in_flight.values() {
            *held.entry(&*f.node).or_default() += 1;
        }
        let mut nodes: Vec<NodeInfo> = state
            .nodes
            .iter()
            .map(|n| NodeInfo {
                node: n.name.clone(),
                connected: n.links > 0,
                role: n.role,
                state: if n.links > 0 && n.draining && n.state == NodeState::Active {
                    NodeState::Draining
                } else {
                    n.state
                },
                version: n.version.clone(),
                serving: n.serving.clone(),
                problem: n.problem.clone(),
                in_flight: held.get(n.name.as_str()).copied().unwrap_or(0),
                window: n.window,
                draining: n.draining,
                load: n.load.clone(),
                results: n.results,
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        nodes
    }

    /// Inbound counters summed over every `in` node since this coordinator started.
    pub fn inbound_totals(&self) -> InboundCounters {
        self.lock().inbound.clone()
    }

    /// What `in` nodes accept: VERP mail for the campaigns' bounce domains, postmaster@ and
    /// abuse@ of those domains, the campaigns' Reply-To addresses and `extra_local`.
    pub fn inbound_policy(&self, verp_key: &[u8], extra_local: &[String]) -> InboundPolicy {
        let state = self.lock();
        let mut domains: Vec<String> = state
            .campaigns
            .values()
            .map(|l| l.bundle.bounce_domain.to_ascii_lowercase())
            .collect();
        domains.sort();
        domains.dedup();
        let mut local: Vec<String> = domains
            .iter()
            .flat_map(|d| [format!("postmaster@{d}"), format!("abuse@{d}")])
            .chain(
                state
                    .campaigns
                    .values()
                    .filter_map(|l| l.bundle.reply_to.as_deref().map(address_of)),
            )
            .chain(extra_local.iter().map(|a| a.trim().to_ascii_lowercase()))
            .collect();
        local.sort();
        local.dedup();
        InboundPolicy {
            verp_key: verp_key.to_vec(),
            bounce_domains: domains,
            local_addresses: local,
            forwarded: Vec::new(),
        }
    }

    /// The whole farm at a glance.
    pub fn snapshot(&self) -> FarmSnapshot {
        FarmSnapshot {
            time_ms: now_ms(),
            nodes: self.nodes(),
            inbound: self.inbound_totals(),
            campaigns: self.all_counters(),
            bounce_queue: self.bounce_depth(),
        }
    }
}

/// The bare address of a header value such as `"News" <news@example.net>`, lower case.
fn address_of(value: &str) -> String {
    let inner = match (value.rfind('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        _ => value,
    };
    inner.trim().to_ascii_lowercase()
}

/// Balances by what smurfs report: a node whose delivery queue is more than twice the
/// average of the others', or whose CPU is saturated, gets smaller leases, so work flows to the
/// nodes that keep up (the credit window alone only bounds what a node holds).
pub(crate) fn load_adjusted(nodes: &[Node], node: &str, max: usize) -> usize {
    let Some(me) = nodes.iter().find(|n| n.name == node) else {
        return max;
    };
    let others: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.name != node && n.sending())
        .collect();
    let mut max = max;
    if me.load.cpu_percent >= 95 {
        max = max.div_ceil(2);
    }
    if !others.is_empty() {
        let average =
            others.iter().map(|n| u64::from(n.load.queued)).sum::<u64>() / others.len() as u64;
        if u64::from(me.load.queued) > 2 * average.max(16) {
            max = max.div_ceil(4);
        }
    }
    max.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overloaded_node_gets_smaller_leases() {
        let node = |name: &str, queued: u32, cpu: u16| Node {
            name: name.into(),
            links: 1,
            window: 100,
            load: SmurfLoad {
                queued,
                cpu_percent: cpu,
                ..SmurfLoad::default()
            },
            ..Node::default()
        };
        let nodes = vec![node("a", 400, 50), node("b", 20, 50), node("c", 10, 99)];
        assert_eq!(load_adjusted(&nodes, "a", 128), 32);
        assert_eq!(load_adjusted(&nodes, "b", 128), 128);
        assert_eq!(load_adjusted(&nodes, "c", 128), 64);
    }

    #[test]
    fn reply_to_addresses_are_bare_and_lower_case() {
        assert_eq!(
            address_of("\"News\" <News@Example.NET>"),
            "news@example.net"
        );
        assert_eq!(address_of(" replies@example.net "), "replies@example.net");
    }
}
