//! One classifier for every failure, whether it came back as a bounce or as a synchronous SMTP
//! reply: the MTA's own wording first (it says the most: "mailbox full", "listed at
//! Spamhaus"), then the RFC 3463 enhanced status code, then the basic reply code.
//!
//! The wording rules are phrases real MTAs and providers write (Postfix, Exim, Sendmail, qmail,
//! Exchange, Gmail, Yahoo, ...), matched in one pass (Aho-Corasick) over the lower-cased text
//! with runs of white space folded. Rules are in priority order: when several phrases match, the
//! earliest rule wins (a "mailbox full" beats the "rejected" around it).

use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, MatchKind};

use crate::reason::Reason;
use crate::rules::{DEFINITIVE_UNKNOWN, RULES, WEAK, WEAK_OFFSET};

/// An RFC 3463 enhanced status code `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl Status {
    /// Parses `5.1.1` (surrounding text ignored: the first code-shaped token is taken).
    pub fn parse(text: &str) -> Option<Status> {
        let text = text.trim();
        let mut parts = text.split('.');
        let class = parts.next()?.trim().parse::<u8>().ok()?;
        let subject = parts.next()?.trim().parse::<u16>().ok()?;
        let detail_text: String = parts
            .next()?
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        let detail = detail_text.parse::<u16>().ok()?;
        if !(2..=5).contains(&class) || subject > 999 || detail > 999 {
            return None;
        }
        Some(Status {
            class,
            subject,
            detail,
        })
    }

    /// Finds the first enhanced status code in free text (`550 5.1.1 <a@b>: ...`).
    pub fn find(text: &str) -> Option<Status> {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if matches!(b, b'2' | b'4' | b'5')
                && bytes.get(i + 1) == Some(&b'.')
                && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'.'))
            {
                let end = bytes[i..]
                    .iter()
                    .position(|c| !(c.is_ascii_digit() || *c == b'.'))
                    .map_or(bytes.len(), |p| i + p);
                let token = text[i..end].trim_end_matches('.');
                if token.split('.').count() == 3 && token.split('.').all(|p| !p.is_empty()) {
                    if let Some(status) = Status::parse(token) {
                        return Some(status);
                    }
                }
                i = end.max(i + 1);
                continue;
            }
            i += 1;
        }
        None
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// Finds a basic SMTP reply code (`550`, `421`, ...) at the start of a word in free text.
pub(crate) fn find_reply_code(text: &str) -> Option<u16> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 3 <= bytes.len() {
        let window = &bytes[i..i + 3];
        if matches!(window[0], b'2' | b'4' | b'5')
            && window[1].is_ascii_digit()
            && window[2].is_ascii_digit()
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'.'))
            && bytes
                .get(i + 3)
                .is_none_or(|c| matches!(c, b' ' | b'-' | b'\t' | b'\r' | b'\n'))
        {
            let code = u16::from(window[0] - b'0') * 100
                + u16::from(window[1] - b'0') * 10
                + u16::from(window[2] - b'0');
            if (window[1] - b'0') <= 5 {
                return Some(code);
            }
        }
        i += 1;
    }
    None
}

struct Matcher {
    automaton: AhoCorasick,
    /// Rule index (priority) of each pattern.
    rule_of: Vec<usize>,
}

fn matcher() -> Option<&'static Matcher> {
    static MATCHER: OnceLock<Option<Matcher>> = OnceLock::new();
    MATCHER
        .get_or_init(|| {
            let mut patterns = Vec::new();
            let mut rule_of = Vec::new();
            for (i, (_, phrases)) in RULES.iter().enumerate() {
                for p in *phrases {
                    patterns.push(*p);
                    rule_of.push(if WEAK.contains(p) { i + WEAK_OFFSET } else { i });
                }
            }
            let automaton = AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .build(&patterns)
                .ok()?;
            Some(Matcher { automaton, rule_of })
        })
        .as_ref()
}

/// Lower-cases and folds runs of white space into one space, so phrases split over lines
/// match.
pub(crate) fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// The reason the wording says, if any rule matches `normalised` text, and whether only a weak
/// phrase said it.
pub(crate) fn reason_from_text(normalised: &str) -> Option<(Reason, bool)> {
    let m = matcher()?;
    let mut best: Option<usize> = None;
    for hit in m.automaton.find_overlapping_iter(normalised) {
        let rule = m.rule_of[hit.pattern().as_usize()];
        if best.is_none_or(|b| rule < b) {
            best = Some(rule);
            if rule == 0 {
                break;
            }
        }
    }
    best.map(|i| (RULES[i % WEAK_OFFSET].0, i >= WEAK_OFFSET))
}

/// True when the normalised text holds a specific (not weak) wording rule.
pub(crate) fn has_strong_wording(normalised: &str) -> bool {
    reason_from_text(normalised).is_some_and(|(_, weak)| !weak)
}

/// True when the normalised text says the reply answered RCPT TO (and not DATA).
pub(crate) fn says_rcpt_stage(normalised: &str) -> bool {
    rcpt_stage(normalised) && !after_data(normalised)
}

/// The reason an RFC 3463 enhanced status code says on its own, if it is specific enough.
pub(crate) fn reason_from_status(status: Status) -> Option<Reason> {
    let temporary = status.class == 4;
    let reason = match (status.subject, status.detail) {
        (1, 1) | (1, 3) | (1, 4) | (1, 10) if !temporary => Reason::UserUnknown,
        (1, 2) => Reason::HostUnknown,
        (1, 6) => Reason::HasMoved,
        (1, 7) | (1, 8) => Reason::Rejected,
        (2, 1) => Reason::Suspend,
        (2, 2) => Reason::MailboxFull,
        (2, 3) => Reason::ExceedLimit,
        (2, 4) => Reason::SystemError,
        (3, 1) => Reason::SystemFull,
        (3, 2) => Reason::NotAccept,
        (3, 4) => Reason::MesgTooBig,
        (3, _) => Reason::SystemError,
        // 5.4.1 is, in practice, Microsoft's refusal of a recipient or sender it will not
        // take ("Access denied"), not "no answer from host".
        (4, 1) if !temporary => Reason::Rejected,
        (4, 1) | (4, 2) | (4, 3) | (4, 6) | (4, 0) => Reason::NetworkError,
        (4, 4) if temporary => Reason::NetworkError,
        (4, 4) => Reason::HostUnknown,
        (4, 5) => Reason::SystemFull,
        (4, 7) => Reason::Expired,
        (5, 3) => Reason::TooManyConn,
        (5, _) => Reason::SyntaxError,
        (6, _) => Reason::ContentError,
        (7, 1) => Reason::Blocked,
        (7, 7) => Reason::ContentError,
        (7, 9) => Reason::PolicyViolation,
        (7, 13) | (7, 14) => Reason::Suspend,
        (7, 23) | (7, 24) | (7, 26) | (7, 509) | (7, 515) => Reason::AuthFailure,
        (7, 25) => Reason::RequirePtr,
        (7, 27) => Reason::NotAccept,
        (7, 54) => Reason::NoRelaying,
        (7, 0) | (7, _) => Reason::SecurityError,
        _ => return None,
    };
    Some(reason)
}

/// What a failure was, from everything known about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub reason: Reason,
    pub hard: bool,
}

/// Classifies one failed recipient from its status code, reply code and diagnostic text.
/// `retried` says the reporting MTA gave up after retrying (a failed DSN with a 4.x.x status).
///
/// `at_rcpt` says the reply is known to answer RCPT TO (a synchronous per-recipient reply).
/// Otherwise "user unknown" wording counts as a dead address only when the status code is
/// X.1.x or the text says the reply answered RCPT TO; without that evidence (a filter appliance
/// quoting the words, a reply to DATA) it is the recipient side filtering: `filtered`, soft.
pub(crate) fn classify(
    status: Option<Status>,
    reply_code: Option<u16>,
    text: &str,
    at_rcpt: bool,
) -> Verdict {
    classify_normalised(status, reply_code, &normalise(text), at_rcpt)
}

/// [`classify`] for text already passed through [`normalise`].
pub(crate) fn classify_normalised(
    status: Option<Status>,
    reply_code: Option<u16>,
    normalised: &str,
    at_rcpt: bool,
) -> Verdict {
    let permanent = match (status, reply_code) {
        (Some(s), _) => s.class == 5,
        (None, Some(code)) => code >= 500,
        (None, None) => true,
    };
    let from_text = reason_from_text(normalised);
    let specific = status.filter(|s| s.detail != 0);
    let reason = match from_text {
        Some((reason, false)) => Some(reason),
        weak => specific
            .and_then(reason_from_status)
            .or(weak.map(|(r, _)| r))
            .or_else(|| status.and_then(reason_from_status)),
    }
    .unwrap_or(if permanent {
        Reason::Undefined
    } else {
        Reason::Expired
    });
    // A domain that does not resolve *for now* is a DNS problem, not a dead domain.
    let reason = if reason == Reason::HostUnknown && !permanent {
        Reason::NetworkError
    } else {
        reason
    };
    // A "user unknown" answered to DATA, after the server accepted the recipient at RCPT,
    // is the recipient's filter speaking, not a dead address.
    let address_evidence = at_rcpt
        || DEFINITIVE_UNKNOWN.iter().any(|p| normalised.contains(p))
        || status.is_some_and(|s| s.subject == 1)
        || (rcpt_stage(normalised) && !after_data(normalised));
    let reason = if reason == Reason::UserUnknown && !address_evidence {
        Reason::Filtered
    } else {
        reason
    };
    Verdict {
        reason,
        hard: reason.is_hard(permanent),
    }
}

/// True when the text says the reply answered RCPT TO.
fn rcpt_stage(normalised: &str) -> bool {
    ["rcpt to", "rcpt command", "rcpt_to", "rcpt-to"]
        .iter()
        .any(|p| normalised.contains(p))
}

/// True when the text says the reply came after DATA (Postfix "in reply to end of DATA
/// command", Exim "after end of data"). Not a Sendmail transcript's ">>> DATA": with
/// pipelining, RCPT replies arrive after it.
fn after_data(normalised: &str) -> bool {
    [
        "end of data",
        "after data",
        "to data command",
        "after the data",
    ]
    .iter()
    .any(|p| normalised.contains(p))
}

/// Classifies a synchronous SMTP reply, such as a 5xx a sender node got at RCPT or DATA time,
/// with the same rules as bounces. `enhanced` is the RFC 3463 code (`"5.1.1"`) when the server
/// sent one; when it is `None` the text is searched for one. Returns the reason and whether it
/// is a hard bounce. The reply is taken to answer RCPT TO unless its text says DATA (a
/// server that refuses at DATA refuses every recipient alike).
///
/// ```
/// use mailfarm_bounce::{classify_reply, Reason};
/// let (reason, hard) = classify_reply(550, Some("5.1.1"), "<a@example.org>: User unknown");
/// assert_eq!((reason, hard), (Reason::UserUnknown, true));
/// let (reason, hard) = classify_reply(452, None, "4.2.2 Mailbox full");
/// assert_eq!((reason, hard), (Reason::MailboxFull, false));
/// ```
pub fn classify_reply(code: u16, enhanced: Option<&str>, text: &str) -> (Reason, bool) {
    let status = enhanced
        .and_then(Status::parse)
        .or_else(|| Status::find(text));
    let reply = (200..600).contains(&code).then_some(code);
    let verdict = classify(status, reply, text, !after_data(&normalise(text)));
    (verdict.reason, verdict.hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_found_in_text() {
        assert_eq!(
            Status::find("550 5.1.1 <a@b>: no").map(|s| s.to_string()),
            Some("5.1.1".into())
        );
        assert_eq!(Status::find("version 1.5.1.2 here"), None);
        assert_eq!(Status::find("host 192.5.1.1"), None);
        assert_eq!(find_reply_code("host says: 550 5.1.1 no"), Some(550));
        assert_eq!(find_reply_code("id 55012"), None);
    }

    #[test]
    fn wording_beats_generic_codes() {
        assert_eq!(
            classify_reply(550, Some("5.0.0"), "Mailbox is full"),
            (Reason::MailboxFull, false)
        );
        assert_eq!(
            classify_reply(
                554,
                None,
                "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org"
            ),
            (Reason::Blocked, false)
        );
        assert_eq!(
            classify_reply(550, Some("5.1.2"), "whatever"),
            (Reason::HostUnknown, true)
        );
        assert_eq!(classify_reply(550, None, ""), (Reason::Undefined, false));
    }
}
