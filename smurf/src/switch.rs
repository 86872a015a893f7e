//! The role switch: which role this smurf holds, and the moves between roles.
//!
//! The coordinator assigns the role ([`Assignment`]); the switch carries it out without
//! restarting the process. Leaving `out`, the node stops taking batches, hands back the
//! recipients it has queued but not started (the coordinator leases them again at once to the
//! other `out` nodes), lets the messages being sent finish and report, and only then starts the
//! new role's service. Leaving another role, it stops that role's service gracefully first.
//! The same hand-back serves `farm drain` and shutdown.
//!
//! The switch lives across links: a reconnect does not restart a role, and the coordinator's
//! assignment on the new link is applied as a change only if it is one.

use mailfarm_protocol::{
    Assignment, InboundCounters, InboundPolicy, InboundRecord, NodeRole, NodeState, NodeStatus,
    ReturnedMail, Unsubscription,
};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::inbound::forward::relay::ForwardOut;
use crate::returned::ReturnedOutbox;
use crate::roles::{RoleServices, Service};

/// What the switch has for the coordinator ([`RoleSwitch::next_out`]).
pub enum SwitchOut {
    /// Accounting records of received mail (may be empty).
    Records(Vec<InboundRecord>),
    /// From the forwarding service.
    Forward(ForwardOut),
}

/// The smurf's role and the service that does its work.
pub struct RoleSwitch {
    /// The role whose work the node does now.
    held: NodeRole,
    /// The role it is switching to, once its `out` work is done.
    target: Option<NodeRole>,
    /// Drain ordered: no new work.
    drain: bool,
    service: Option<Service>,
    services: RoleServices,
    policy: watch::Sender<InboundPolicy>,
    records_tx: mpsc::UnboundedSender<InboundRecord>,
    records_rx: mpsc::UnboundedReceiver<InboundRecord>,
    problem: Option<String>,
    outbox: ReturnedOutbox,
    /// Highest unsubscribe journal position sent on this link.
    unsubscribes_sent: u64,
    /// Notice claims and forward records from the forwarding service, for the link.
    forward_rx: mpsc::UnboundedReceiver<ForwardOut>,
}

impl RoleSwitch {
    /// A node holding `out` until told otherwise, with what its roles need.
    pub fn new(services: RoleServices) -> Self {
        let (records_tx, records_rx) = mpsc::unbounded_channel();
        let outbox = ReturnedOutbox::new(services.returned_dir());
        let (forward_tx, forward_rx) = mpsc::unbounded_channel();
        services.forward().connect(forward_tx);
        Self {
            forward_rx,
            outbox,
            unsubscribes_sent: 0,
            held: NodeRole::Out,
            target: None,
            drain: false,
            service: None,
            services,
            policy: watch::Sender::new(InboundPolicy::default()),
            records_tx,
            records_rx,
            problem: None,
        }
    }

    /// Whether batches of recipients may be queued for sending now.
    pub fn takes_batches(&self) -> bool {
        self.held == NodeRole::Out && self.target.is_none() && !self.drain
    }

    /// The role held, or being switched to.
    pub fn role(&self) -> NodeRole {
        self.target.unwrap_or(self.held)
    }

    /// Applies the coordinator's assignment; returns whether the queued recipients must be
    /// handed back (leaving `out`, or starting to drain). [`settle`](Self::settle) completes a
    /// switch.
    pub fn on_assign(&mut self, assignment: Assignment) -> bool {
        let was_draining = self.drain;
        self.drain = assignment.drain;
        if assignment.role == self.role() {
            let hand_back = self.held == NodeRole::Out && self.drain && !was_draining;
            if hand_back {
                info!(role = %self.held, "draining: handing back queued recipients");
            }
            return hand_back;
        }
        info!(from = %self.role(), to = %assignment.role, "role switch ordered");
        self.target = Some(assignment.role);
        self.held == NodeRole::Out
    }

    /// Finishes a pending switch once the old role's work is done (`owed` recipients still
    /// have no result): stops the old role's service and starts the new one.
    pub async fn settle(&mut self, owed: usize) {
        let Some(target) = self.target else { return };
        if self.held == NodeRole::Out && owed > 0 {
            return;
        }
        if let Some(service) = self.service.take() {
            info!(role = %self.held, "stopping the role's service");
            service.stop().await;
        }
        self.held = target;
        self.target = None;
        self.problem = None;
        if target != NodeRole::Out {
            match self
                .services
                .start(target, self.policy.subscribe(), self.records_tx.clone())
                .await
            {
                Ok(service) => self.service = service,
                Err(problem) => {
                    warn!(role = %target, "the role could not start: {problem}");
                    self.problem = Some(problem);
                }
            }
        }
        info!(role = %self.held, "role switch done");
    }

    /// The status to report, with `owed` recipients still in flight on this node.
    pub fn status(&self, owed: usize) -> NodeStatus {
        let state = if self.target.is_some() {
            NodeState::Starting
        } else if self.drain {
            if owed == 0 || self.held != NodeRole::Out {
                NodeState::Idle
            } else {
                NodeState::Draining
            }
        } else if self.problem.is_some() {
            NodeState::Idle
        } else {
            NodeState::Active
        };
        NodeStatus {
            role: self.role(),
            state,
            serving: self.service.as_ref().and_then(Service::serving),
            problem: self.problem.clone(),
        }
    }

    /// Whether the node drains.
    pub fn draining(&self) -> bool {
        self.drain
    }

    /// The farm's inbound policy (VERP key and domains, local addresses).
    pub fn policy(&self) -> InboundPolicy {
        self.policy.borrow().clone()
    }

    /// Takes the inbound policy (what an `in` node accepts).
    pub fn set_policy(&self, policy: InboundPolicy) {
        self.policy.send_replace(policy);
    }

    /// Inbound counters of this process (all `in` terms added up).
    pub fn inbound_counters(&self) -> InboundCounters {
        self.services.inbound_counters()
    }

    /// A new link: stored returned mail and unsubscribes not acknowledged yet go again.
    pub fn new_link(&mut self) {
        self.services.forward().relinked();
        self.outbox.reset();
        self.unsubscribes_sent = 0;
    }

    /// Unsubscribes the web role recorded durably and this link has not sent yet.
    pub fn next_unsubscribes(&mut self) -> Vec<Unsubscription> {
        let Some(journal) = self.service.as_ref().and_then(Service::journal) else {
            return Vec::new();
        };
        let fresh: Vec<Unsubscription> = journal
            .pending()
            .into_iter()
            .filter(|e| e.seq > self.unsubscribes_sent)
            .map(|e| Unsubscription {
                seq: e.seq,
                resubscribe: e.action == crate::web::Action::Resubscribe,
                campaign_id: e.campaign_id,
                list_id: e.list_id,
                recipient_id: e.recipient_id,
                at_ms: e.at_ms,
            })
            .collect();
        if let Some(last) = fresh.last() {
            self.unsubscribes_sent = last.seq;
        }
        fresh
    }

    /// The coordinator stored the unsubscribes up to `upto`.
    pub async fn unsubscribes_stored(&mut self, upto: u64) {
        if let Some(journal) = self.service.as_ref().and_then(Service::journal) {
            if let Err(e) = journal.acknowledge(upto).await {
                warn!("acknowledging forwarded unsubscribes: {e}");
            }
        }
    }

    /// The coordinator's farm view, for the web role's dashboard.
    pub fn show(&self, view: &mailfarm_protocol::FarmSnapshot) {
        if let Some(service) = &self.service {
            service.show(view);
        }
    }

    /// Stored returned mail to send to the coordinator now.
    pub fn next_returned(&mut self) -> Vec<ReturnedMail> {
        self.outbox.next_batch()
    }

    /// The coordinator stored these returned messages.
    pub fn returned_stored(&mut self, names: &[String]) {
        self.outbox.stored(names);
    }

    /// Applies a forwarding rule update from the coordinator; a gap is an error (the link
    /// drops and the next one starts with a snapshot).
    pub fn forward_rules(
        &self,
        update: mailfarm_protocol::ForwardUpdate,
    ) -> Result<(), mailfarm_protocol::ForwardTableError> {
        self.services.forward().state.write().apply(update)
    }

    /// New shaping rules: the forwarding service's engine follows them too.
    pub fn forward_shaping(&self, update: mailfarm_protocol::ShapingUpdate) {
        self.services.forward().shaping(update);
    }

    /// The coordinator's answers to notice claims.
    pub fn notice_grants(&self, grants: Vec<mailfarm_protocol::NoticeGrant>) {
        self.services.forward().grants(grants);
    }

    /// The next accounting records, or forwarding claims and records, for the coordinator.
    pub async fn next_out(&mut self) -> SwitchOut {
        let first = tokio::select! {
            Some(first) = self.records_rx.recv() => first,
            Some(out) = self.forward_rx.recv() => return SwitchOut::Forward(out),
        };
        let mut records = vec![first];
        while records.len() < 512 {
            match self.records_rx.try_recv() {
                Ok(record) => records.push(record),
                Err(_) => break,
            }
        }
        SwitchOut::Records(records)
    }

    /// Stops the role's service (smurf shutdown).
    pub async fn shutdown(&mut self) {
        if let Some(service) = self.service.take() {
            service.stop().await;
        }
    }
}
