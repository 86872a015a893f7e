//! The `bounce` role: analyse returned mail leased from the coordinator's bounce queue.
//!
//! Each message is parsed and classified by `mailfarm-bounce` (DSNs, the MTAs' own formats,
//! ARF complaints, auto-replies, delays). The VERP return path it was sent to is verified with
//! the farm's key, so the campaign and recipient are known exactly, even when the report names
//! no address; a VERP address that does not verify marks the message forged, and it changes
//! nothing. The coordinator applies the verdicts (suppression, counters).

use mailfarm_bounce::{analyse, decode_verp, Analysis, Kind};
use mailfarm_protocol::{BounceJob, BounceVerdict, BouncedRecipient, InboundPolicy, ReturnKind};
use mailfarm_templates::VerpSigner;

/// Analyses one leased message under the farm's VERP key and bounce domains.
pub fn verdict(job: &BounceJob, policy: &InboundPolicy) -> BounceVerdict {
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
