//! The forwarding part of a smurf link: the rule set (a snapshot when the link starts, deltas
//! as the operator changes it), notice claims answered once committed, and the accounting
//! lines of forwarded messages and notice decisions.

use super::*;
use mailfarm_protocol::{ForwardRecord, NoticeClaim, NoticeDecision};

/// What this link told its node about the rule set.
#[derive(Default)]
pub(super) struct ForwardTold {
    version: Option<u64>,
}

impl ForwardTold {
    /// Sends what the node lacks: a snapshot on a new link, then the deltas since.
    pub(super) async fn update(
        &mut self,
        send: &mut quinn::SendStream,
        shared: &Arc<Shared>,
    ) -> anyhow::Result<()> {
        let (updates, version) = {
            let shared = shared.clone();
            let told = self.version;
            tokio::task::spawn_blocking(move || {
                shared.forward.updates_since(shared.farm.store(), told)
            })
            .await
            .context("forward rule task")??
        };
        for update in updates {
            write_frame(send, &CoordinatorMessage::ForwardRules(update)).await?;
        }
        self.version = Some(version);
        Ok(())
    }
}

/// One accounting line of a forwarded message.
#[derive(serde::Serialize)]
struct ForwardLine<'a> {
    kind: &'static str,
    node: &'a str,
    #[serde(flatten)]
    record: &'a ForwardRecord,
}

/// One accounting line of a notice decision.
#[derive(serde::Serialize)]
struct NoticeLine<'a> {
    kind: &'static str,
    time_ms: u64,
    node: &'a str,
    sender: &'a str,
    recipient: &'a str,
    day: u32,
    decision: &'static str,
}

/// Writes the accounting lines of forwarded messages.
pub(super) fn on_forwarded(node: &str, records: &[ForwardRecord], shared: &Shared) {
    let lines: Vec<ForwardLine<'_>> = records
        .iter()
        .map(|record| ForwardLine {
            kind: "forwarded",
            node,
            record,
        })
        .collect();
    role_link::write_accounting(shared, &lines);
}

/// Decides notice claims, commits them, then answers.
pub(super) async fn on_claims(
    node: &str,
    claims: Vec<NoticeClaim>,
    send: &mut quinn::SendStream,
    shared: &Arc<Shared>,
) -> anyhow::Result<()> {
    let now = crate::farm::now_ms();
    let (grants, claims) = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || {
            shared
                .forward
                .claim(shared.farm.store(), &claims, now)
                .map(|grants| (grants, claims))
        })
        .await
        .context("notice claim task")??
    };
    let lines: Vec<NoticeLine<'_>> = claims
        .iter()
        .zip(&grants)
        .map(|(claim, grant)| NoticeLine {
            kind: "notice",
            time_ms: now,
            node,
            sender: &claim.sender,
            recipient: &claim.recipient,
            day: claim.day,
            decision: match grant.decision {
                NoticeDecision::Granted => "granted",
                NoticeDecision::AlreadySent => "already-sent",
                NoticeDecision::NoNoticeList => "no-notice-list",
            },
        })
        .collect();
    role_link::write_accounting(shared, &lines);
    write_frame(send, &CoordinatorMessage::NoticeGrants(grants)).await?;
    Ok(())
}
