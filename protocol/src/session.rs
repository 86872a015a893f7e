//! Session state of a smurf link, one machine per side, with no I/O.
//!
//! [`CoordinatorLink`] is the coordinator's view of one smurf: has it said hello, which
//! templates it holds, which recipients it has in flight and how much window is left.
//! [`SmurfLink`] is the smurf's view of the coordinator: has it been welcomed, which templates
//! it was given, how many recipients it owes results for. Each side checks the other's moves,
//! so a confused or hostile peer is caught as a [`ProtocolError`] instead of corrupting state.

use std::collections::{HashSet, VecDeque};

use crate::{
    ContentHash, CoordinatorMessage, Hello, HelloReply, ProtocolError, RecipientBatch,
    RecipientData, RecipientResult, Role, SmurfMessage, TemplateBundle, PROTOCOL_VERSION,
};

/// Coordinator-side state of one smurf link.
#[derive(Debug, Default)]
pub struct CoordinatorLink {
    node: Option<String>,
    window: usize,
    templates_held: HashSet<ContentHash>,
    in_flight: HashSet<u64>,
    closing: bool,
}

impl CoordinatorLink {
    /// A link whose hello has not arrived yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles the smurf's hello; `certified_node` is the node name its certificate proves
    /// (checked by the caller). Returns the reply to send; a refusal is also an error.
    pub fn on_hello(
        &mut self,
        hello: Hello,
        certified_node: impl Fn(&str) -> bool,
    ) -> Result<HelloReply, (HelloReply, ProtocolError)> {
        crate::error::check_hello(self.node.is_some(), &hello)?;
        let Role::Smurf {
            node,
            window,
            templates_held,
            ..
        } = hello.role
        else {
            return Err(crate::error::refusal(ProtocolError::Unexpected {
                message: "operator hello",
                state: "expecting a smurf",
            }));
        };
        if !certified_node(&node) {
            return Err(crate::error::refusal(ProtocolError::Refused(format!(
                "node name {node:?} is not the name in the client certificate"
            ))));
        }
        self.window = (window as usize).max(1);
        self.templates_held = templates_held.into_iter().collect();
        self.node = Some(node.clone());
        Ok(HelloReply::Welcome {
            version: PROTOCOL_VERSION,
            name: node,
        })
    }

    /// The node name, once the hello was accepted.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// How many more recipients may be sent now.
    pub fn credit(&self) -> usize {
        if self.node.is_none() || self.closing {
            return 0;
        }
        self.window.saturating_sub(self.in_flight.len())
    }

    /// Recipients in flight on this link.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether the smurf already holds a template.
    pub fn holds(&self, hash: &ContentHash) -> bool {
        self.templates_held.contains(hash)
    }

    /// Builds the messages that send `recipients` with `bundle`: the bundle first if the smurf
    /// lacks it, then the batch. The caller must not pass more than [`Self::credit`] recipients.
    pub fn dispatch(
        &mut self,
        bundle: &TemplateBundle,
        recipients: Vec<RecipientData>,
    ) -> Result<Vec<CoordinatorMessage>, ProtocolError> {
        if self.node.is_none() {
            return Err(ProtocolError::Unexpected {
                message: "dispatch",
                state: "awaiting hello",
            });
        }
        if recipients.len() > self.credit() {
            return Err(ProtocolError::WindowOverrun {
                in_flight: self.in_flight.len() + recipients.len(),
                window: self.window,
            });
        }
        let mut out = Vec::with_capacity(2);
        if self.templates_held.insert(bundle.hash) {
            out.push(CoordinatorMessage::Template(Box::new(bundle.clone())));
        }
        self.in_flight.extend(recipients.iter().map(|r| r.id));
        out.push(CoordinatorMessage::Batch(RecipientBatch {
            template: bundle.hash,
            recipients,
        }));
        Ok(out)
    }

    /// Accounts for results; every id must be in flight on this link.
    pub fn on_results(&mut self, results: &[RecipientResult]) -> Result<(), ProtocolError> {
        if let Some(unknown) = results.iter().find(|r| !self.in_flight.contains(&r.id)) {
            return Err(ProtocolError::UnknownRecipient(unknown.id));
        }
        for result in results {
            self.in_flight.remove(&result.id);
        }
        Ok(())
    }

    /// Accounts for recipients the smurf gives back unattempted; every id must be in flight on
    /// this link. The caller requeues them.
    pub fn on_hand_back(&mut self, ids: &[u64]) -> Result<(), ProtocolError> {
        if let Some(unknown) = ids.iter().find(|id| !self.in_flight.contains(id)) {
            return Err(ProtocolError::UnknownRecipient(*unknown));
        }
        for id in ids {
            self.in_flight.remove(id);
        }
        Ok(())
    }

    /// The template is gone from the smurf (campaign over): forget that it holds it.
    pub fn forget(&mut self, hash: &ContentHash) {
        self.templates_held.remove(hash);
    }

    /// Forgets every held template whose campaign has ended (`is_live` says false) and returns
    /// the [`CoordinatorMessage::Forget`]s that tell the smurf to drop them and their files.
    pub fn forget_ended(
        &mut self,
        mut is_live: impl FnMut(&ContentHash) -> bool,
    ) -> Vec<CoordinatorMessage> {
        let mut ended: Vec<ContentHash> = self
            .templates_held
            .iter()
            .filter(|hash| !is_live(hash))
            .copied()
            .collect();
        ended.sort();
        for hash in &ended {
            self.templates_held.remove(hash);
        }
        ended.into_iter().map(CoordinatorMessage::Forget).collect()
    }

    /// Stops new work on this link (the smurf said goodbye or the coordinator is draining).
    pub fn close(&mut self) {
        self.closing = true;
    }

    /// Takes every recipient still in flight, for re-queueing when the link is lost.
    pub fn take_in_flight(&mut self) -> Vec<u64> {
        self.in_flight.drain().collect()
    }
}

/// What the smurf must do after a coordinator message.
#[derive(Debug, PartialEq, Eq)]
pub enum SmurfLinkEvent {
    /// Compile and keep this template.
    Template(Box<TemplateBundle>),
    /// Render and send these recipients.
    Batch(RecipientBatch),
    /// Drop this template.
    Forget(ContentHash),
    /// Apply new shaping rules or share.
    Shaping(crate::ShapingUpdate),
    /// The oldest unacknowledged results frame is committed.
    ResultsCommitted,
    /// Hold this role (and drain, or not).
    Assign(crate::Assignment),
    /// What to accept when holding the `in` role.
    InboundPolicy(crate::InboundPolicy),
    /// The coordinator has these returned messages: delete the local copies.
    ReturnedStored(Vec<String>),
    /// Returned messages to analyse (the `bounce` role).
    BounceWork(Vec<crate::BounceJob>),
    /// The coordinator stored the unsubscribes up to this journal position.
    UnsubscribesStored(u64),
    /// The farm at a glance, for the dashboard (the `web` role).
    FarmView(Box<crate::FarmSnapshot>),
    /// This smurf's share of sites' farm-wide learnt values.
    SiteRates(Vec<crate::throttle::SiteRate>),
    /// A forwarding rule update: apply it to the node's [`crate::ForwardTable`] (a gap there
    /// ends the link; the next one starts with a snapshot).
    ForwardRules(crate::ForwardUpdate),
    /// Answers to notice claims.
    NoticeGrants(Vec<crate::NoticeGrant>),
}

/// Smurf-side state of the link to the coordinator. It lives across links: templates and
/// results frames not yet acknowledged as committed survive a reconnect.
#[derive(Debug)]
pub struct SmurfLink {
    welcomed: bool,
    window: usize,
    templates: HashSet<ContentHash>,
    owed: usize,
    /// Results frames sent and not yet acknowledged (`ResultsCommitted`), oldest first; sent
    /// again as late results on the next link if this one drops.
    unacked: VecDeque<Vec<RecipientResult>>,
}

impl SmurfLink {
    /// A link that will announce `window` and the templates the smurf already holds.
    pub fn new(window: u32, templates_held: impl IntoIterator<Item = ContentHash>) -> Self {
        Self {
            welcomed: false,
            window: window.max(1) as usize,
            templates: templates_held.into_iter().collect(),
            owed: 0,
            unacked: VecDeque::new(),
        }
    }

    /// The hello to send first; it announces the results held from earlier links.
    /// `initial_role` is the role the smurf's config names (used only when the coordinator has
    /// no assignment for it yet).
    pub fn hello(
        &self,
        node: &str,
        initial_role: Option<crate::NodeRole>,
        software: &str,
    ) -> Hello {
        let held_results = u32::try_from(self.held_results()).unwrap_or(u32::MAX);
        let mut held: Vec<ContentHash> = self.templates.iter().copied().collect();
        held.sort();
        Hello {
            version: PROTOCOL_VERSION,
            role: Role::Smurf {
                node: node.to_owned(),
                window: self.window as u32,
                templates_held: held,
                held_results,
                initial_role,
                software: software.to_owned(),
            },
        }
    }

    /// Handles the coordinator's answer to the hello.
    pub fn on_hello_reply(&mut self, reply: HelloReply) -> Result<(), ProtocolError> {
        match reply {
            HelloReply::Refused { reason } => Err(ProtocolError::Refused(reason)),
            HelloReply::Welcome { .. } if self.welcomed => Err(ProtocolError::Unexpected {
                message: "second welcome",
                state: "ready",
            }),
            HelloReply::Welcome { version, .. } if version != PROTOCOL_VERSION => {
                Err(ProtocolError::VersionMismatch {
                    peer: version,
                    ours: PROTOCOL_VERSION,
                })
            }
            HelloReply::Welcome { .. } => {
                self.welcomed = true;
                Ok(())
            }
        }
    }

    /// Checks a coordinator message against the session rules.
    pub fn on_message(
        &mut self,
        message: CoordinatorMessage,
    ) -> Result<SmurfLinkEvent, ProtocolError> {
        if !self.welcomed {
            return Err(ProtocolError::Unexpected {
                message: "work",
                state: "awaiting welcome",
            });
        }
        match message {
            CoordinatorMessage::Template(bundle) => {
                self.templates.insert(bundle.hash);
                Ok(SmurfLinkEvent::Template(bundle))
            }
            CoordinatorMessage::Batch(batch) => {
                if !self.templates.contains(&batch.template) {
                    return Err(ProtocolError::UnknownTemplate(batch.template.to_string()));
                }
                let in_flight = self.owed + batch.recipients.len();
                if in_flight > self.window {
                    return Err(ProtocolError::WindowOverrun {
                        in_flight,
                        window: self.window,
                    });
                }
                self.owed = in_flight;
                Ok(SmurfLinkEvent::Batch(batch))
            }
            CoordinatorMessage::Forget(hash) => {
                self.templates.remove(&hash);
                Ok(SmurfLinkEvent::Forget(hash))
            }
            CoordinatorMessage::Shaping(update) => Ok(SmurfLinkEvent::Shaping(update)),
            CoordinatorMessage::ResultsCommitted => {
                if self.unacked.pop_front().is_none() {
                    return Err(ProtocolError::Unexpected {
                        message: "results acknowledgement",
                        state: "no results frame awaiting one",
                    });
                }
                Ok(SmurfLinkEvent::ResultsCommitted)
            }
            CoordinatorMessage::Assign(assignment) => Ok(SmurfLinkEvent::Assign(assignment)),
            CoordinatorMessage::InboundPolicy(policy) => Ok(SmurfLinkEvent::InboundPolicy(policy)),
            CoordinatorMessage::ReturnedStored(names) => Ok(SmurfLinkEvent::ReturnedStored(names)),
            CoordinatorMessage::BounceWork(jobs) => Ok(SmurfLinkEvent::BounceWork(jobs)),
            CoordinatorMessage::UnsubscribesStored(upto) => {
                Ok(SmurfLinkEvent::UnsubscribesStored(upto))
            }
            CoordinatorMessage::FarmView(view) => Ok(SmurfLinkEvent::FarmView(view)),
            CoordinatorMessage::SiteRates(rates) => Ok(SmurfLinkEvent::SiteRates(rates)),
            CoordinatorMessage::ForwardRules(update) => Ok(SmurfLinkEvent::ForwardRules(update)),
            CoordinatorMessage::NoticeGrants(grants) => Ok(SmurfLinkEvent::NoticeGrants(grants)),
        }
    }

    /// The frame that sends `results` of this link's batches; kept until acknowledged.
    pub fn results(&mut self, results: Vec<RecipientResult>) -> SmurfMessage {
        self.owed = self.owed.saturating_sub(results.len());
        self.unacked.push_back(results.clone());
        SmurfMessage::Results(results)
    }

    /// The frames that send results of earlier links (messages that finished after their
    /// link dropped), at most `per_frame` per frame; kept until acknowledged.
    pub fn late_results(
        &mut self,
        results: Vec<RecipientResult>,
        per_frame: usize,
    ) -> Vec<SmurfMessage> {
        results
            .chunks(per_frame.max(1))
            .map(|chunk| {
                self.unacked.push_back(chunk.to_vec());
                SmurfMessage::LateResults(chunk.to_vec())
            })
            .collect()
    }

    /// On a new link, after the welcome: every frame the coordinator never acknowledged goes
    /// again, as late results (it applies them only to recipients still pending).
    pub fn resend_unacknowledged(&mut self, per_frame: usize) -> Vec<SmurfMessage> {
        let earlier: Vec<RecipientResult> = self.unacked.drain(..).flatten().collect();
        self.late_results(earlier, per_frame)
    }

    /// Results sent and not yet acknowledged as committed.
    pub fn held_results(&self) -> usize {
        self.unacked.iter().map(Vec::len).sum()
    }

    /// Records that `count` recipients are being handed back unattempted.
    pub fn handed_back(&mut self, count: usize) {
        self.owed = self.owed.saturating_sub(count);
    }

    /// Recipients received and not yet answered.
    pub fn owed(&self) -> usize {
        self.owed
    }

    /// Forgets the session (the link dropped) but keeps the templates, so a reconnect announces
    /// them and they are not shipped again.
    pub fn reset(&mut self) {
        self.welcomed = false;
        self.owed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeliveryTarget, Outcome};

    fn bundle(seed: u8) -> TemplateBundle {
        TemplateBundle {
            hash: ContentHash([seed; 32]),
            delivery: DeliveryTarget {
                relay: Some("127.0.0.1:25".into()),
                connections: 2,
            },
            ..crate::fixtures::bundle()
        }
    }

    fn recipients(ids: std::ops::Range<u64>) -> Vec<RecipientData> {
        ids.map(|id| RecipientData {
            id,
            values: vec![format!("u{id}@example.com"), format!("U{id}")],
        })
        .collect()
    }

    fn result(id: u64) -> RecipientResult {
        RecipientResult {
            id,
            outcome: Outcome::Delivered,
            code: 250,
            enhanced: Some((2, 0, 0)),
            text: "ok".into(),
            rendered_bytes: 100,
            remote: "mx.example[127.0.0.1]:25".into(),
            duration_ms: 3,
        }
    }

    fn welcomed_pair(window: u32) -> (CoordinatorLink, SmurfLink) {
        let mut coordinator = CoordinatorLink::new();
        let mut smurf = SmurfLink::new(window, []);
        let reply = coordinator
            .on_hello(smurf.hello("s1", None, "test"), |n| n == "s1")
            .unwrap();
        smurf.on_hello_reply(reply).unwrap();
        (coordinator, smurf)
    }

    #[test]
    fn results_are_kept_until_committed_and_resent_as_late_results_after_a_drop() {
        let (mut coordinator, mut smurf) = welcomed_pair(10);
        let b = bundle(1);
        for m in coordinator.dispatch(&b, recipients(0..5)).unwrap() {
            smurf.on_message(m).unwrap();
        }
        let first = smurf.results(vec![result(0), result(1)]);
        assert!(matches!(first, SmurfMessage::Results(ref r) if r.len() == 2));
        let second = smurf.results(vec![result(2)]);
        assert!(matches!(second, SmurfMessage::Results(_)));
        assert_eq!(smurf.owed(), 2);
        assert_eq!(smurf.held_results(), 3);
        smurf
            .on_message(CoordinatorMessage::ResultsCommitted)
            .unwrap();
        assert_eq!(smurf.held_results(), 1, "the oldest frame is committed");
        // The link drops: the unacknowledged frame goes again on the next one, announced.
        smurf.reset();
        let hello = smurf.hello("s1", None, "test");
        assert!(matches!(
            hello.role,
            Role::Smurf {
                held_results: 1,
                ..
            }
        ));
        let mut coordinator = CoordinatorLink::new();
        let reply = coordinator.on_hello(hello, |_| true).unwrap();
        smurf.on_hello_reply(reply).unwrap();
        let resent = smurf.resend_unacknowledged(512);
        assert_eq!(resent.len(), 1);
        assert!(matches!(&resent[0], SmurfMessage::LateResults(r) if r[0].id == 2));
        assert_eq!(smurf.held_results(), 1, "still held until acknowledged");
        let late = smurf.late_results((10..15).map(result).collect(), 2);
        assert_eq!(late.len(), 3, "5 late results in frames of 2");
        assert_eq!(smurf.held_results(), 6);
        for _ in 0..4 {
            smurf
                .on_message(CoordinatorMessage::ResultsCommitted)
                .unwrap();
        }
        assert_eq!(smurf.held_results(), 0);
        assert!(
            smurf
                .on_message(CoordinatorMessage::ResultsCommitted)
                .is_err(),
            "an acknowledgement with nothing to acknowledge is a protocol error"
        );
    }

    #[test]
    fn template_crosses_once_then_only_batches() {
        let (mut coordinator, mut smurf) = welcomed_pair(10);
        let b = bundle(7);
        let first = coordinator.dispatch(&b, recipients(0..4)).unwrap();
        assert!(matches!(first[0], CoordinatorMessage::Template(_)));
        assert_eq!(first.len(), 2);
        for m in first {
            smurf.on_message(m).unwrap();
        }
        let second = coordinator.dispatch(&b, recipients(4..8)).unwrap();
        assert_eq!(second.len(), 1, "template must not be shipped twice");
        assert!(matches!(second[0], CoordinatorMessage::Batch(_)));
        smurf
            .on_message(second.into_iter().next().unwrap())
            .unwrap();
        assert_eq!(smurf.owed(), 8);
        assert_eq!(coordinator.credit(), 2);
    }

    #[test]
    fn ended_templates_are_forgotten_once_and_shipped_again_if_needed() {
        let (mut coordinator, mut smurf) = welcomed_pair(10);
        let (old, live) = (bundle(1), bundle(2));
        for b in [&old, &live] {
            for m in coordinator.dispatch(b, recipients(0..1)).unwrap() {
                smurf.on_message(m).unwrap();
            }
        }
        let forget = coordinator.forget_ended(|hash| *hash == live.hash);
        assert_eq!(forget, vec![CoordinatorMessage::Forget(old.hash)]);
        assert!(!coordinator.holds(&old.hash));
        assert!(coordinator.holds(&live.hash));
        let event = smurf.on_message(forget[0].clone()).unwrap();
        assert_eq!(event, SmurfLinkEvent::Forget(old.hash));
        assert!(coordinator
            .forget_ended(|hash| *hash == live.hash)
            .is_empty());
    }

    #[test]
    fn reconnecting_smurf_that_holds_template_does_not_get_it_again() {
        let b = bundle(3);
        let mut smurf = SmurfLink::new(4, [b.hash]);
        smurf.reset();
        let mut coordinator = CoordinatorLink::new();
        coordinator
            .on_hello(smurf.hello("s1", None, "test"), |n| n == "s1")
            .unwrap();
        let messages = coordinator.dispatch(&b, recipients(0..1)).unwrap();
        assert_eq!(messages.len(), 1);
        assert!(matches!(messages[0], CoordinatorMessage::Batch(_)));
    }

    #[test]
    fn window_is_enforced_on_both_sides() {
        let (mut coordinator, mut smurf) = welcomed_pair(3);
        let b = bundle(1);
        assert!(matches!(
            coordinator.dispatch(&b, recipients(0..4)),
            Err(ProtocolError::WindowOverrun { .. })
        ));
        smurf
            .on_message(CoordinatorMessage::Template(Box::new(b.clone())))
            .unwrap();
        let overrun = CoordinatorMessage::Batch(RecipientBatch {
            template: b.hash,
            recipients: recipients(0..4),
        });
        assert!(matches!(
            smurf.on_message(overrun),
            Err(ProtocolError::WindowOverrun { .. })
        ));
    }

    #[test]
    fn results_give_credit_back_and_unknown_ids_are_refused() {
        let (mut coordinator, _smurf) = welcomed_pair(2);
        let b = bundle(1);
        coordinator.dispatch(&b, recipients(0..2)).unwrap();
        assert_eq!(coordinator.credit(), 0);
        coordinator.on_results(&[result(0)]).unwrap();
        assert_eq!(coordinator.credit(), 1);
        assert_eq!(
            coordinator.on_results(&[result(99)]),
            Err(ProtocolError::UnknownRecipient(99))
        );
        assert_eq!(
            coordinator.on_results(&[result(0)]),
            Err(ProtocolError::UnknownRecipient(0)),
            "a result counts once"
        );
        assert_eq!(coordinator.take_in_flight(), vec![1]);
    }

    #[test]
    fn version_mismatch_and_wrong_identity_are_refused() {
        let mut coordinator = CoordinatorLink::new();
        let mut hello = SmurfLink::new(1, []).hello("s1", None, "test");
        hello.version = PROTOCOL_VERSION + 1;
        let (reply, error) = coordinator.on_hello(hello, |_| true).unwrap_err();
        assert!(matches!(error, ProtocolError::VersionMismatch { .. }));
        assert!(matches!(reply, HelloReply::Refused { .. }));

        let mut coordinator = CoordinatorLink::new();
        let (_, error) = coordinator
            .on_hello(SmurfLink::new(1, []).hello("s1", None, "test"), |n| {
                n == "s2"
            })
            .unwrap_err();
        assert!(matches!(error, ProtocolError::Refused(_)));
        assert_eq!(coordinator.credit(), 0);
    }

    #[test]
    fn smurf_refuses_work_before_welcome_and_unknown_templates() {
        let mut smurf = SmurfLink::new(5, []);
        let batch = CoordinatorMessage::Batch(RecipientBatch {
            template: ContentHash([9; 32]),
            recipients: recipients(0..1),
        });
        assert!(smurf.on_message(batch.clone()).is_err());
        smurf
            .on_hello_reply(HelloReply::Welcome {
                version: PROTOCOL_VERSION,
                name: "s1".into(),
            })
            .unwrap();
        assert!(matches!(
            smurf.on_message(batch),
            Err(ProtocolError::UnknownTemplate(_))
        ));
    }
}
