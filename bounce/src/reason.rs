//! The vocabulary of bounce reasons. It is Sisimai's, so figures and suppression rules can be
//! compared with the tool most operators know, plus the families the reasons fall into (what an
//! operator does about them), used to report and to score accuracy.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a message did not reach a recipient, in Sisimai's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// SPF, DKIM or DMARC failed at the receiving side.
    AuthFailure,
    /// The sending IP or domain has a poor reputation at the receiver.
    BadReputation,
    /// The sending IP is refused (block list, connection refused by policy).
    Blocked,
    /// The message content was refused (headers, MIME structure, attachments).
    ContentError,
    /// The message was delivered (a success DSN).
    Delivered,
    /// The message exceeds a limit of the recipient (size per recipient, RFC 3463 X.2.3).
    ExceedLimit,
    /// Delivery was retried until the message expired in a queue.
    Expired,
    /// The sender's STARTTLS failed.
    FailedStartTls,
    /// An ARF complaint (feedback loop report), not a bounce.
    Feedback,
    /// The recipient's own filter or settings refused the message.
    Filtered,
    /// The recipient moved and left no forwarding (RFC 3463 X.1.6).
    HasMoved,
    /// The recipient domain does not exist or cannot be routed to.
    HostUnknown,
    /// The recipient's mailbox is full or over quota.
    MailboxFull,
    /// A local delivery program (procmail, a pipe) failed.
    MailerError,
    /// The message is larger than the receiving system accepts.
    MesgTooBig,
    /// Connection or DNS problems on the way.
    NetworkError,
    /// The receiving server refused to relay for the sender.
    NoRelaying,
    /// The recipient domain accepts no mail (null MX, RFC 7505).
    NotAccept,
    /// The message does not comply with RFC 5322 (e.g. duplicate headers).
    NotCompliantRfc,
    /// Parked by the reporting MTA; the outcome is not known yet.
    OnHold,
    /// The receiver's policy refused the message.
    PolicyViolation,
    /// The sender (envelope or header From) was refused.
    Rejected,
    /// The sending IP has no (matching) reverse DNS.
    RequirePtr,
    /// A security requirement was not met (authentication, encryption).
    SecurityError,
    /// The message was judged to be spam.
    SpamDetected,
    /// The sender sends too fast for the receiver.
    Speeding,
    /// The recipient's account is disabled or suspended.
    Suspend,
    /// An SMTP protocol or syntax error.
    SyntaxError,
    /// An error inside the receiving system.
    SystemError,
    /// The receiving system is out of storage.
    SystemFull,
    /// Too many connections or recipients at once.
    TooManyConn,
    /// An auto-reply (RFC 3834, vacation), not a bounce.
    Vacation,
    /// A virus was found in the message.
    VirusDetected,
    /// A failure whose reason could not be told.
    Undefined,
    /// The recipient address does not exist.
    UserUnknown,
}

/// Reasons grouped by what an operator does about them. Reason spelling differs between tools
/// (and between Sisimai versions); the family is what matters for suppression and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// The address is dead: unknown user, unknown or mail-less domain, moved.
    Address,
    /// The mailbox exists but cannot take the message: full, suspended, size limits.
    Mailbox,
    /// The receiver refuses the sender: block lists, reputation, authentication, PTR, policy,
    /// relaying, protocol.
    Sender,
    /// The receiver refuses the content: spam, virus, the recipient's filters.
    Content,
    /// Delivery failed on the way: expired, network, errors inside a system.
    Transient,
    /// A complaint, not a bounce.
    Feedback,
    /// An auto-reply, not a bounce.
    Vacation,
    /// A delivery report of success.
    Delivered,
}

impl Reason {
    /// Every reason, in alphabetical order of its name.
    pub const ALL: [Reason; 35] = [
        Reason::AuthFailure,
        Reason::BadReputation,
        Reason::Blocked,
        Reason::ContentError,
        Reason::Delivered,
        Reason::ExceedLimit,
        Reason::Expired,
        Reason::FailedStartTls,
        Reason::Feedback,
        Reason::Filtered,
        Reason::HasMoved,
        Reason::HostUnknown,
        Reason::MailboxFull,
        Reason::MailerError,
        Reason::MesgTooBig,
        Reason::NetworkError,
        Reason::NoRelaying,
        Reason::NotAccept,
        Reason::NotCompliantRfc,
        Reason::OnHold,
        Reason::PolicyViolation,
        Reason::Rejected,
        Reason::RequirePtr,
        Reason::SecurityError,
        Reason::SpamDetected,
        Reason::Speeding,
        Reason::Suspend,
        Reason::SyntaxError,
        Reason::SystemError,
        Reason::SystemFull,
        Reason::TooManyConn,
        Reason::Undefined,
        Reason::UserUnknown,
        Reason::Vacation,
        Reason::VirusDetected,
    ];

    /// The reason's name in Sisimai's vocabulary (`userunknown`, `mailboxfull`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AuthFailure => "authfailure",
            Reason::BadReputation => "badreputation",
            Reason::Blocked => "blocked",
            Reason::ContentError => "contenterror",
            Reason::Delivered => "delivered",
            Reason::ExceedLimit => "exceedlimit",
            Reason::Expired => "expired",
            Reason::FailedStartTls => "failedstarttls",
            Reason::Feedback => "feedback",
            Reason::Filtered => "filtered",
            Reason::HasMoved => "hasmoved",
            Reason::HostUnknown => "hostunknown",
            Reason::MailboxFull => "mailboxfull",
            Reason::MailerError => "mailererror",
            Reason::MesgTooBig => "mesgtoobig",
            Reason::NetworkError => "networkerror",
            Reason::NoRelaying => "norelaying",
            Reason::NotAccept => "notaccept",
            Reason::NotCompliantRfc => "notcompliantrfc",
            Reason::OnHold => "onhold",
            Reason::PolicyViolation => "policyviolation",
            Reason::Rejected => "rejected",
            Reason::RequirePtr => "requireptr",
            Reason::SecurityError => "securityerror",
            Reason::SpamDetected => "spamdetected",
            Reason::Speeding => "speeding",
            Reason::Suspend => "suspend",
            Reason::SyntaxError => "syntaxerror",
            Reason::SystemError => "systemerror",
            Reason::SystemFull => "systemfull",
            Reason::TooManyConn => "toomanyconn",
            Reason::Undefined => "undefined",
            Reason::UserUnknown => "userunknown",
            Reason::Vacation => "vacation",
            Reason::VirusDetected => "virusdetected",
        }
    }

    /// Parses a reason name (`userunknown`, ...), ignoring case.
    pub fn from_name(name: &str) -> Option<Reason> {
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(name.trim()))
    }

    /// The family the reason belongs to.
    pub fn family(self) -> Family {
        use Reason::*;
        match self {
            UserUnknown | HostUnknown | HasMoved | NotAccept => Family::Address,
            MailboxFull | Suspend | ExceedLimit | MesgTooBig | SystemFull => Family::Mailbox,
            Blocked | Rejected | PolicyViolation | RequirePtr | BadReputation | AuthFailure
            | SecurityError | NoRelaying | NotCompliantRfc | TooManyConn | Speeding
            | FailedStartTls | SyntaxError => Family::Sender,
            Filtered | SpamDetected | VirusDetected | ContentError => Family::Content,
            Expired | NetworkError | OnHold | SystemError | MailerError | Undefined => {
                Family::Transient
            }
            Feedback => Family::Feedback,
            Vacation => Family::Vacation,
            Delivered => Family::Delivered,
        }
    }

    /// True when the reason is a failure of delivery (not a complaint, auto-reply or success).
    pub fn is_failure(self) -> bool {
        !matches!(
            self,
            Reason::Feedback | Reason::Vacation | Reason::Delivered
        )
    }

    /// Hard bounce or not, as Sisimai decides it: the address itself is dead (unknown user,
    /// unknown domain, moved), or the domain accepts no mail and said so permanently. Every
    /// other failure may go away and counts as soft.
    pub fn is_hard(self, permanent: bool) -> bool {
        match self {
            Reason::UserUnknown | Reason::HostUnknown | Reason::HasMoved => true,
            Reason::NotAccept => permanent,
            _ => false,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Family::Address => "address",
            Family::Mailbox => "mailbox",
            Family::Sender => "sender",
            Family::Content => "content",
            Family::Transient => "transient",
            Family::Feedback => "feedback",
            Family::Vacation => "vacation",
            Family::Delivered => "delivered",
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_name(r.as_str()), Some(r));
            let json = serde_json::to_string(&r).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
        assert_eq!(Reason::from_name("nosuchreason"), None);
    }

    #[test]
    fn hard_only_for_dead_addresses() {
        assert!(Reason::UserUnknown.is_hard(false));
        assert!(Reason::NotAccept.is_hard(true));
        assert!(!Reason::NotAccept.is_hard(false));
        assert!(!Reason::MailboxFull.is_hard(true));
        assert!(!Reason::Feedback.is_failure());
    }
}
