//! `mailfarm bounce inspect`: one serialisable line per result, so an operator can check a
//! bounce by hand and scripts can measure the classifier. The command in the CLI only prints
//! what this module returns.

use std::path::Path;

use serde::Serialize;

use crate::analyse::{analyse, Action, Analysis, Kind};
use crate::error::BounceError;
use crate::mbox::split_mbox;
use crate::reason::Reason;
use crate::verp::decode_verp;

/// One line of `bounce inspect` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InspectLine {
    /// The file, as given.
    pub file: String,
    /// 1-based position of the message in the file (mbox files hold several).
    pub message: usize,
    /// What the message is (`bounce`, `delay`, `autoreply`, `feedback`, `notbounce`).
    pub kind: Kind,
    /// The failed (or complained-about) recipient; null for a message that is not a bounce.
    pub recipient: Option<String>,
    /// RFC 3463 status code.
    pub status: Option<String>,
    /// SMTP reply code.
    pub reply_code: Option<u16>,
    /// The reason; null for a message that is not a bounce, a complaint or an auto-reply.
    pub reason: Option<Reason>,
    /// Hard bounce or not.
    pub hard_bounce: bool,
    /// The DSN action of the recipient (`failed`, `delayed`), when it has one.
    pub action: Option<Action>,
    /// ARF feedback type, for complaints.
    pub feedback_type: Option<String>,
    /// Campaign named by the VERP return path, when there is one.
    pub campaign: Option<String>,
    /// Recipient id named by the VERP return path, when there is one.
    pub recipient_id: Option<u64>,
    /// Whether the VERP signature was checked (never, without the farm's key).
    pub verified: bool,
}

/// The lines for one message.
pub fn inspect_message(file: &str, index: usize, raw: &[u8]) -> Vec<InspectLine> {
    lines_for(file, index, &analyse(raw))
}

/// The lines for one analysed message: one per result, or one with a null reason. A delay
/// report gives one line per delayed recipient with `kind: "delay"` and its classification
/// (what is holding the message up); it is not a failure and never a hard bounce.
pub fn lines_for(file: &str, index: usize, analysis: &Analysis) -> Vec<InspectLine> {
    let verp = analysis.verp_candidates().find_map(decode_verp);
    let base = InspectLine {
        file: file.to_owned(),
        message: index,
        kind: analysis.kind,
        recipient: None,
        status: None,
        reply_code: None,
        reason: None,
        hard_bounce: false,
        action: None,
        feedback_type: analysis.feedback_type.clone(),
        campaign: verp.as_ref().map(|v| v.campaign.clone()),
        recipient_id: verp.as_ref().map(|v| v.recipient_id),
        verified: false,
    };
    if analysis.kind == Kind::NotBounce || analysis.recipients.is_empty() {
        return vec![base];
    }
    analysis
        .recipients
        .iter()
        .map(|r| InspectLine {
            recipient: Some(r.recipient.clone()),
            status: r.status.clone(),
            reply_code: r.reply_code,
            reason: Some(r.reason),
            hard_bounce: r.hard,
            action: r.action,
            ..base.clone()
        })
        .collect()
}

/// The lines for every message of a file (one message, or an mbox).
pub fn inspect_file(path: &Path) -> Result<Vec<InspectLine>, BounceError> {
    let data = std::fs::read(path).map_err(|source| BounceError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file = path.display().to_string();
    let messages = split_mbox(&data);
    if messages.is_empty() {
        return Ok(lines_for(&file, 0, &analyse(&[])));
    }
    Ok(messages
        .iter()
        .enumerate()
        .flat_map(|(i, m)| inspect_message(&file, i + 1, m))
        .collect())
}
