//! The `bounce` role: analyse returned mail leased from the coordinator's bounce queue.
//!
//! Each message is parsed and classified by `mailfarm-bounce` (DSNs, the MTAs' own formats,
//! ARF complaints, auto-replies, delays). The VERP return path it was sent to is verified with
//! the farm's key, so the campaign and recipient are known exactly, even when the report names
//! no address; a VERP address that does not verify marks the message forged, and it changes
//! nothing. The coordinator applies the verdicts (suppression, counters).

use mailfarm_bounce::{analyse, decode_verp, Analysis, Kind};
use mailfarm_protocol::{BounceJob, BounceVerdict, BouncedRecipient, InboundPolicy, ReturnKind};
use mailfarm_templates::{UnsubscribeSigner, VerpSigner};

/// Analyses one leased message under the farm's VERP key and bounce domains.
pub fn verdict(job: &BounceJob, policy: &InboundPolicy) -> BounceVerdict {
    if let Some(unsubscribe) = mailto_unsubscribe(job, policy) {
        return unsubscribe;
    }
    let analysis = analyse(&job.raw);
    let signer = (!policy.verp_key.is_empty()).then(|| VerpSigner::new(&policy.verp_key));
    let mut token = None;
    let mut looked_like_verp = false;
    for candidate in analysis.verp_candidates() {
        if decode_verp(candidate).is_none() {
            continue;
        }
        looked_like_verp = true;
        if let Some(found) = signer.as_ref().and_then(|s| verified(s, candidate, policy)) {
            token = Some(found);
            break;
        }
    }
    let mut verdict = BounceVerdict {
        seq: job.seq,
        kind: kind_of(&analysis),
        campaign: token.as_ref().map(|t| t.campaign_id.clone()),
        recipient_id: token.as_ref().map(|t| t.recipient_id),
        recipients: Vec::new(),
        feedback_type: analysis.feedback_type.clone(),
    };
    if token.is_none() && looked_like_verp {
        verdict.kind = ReturnKind::Forged;
        return verdict;
    }
    if token.is_none() {
        // Not addressed to one of our return paths: nothing to attribute, nothing to suppress.
        return verdict;
    }
    let reported = match verdict.kind {
        ReturnKind::Bounce => analysis.failures().collect::<Vec<_>>(),
        ReturnKind::Complaint => analysis.recipients.iter().collect(),
        _ => Vec::new(),
    };
    verdict.recipients = reported
        .into_iter()
        .map(|r| BouncedRecipient {
            address: r.recipient.trim().to_ascii_lowercase(),
            reason: r.reason.to_string(),
            hard: r.hard || verdict.kind == ReturnKind::Complaint,
            status: r.status.clone(),
            diagnostic: r.diagnostic.chars().take(500).collect(),
        })
        .collect();
    verdict
}

/// Mail the `in` node took for a signed unsubscribe address: its envelope recipient (the
/// node's `X-Mailfarm-Envelope-To` trace line) names the campaign and recipient.
fn mailto_unsubscribe(job: &BounceJob, policy: &InboundPolicy) -> Option<BounceVerdict> {
    if policy.verp_key.is_empty() {
        return None;
    }
    let signer = UnsubscribeSigner::from_verp_key(&policy.verp_key);
    let head_end = job
        .raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(job.raw.len().min(64 * 1024));
    let head = String::from_utf8_lossy(&job.raw[..head_end]);
    head.lines()
        .filter_map(|line| line.strip_prefix("X-Mailfarm-Envelope-To:"))
        .map(|rcpt| rcpt.trim().trim_start_matches('<').trim_end_matches('>'))
        .find_map(|rcpt| {
            policy
                .bounce_domains
                .iter()
                .find_map(|domain| signer.verify_mailto(rcpt, domain).ok())
        })
        .map(|target| BounceVerdict {
            seq: job.seq,
            kind: ReturnKind::Unsubscribe,
            campaign: Some(target.campaign_id),
            recipient_id: Some(target.recipient_id),
            recipients: Vec::new(),
            feedback_type: None,
        })
}

/// The token of `address` if it verifies for one of the farm's bounce domains.
fn verified(
    signer: &VerpSigner,
    address: &str,
    policy: &InboundPolicy,
) -> Option<mailfarm_templates::VerpToken> {
    if policy.bounce_domains.is_empty() {
        return signer.verify(address).ok();
    }
    policy
        .bounce_domains
        .iter()
        .find_map(|domain| signer.verify_for_domain(address, domain).ok())
}

fn kind_of(analysis: &Analysis) -> ReturnKind {
    match analysis.kind {
        Kind::Bounce => ReturnKind::Bounce,
        Kind::Delay => ReturnKind::Delay,
        Kind::AutoReply => ReturnKind::AutoReply,
        Kind::Feedback => ReturnKind::Complaint,
        Kind::NotBounce => ReturnKind::NotBounce,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(key: &[u8]) -> InboundPolicy {
        InboundPolicy {
            verp_key: key.to_vec(),
            bounce_domains: vec!["bounces.example.test".into()],
            ..Default::default()
        }
    }

    fn job(raw: String) -> BounceJob {
        BounceJob {
            seq: 7,
            raw: raw.into_bytes(),
        }
    }

    #[test]
    fn mail_to_a_signed_unsubscribe_address_is_an_unsubscribe() {
        let key = [3u8; 32];
        let address = UnsubscribeSigner::from_verp_key(&key).mailto_address(
            "spring",
            42,
            "bounces.example.test",
        );
        let raw = format!(
            "Return-Path: <reader@example.org>\r\nX-Mailfarm-Envelope-To: <{address}>\r\n\
             Subject: unsubscribe\r\n\r\nplease\r\n"
        );
        let v = verdict(&job(raw.clone()), &policy(&key));
        assert_eq!(v.kind, ReturnKind::Unsubscribe);
        assert_eq!(
            (v.campaign.as_deref(), v.recipient_id),
            (Some("spring"), Some(42))
        );
        // Under another farm's key the same mail names nobody.
        let other = verdict(&job(raw), &policy(&[4u8; 32]));
        assert_ne!(other.kind, ReturnKind::Unsubscribe);
        assert_eq!(other.recipient_id, None);
    }

    #[test]
    fn a_bounce_to_a_forged_return_path_changes_nothing() {
        let raw = "From: MAILER-DAEMON@mx.example.org\r\n\
                   To: b-spring-16-aaaaaaaaaaaaaaaa@bounces.example.test\r\n\
                   Subject: Undelivered Mail Returned to Sender\r\n\r\n\
                   <gone@example.org>: host mx.example.org said: 550 5.1.1 unknown user\r\n";
        let v = verdict(&job(raw.to_owned()), &policy(&[3u8; 32]));
        assert_eq!(v.kind, ReturnKind::Forged);
        assert!(v.recipients.is_empty() && v.campaign.is_none());
    }
}
