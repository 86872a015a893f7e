//! Who the inbound MX takes mail for, decided at RCPT time: the farm's signed
//! VERP return paths (for bounce processing), local addresses (kept for the
//! operator) and forwarded addresses. Everything else is refused: the MX is
//! never an open relay (RFC 2505), whatever tricks the address plays.
//!
//! The policy is live: the coordinator's view reaches the MX through a
//! `tokio::sync::watch` channel of [`InboundPolicy`], read at every RCPT. The
//! forwarding rules are shared instead ([`SharedForward`]): a delta changes one
//! entry, and the next RCPT sees it.

use std::collections::HashSet;

use mailfarm_templates::{UnsubscribeSigner, UnsubscribeTarget, VerpSigner, VerpToken};

use crate::inbound::forward::SharedForward;
use crate::smtp::policy::Answer;

/// What the MX accepts mail for. Addresses and domains are compared without
/// regard to case.
#[derive(Debug, Clone, Default)]
pub struct InboundPolicy {
    /// The farm's VERP key; `None`: no bounce address is valid.
    pub verp: Option<VerpSigner>,
    /// The farm's unsubscribe signer (from the VERP key); `None`: no unsubscribe address.
    pub unsubscribe: Option<UnsubscribeSigner>,
    /// Domains of the VERP return paths (lower case, no trailing dot).
    pub bounce_domains: Vec<String>,
    /// Local addresses: postmaster@, abuse@, the campaigns' Reply-To (lower
    /// case).
    pub local_addresses: HashSet<String>,
    /// Forwarded addresses (lower case), with no new address known: their mail is
    /// accepted and kept in `forward/` (the rule set in [`Self::forward`] is the live one).
    pub forwarded: HashSet<String>,
    /// The forwarding rules and the SRS key, shared with the link that updates them.
    pub forward: SharedForward,
}

impl InboundPolicy {
    /// A policy from the VERP key, the bounce domains, the local and the
    /// forwarded addresses (normalised to lower case).
    pub fn new(
        verp_key: Option<&[u8]>,
        bounce_domains: impl IntoIterator<Item = String>,
        local_addresses: impl IntoIterator<Item = String>,
        forwarded: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            verp: verp_key.map(VerpSigner::new),
            unsubscribe: verp_key.map(UnsubscribeSigner::from_verp_key),
            bounce_domains: bounce_domains
                .into_iter()
                .map(|d| normal_domain(&d))
                .collect(),
            local_addresses: local_addresses
                .into_iter()
                .map(|a| a.to_ascii_lowercase())
                .collect(),
            forwarded: forwarded
                .into_iter()
                .map(|a| a.to_ascii_lowercase())
                .collect(),
            forward: SharedForward::default(),
        }
    }

    /// The policy with the live forwarding rules.
    pub fn with_forward(mut self, forward: SharedForward) -> Self {
        self.forward = forward;
        self
    }
}

fn normal_domain(d: &str) -> String {
    d.trim_end_matches('.').to_ascii_lowercase()
}

/// Where an accepted recipient's copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A valid VERP return path: for bounce processing.
    Bounce(VerpToken),
    /// A signed unsubscribe address (the `mailto:` of List-Unsubscribe): stored with the
    /// returned mail, whose processing turns it into an unsubscribe.
    Unsubscribe(UnsubscribeTarget),
    /// A local address: kept for the operator.
    Local,
    /// A forwarded address, and its new address (empty when unknown).
    Forward(String),
    /// A valid SRS address: a bounce of forwarded mail, for its original sender.
    SrsReturn(String),
}

/// Why a recipient was refused (each has its counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not one of our domains, or a relay trick (source route, `%`, `!`,
    /// quoted local part, several `@`, IP literal).
    Relay,
    /// One of our domains, but no such address.
    UnknownUser,
    /// A VERP-shaped address whose signature does not verify.
    ForgedVerp,
    /// An SRS address whose hash does not verify or that has expired.
    BadSrs,
}

impl Refused {
    /// The reply to the RCPT.
    pub fn answer(self) -> Answer {
        match self {
            Refused::Relay => Answer::reply(550, "5.7.1 Relay access denied"),
            Refused::UnknownUser => {
                Answer::reply(550, "5.1.1 Recipient address rejected: user unknown")
            }
            Refused::ForgedVerp => {
                Answer::reply(550, "5.7.1 Recipient address rejected: invalid signature")
            }
            Refused::BadSrs => Answer::reply(
                550,
                "5.1.1 Recipient address rejected: invalid or expired SRS address",
            ),
        }
    }
}

/// Decides one recipient. `extra_local` are the config's local addresses
/// (lower case); `source_route` tells whether the client wrote one.
pub fn classify(
    policy: &InboundPolicy,
    extra_local: &HashSet<String>,
    path: &str,
    source_route: bool,
) -> Result<Destination, Refused> {
    if source_route || path.contains('"') || path.contains('\\') {
        return Err(Refused::Relay);
    }
    let mut parts = path.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Refused::Relay);
    };
    if local.is_empty()
        || local.contains(['%', '!', ':', ','])
        || domain.is_empty()
        || domain.starts_with('[')
        || !domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(Refused::Relay);
    }
    let domain = normal_domain(domain);
    let address = format!("{}@{domain}", local.to_ascii_lowercase());
    if policy.local_addresses.contains(&address) || extra_local.contains(&address) {
        return Ok(Destination::Local);
    }
    let forward_domain = {
        let forward = policy.forward.read();
        if let Some(new) = forward.table.lookup(&address) {
            return Ok(Destination::Forward(new.to_owned()));
        }
        if let Some(srs) = forward.srs.as_ref().filter(|s| s.domain() == domain) {
            if srs.is_srs(path) {
                let today = mailfarm_protocol::utc_day(crate::inbound::forward::now_ms());
                return match srs.reverse(path, today, false) {
                    Ok(original) => Ok(Destination::SrsReturn(original)),
                    Err(_) => Err(Refused::BadSrs),
                };
            }
            true
        } else {
            forward.table.has_domain(&domain)
        }
    };
    if policy.forwarded.contains(&address) {
        return Ok(Destination::Forward(String::new()));
    }
    if policy.bounce_domains.contains(&domain) {
        if let Some(signer) = &policy.verp {
            if let Ok(token) = signer.verify_for_domain(path, &domain) {
                return Ok(Destination::Bounce(token));
            }
        }
        if let Some(signer) = &policy.unsubscribe {
            if let Ok(target) = signer.verify_mailto(path, &domain) {
                return Ok(Destination::Unsubscribe(target));
            }
        }
        return Err(if local.to_ascii_lowercase().starts_with("b-") {
            Refused::ForgedVerp
        } else {
            Refused::UnknownUser
        });
    }
    let ours = |a: &String| a.rsplit_once('@').is_some_and(|(_, d)| d == domain);
    if forward_domain
        || policy.local_addresses.iter().any(ours)
        || extra_local.iter().any(ours)
        || policy.forwarded.iter().any(ours)
    {
        return Err(Refused::UnknownUser);
    }
    Err(Refused::Relay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> InboundPolicy {
        InboundPolicy::new(
            Some(b"key"),
            ["Bounce.Example.test.".to_owned()],
            ["Postmaster@example.test".to_owned()],
            ["fwd@example.test".to_owned()],
        )
    }

    #[test]
    fn accepts_ours_and_refuses_tricks() {
        let p = policy();
        let none = HashSet::new();
        let good = VerpSigner::new(b"key").return_path("c1", 42, "bounce.example.test");
        let c = |path: &str, route| classify(&p, &none, path, route);
        assert_eq!(
            c(&good, false),
            Ok(Destination::Bounce(VerpToken {
                campaign_id: "c1".into(),
                recipient_id: 42
            }))
        );
        assert_eq!(c("postmaster@EXAMPLE.test", false), Ok(Destination::Local));
        assert_eq!(
            c("fwd@example.test", false),
            Ok(Destination::Forward(String::new()))
        );
        let forged = VerpSigner::new(b"other").return_path("c1", 42, "bounce.example.test");
        assert_eq!(c(&forged, false), Err(Refused::ForgedVerp));
        assert_eq!(c("nobody@example.test", false), Err(Refused::UnknownUser));
        assert_eq!(
            c("nobody@bounce.example.test", false),
            Err(Refused::UnknownUser)
        );
        for trick in [
            "user@other.test",
            "user%other.test@example.test",
            "\"user@other.test\"@example.test",
            "user@other.test@example.test",
            "user@[127.0.0.1]",
            "other.test!user@example.test",
            "postmaster@example.test.other.test",
        ] {
            assert_eq!(c(trick, false), Err(Refused::Relay), "{trick}");
        }
        assert_eq!(c("postmaster@example.test", true), Err(Refused::Relay));
    }

    #[test]
    fn forwarding_rules_and_srs_are_live() {
        use mailfarm_protocol::{ForwardRule, ForwardSettings, ForwardUpdate};
        let p = policy();
        let none = HashSet::new();
        let c = |path: &str| classify(&p, &none, path, false);
        assert_eq!(c("moved@old.test"), Err(Refused::Relay));
        let settings = ForwardSettings {
            srs_domain: "fwd.test".into(),
            notice_from: "postmaster@fwd.test".into(),
        };
        let mut update = ForwardUpdate {
            base: None,
            version: 1,
            set: vec![ForwardRule {
                old: "moved@old.test".into(),
                new: "moved@new.test".into(),
            }],
            removed: vec![],
            settings: Some(settings),
        };
        {
            let mut forward = p.forward.write();
            forward.set_verp_key(b"key");
            forward.apply(update.clone()).unwrap();
        }
        assert_eq!(
            c("Moved@OLD.test"),
            Ok(Destination::Forward("moved@new.test".into()))
        );
        assert_eq!(c("other@old.test"), Err(Refused::UnknownUser));
        let srs = p.forward.read().srs.clone().unwrap();
        let day = mailfarm_protocol::utc_day(crate::inbound::forward::now_ms());
        let address = srs.forward("s@sender.test", day);
        assert_eq!(
            c(&address),
            Ok(Destination::SrsReturn("s@sender.test".into()))
        );
        assert_eq!(c(&address.replace("sender", "evil")), Err(Refused::BadSrs));
        assert_eq!(c("nobody@fwd.test"), Err(Refused::UnknownUser));
        // Removed: refused from the next RCPT on.
        update.base = Some(1);
        update.version = 2;
        update.set.clear();
        update.settings = None;
        update.removed = vec!["moved@old.test".into()];
        p.forward.write().apply(update).unwrap();
        assert_eq!(c("moved@old.test"), Err(Refused::Relay));
    }
}
