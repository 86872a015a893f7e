//! Returned mail on its way through the farm: an `in` node hands each message addressed to a
//! VERP return path to the coordinator, which queues it durably; `bounce` nodes lease messages
//! from that queue and send back what each one says, which the coordinator applies
//! (suppression, counters) exactly once.

use serde::{Deserialize, Serialize};

/// Largest returned message carried whole; a longer one is cut (the report is at the start).
pub const MAX_RETURNED_BYTES: usize = 1 << 20;

/// A message an `in` node stored for bounce processing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnedMail {
    /// The node's name for it (its stored file), echoed when the coordinator has it.
    pub name: String,
    /// When the node received it, ms since the Unix epoch.
    pub received_ms: u64,
    /// The message as received (at most [`MAX_RETURNED_BYTES`]).
    pub raw: Vec<u8>,
}

/// One queued returned message leased to a `bounce` node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BounceJob {
    /// Queue sequence number.
    pub seq: u64,
    /// The message.
    pub raw: Vec<u8>,
}

/// What a returned message is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReturnKind {
    /// A delivery failure report.
    Bounce,
    /// A delay report: not a failure.
    Delay,
    /// An automatic reply: not a failure.
    AutoReply,
    /// A feedback-loop complaint (ARF).
    Complaint,
    /// Not a report at all.
    #[default]
    NotBounce,
    /// Its VERP address did not verify: forged or tampered; nothing is changed.
    Forged,
    /// Mail to a signed unsubscribe address (the `mailto:` of List-Unsubscribe): the
    /// recipient the token names leaves the list.
    Unsubscribe,
}

impl ReturnKind {
    /// Lower-case name for counters and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReturnKind::Bounce => "bounce",
            ReturnKind::Delay => "delay",
            ReturnKind::AutoReply => "autoreply",
            ReturnKind::Complaint => "complaint",
            ReturnKind::NotBounce => "notbounce",
            ReturnKind::Forged => "forged",
            ReturnKind::Unsubscribe => "unsubscribe",
        }
    }
}

/// A failed (or complaining) recipient found in a returned message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BouncedRecipient {
    /// The recipient address (from the report, else the one the VERP token names).
    pub address: String,
    /// Why, in Sisimai's vocabulary (`userunknown`, `mailboxfull`, `feedback`, ...).
    pub reason: String,
    /// The address is dead (or complained): suppress it.
    pub hard: bool,
    /// Enhanced status code, when known.
    pub status: Option<String>,
    /// The remote server's words.
    pub diagnostic: String,
}

/// What a `bounce` node learnt from one leased message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BounceVerdict {
    /// Queue sequence number of the message.
    pub seq: u64,
    /// What the message is.
    pub kind: ReturnKind,
    /// The campaign the verified VERP token names, if any.
    pub campaign: Option<String>,
    /// The recipient id the verified VERP token names, if any.
    pub recipient_id: Option<u64>,
    /// The recipients it reports (failures, or the complainer).
    pub recipients: Vec<BouncedRecipient>,
    /// ARF feedback type, for complaints.
    pub feedback_type: Option<String>,
}

/// One unsubscribe (or its undo) a `web` node recorded durably, forwarded to the coordinator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscription {
    /// The node's journal position; the coordinator acknowledges up to it.
    pub seq: u64,
    /// True for an undo (the recipient resubscribed within the undo window).
    pub resubscribe: bool,
    /// Campaign the message came from.
    pub campaign_id: String,
    /// List the recipient leaves, when the token named it.
    pub list_id: Option<String>,
    /// Recipient id (the coordinator maps it to the address).
    pub recipient_id: u64,
    /// When it was recorded, ms since the Unix epoch.
    pub at_ms: u64,
}
