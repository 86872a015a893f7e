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

/// Wording rules, in priority order. Phrases are lower case with single spaces.
const RULES: &[(Reason, &[&str])] = &[
    // A local delivery program's failure, whatever words it prints after.
    (
        Reason::MailerError,
        &[
            "procmail:",
            "mailer error",
            "command died",
            "x-unix",
            "pipe to |",
            "unknown mailer error",
        ],
    ),
    (
        Reason::NotAccept,
        &[
            "no smtp service",
            "does not receive mail",
            "does not accept mail",
            "doesn't accept mail",
            "accepts no mail",
            "not accept any mail",
            "null mx",
            "nullmx",
        ],
    ),
    (
        Reason::AuthFailure,
        &[
            "dmarc",
            "spf check",
            "spf fail",
            "spf validation",
            "spf record",
            "spf)",
            "sender policy framework",
            "dkim",
            "domainkeys",
            "sender authentication",
            "is not authorized by domain",
            "unauthenticated email",
            "not pass authentication checks",
            "message does not pass authentication",
            "authentication checks did not pass",
            "failed authentication",
            "sender's domain does not allow",
            "5.7.26",
            "5.7.509",
            "5.7.515",
            "5.7.23 ",
        ],
    ),
    (
        Reason::RequirePtr,
        &[
            "reverse dns",
            "reverse-dns",
            "reverse lookup",
            "reverse hostname",
            "ptr record",
            "no ptr",
            "rdns",
            "cannot find your hostname",
            "cannot resolve your address",
            "ip name lookup failed",
            "client host rejected: cannot find your",
            "the ip address sending this message does not have",
            "not have a ptr",
            "no reverse",
            "unresolvable address",
            "5.7.25 ",
            "please set up dns",
            "hostname lookup failed",
            "host name lookup failed",
        ],
    ),
    (
        Reason::MailboxFull,
        &[
            "recipient's mailbox exceeded",
            "messages in recipient's mailbox",
            "mailbox exceeded",
            "mailbox full",
            "mailbox is full",
            "mailbox has exceeded",
            "mailbox size limit",
            "mailbox exceeds",
            "mail box full",
            "mailbox would exceed",
            "account is full",
            "inbox is full",
            "over quota",
            "over the quota",
            "overquota",
            "quota exceeded",
            "exceeded quota",
            "exceeded storage",
            "exceeds quota",
            "storage quota",
            "disk quota",
            "quota exceed",
            "is over its quota",
            "user is over",
            "mailfolder is full",
            "full mailbox",
            "not enough storage",
            "out of storage",
            "exceeded its storage",
            "exceeded the quota",
            "would exceed the quota",
            "is full",
            "too many messages in this mailbox",
            "recipient's mailbox is full",
            "mailbox is over",
        ],
    ),
    (
        Reason::MesgTooBig,
        &[
            "message too big",
            "message too large",
            "message is too big",
            "message is too large",
            "message size exceeds",
            "message exceeds maximum",
            "exceeds fixed maximum message size",
            "exceeds the maximum message size",
            "maximum message size",
            "size limit",
            "message length exceeds",
            "mail size exceeds",
            "too large for",
            "message larger than",
            "message file too big",
        ],
    ),
    (
        Reason::Suspend,
        &[
            "account disabled",
            "account has been disabled",
            "account is disabled",
            "account is inactive",
            "mailbox disabled",
            "mailbox is disabled",
            "mailbox is inactive",
            "mailbox has been disabled",
            "mailbox inactive",
            "mailbox unavailable: disabled",
            "account suspended",
            "account has been suspended",
            "account is suspended",
            "has been suspended",
            "is suspended",
            "suspended account",
            "account expired",
            "account has expired",
            "account is locked",
            "account locked",
            "temporarily disabled",
            "not currently being accepted",
            "extended inactivity",
            "user suspended",
            "recipient suspended",
            "this account has been",
            "inactive user",
            "no longer active",
            "is not active",
            "mailbox not active",
            "account frozen",
            "is inactive",
            "is frozen",
            "mailbox frozen",
            "is deactivated",
            "deactivated",
        ],
    ),
    (
        Reason::HasMoved,
        &[
            "has moved",
            "user not local; please try",
            "address changed",
            "no longer at this address",
            "no longer with",
        ],
    ),
    (
        Reason::NoRelaying,
        &[
            "configured to relay",
            "relay mail",
            "relay quota",
            "relay access denied",
            "relaying denied",
            "relay denied",
            "relaying not allowed",
            "relay not permitted",
            "not permitted to relay",
            "unable to relay",
            "we do not relay",
            "not authorized to relay",
            "relaying to",
            "relay not allowed",
            "relaying mail to",
            "relay rejected",
            "relay prohibited",
            "no relaying",
            "is not a relay",
            "relaying is prohibited",
            "relay not authorized",
        ],
    ),
    (
        Reason::NotCompliantRfc,
        &[
            "rfc 5322",
            "rfc5322",
            "rfc 2822",
            "rfc2822",
            "rfc 822",
            "not rfc compliant",
            "non rfc compliant",
            "not compliant with",
            "multiple from",
            "multiple \"from\"",
            "duplicate header",
            "headers are not rfc",
            "message is not rfc",
            "more than one from",
            "non-compliant",
        ],
    ),
    (
        Reason::UserUnknown,
        &[
            "user unknown",
            "unknown user",
            "user is unknown",
            "unknown recipient",
            "recipient unknown",
            "unknown address",
            "address unknown",
            "unknown local part",
            "unknown or illegal alias",
            "no such user",
            "no such mailbox",
            "no such recipient",
            "no such account",
            "no such local user",
            "no such person",
            "no such address",
            "no mailbox here",
            "no mailbox by that name",
            "mailbox not found",
            "mailbox does not exist",
            "mailbox doesn't exist",
            "mailbox unavailable or not local",
            "user not found",
            "user doesn't exist",
            "user does not exist",
            "recipient not found",
            "recipient does not exist",
            "recipient doesn't exist",
            "address does not exist",
            "address doesn't exist",
            "account does not exist",
            "account doesn't exist",
            "email account that you tried to reach does not exist",
            "does not exist here",
            "invalid recipient",
            "invalid mailbox",
            "invalid address",
            "invalid user",
            "is not a valid mailbox",
            "not a valid recipient",
            "not a valid user",
            "bad destination mailbox address",
            "recipient name is not recognized",
            "recipient address rejected: access denied",
            "recipient address rejected: user",
            "recipient address rejected: undeliverable address",
            "recipient address rejected: unknown",
            "recipient address rejected: invalid",
            "undeliverable address",
            "not our customer",
            "this user doesn't have a",
            "user doesn't have a",
            "unknown account",
            "address not present in directory",
            "recipient not found by smtp address lookup",
            "mailbox unknown",
            "no valid recipients",
            "no user",
            "user not exist",
            "not exist",
            "does not have an account",
            "is not a known user",
            "unknown mailbox",
            "invalid recipient address",
            "recipient rejected",
            "address rejected",
            "unrouteable address",
            "unroutable address",
            "user reject",
            "mailbox not available",
            "mailbox unavailable",
            "name is not recognized",
            "not listed in",
            "cannot be found",
            "destination address rejected",
            "dd this user doesn't",
        ],
    ),
    (
        Reason::HostUnknown,
        &[
            "host unknown",
            "unknown host",
            "host not found",
            "domain not found",
            "no such domain",
            "domain does not exist",
            "domain doesn't exist",
            "unrouteable mail domain",
            "unroutable mail domain",
            "host or domain name not found",
            "unknown domain",
            "domain name not found",
            "name or service not known",
            "nxdomain",
            "non-existent domain",
            "nonexistent domain",
            "illegal host/domain name",
            "no mx record",
            "no mx or a",
            "has no mx",
            "domain is not",
            "couldn't find any host",
            "could not find any host",
            "host name is unknown",
            "recipient domain",
            "unrouteable domain",
            "all relevant mx records point to non-existent hosts",
            "no route for",
            "no such host",
        ],
    ),
    (
        Reason::BadReputation,
        &[
            "user complaints",
            "unexpected volume",
            "poor reputation",
            "bad reputation",
            "low reputation",
            "sender reputation",
            "ip reputation",
            "domain reputation",
            "reputation",
        ],
    ),
    (
        Reason::Rejected,
        &[
            "address is not verified",
            "identities failed the check",
            "groups.google.com",
            "sender address rejected",
            "sender rejected",
            "sender denied",
            "sender verify failed",
            "sender verification",
            "domain of sender address",
            "sender domain must exist",
            "sender domain does not exist",
            "invalid sender",
            "bad sender",
            "mail from rejected",
            "we do not accept mail from",
            "refused to accept mail from",
            "sender is not allowed",
            "sender not allowed",
            "address verification failed",
            "not allowed to send",
            "does not accept mail from you",
            "sender address",
            "your email address",
            "from address",
            "mail from:",
            "envelope sender",
            "return path",
            "rejected by the sender",
            "is not permitted to send",
            "unable to verify sender",
            "sender mismatch",
            "blocked by the recipient",
            "group only accepts",
            "you don't have permission to post",
            "does not have permission to post",
            "you do not have permission",
            "permission to post",
            "only members can post",
            "not authorized to send",
        ],
    ),
    (
        Reason::VirusDetected,
        &[
            "virus",
            "infected",
            "malware",
            "malicious",
            "unsafe attachment",
        ],
    ),
    (
        Reason::SpamDetected,
        &[
            "blacklisted url",
            "url in message",
            "uribl",
            "surbl",
            "spam message",
            "message is spam",
            "identified as spam",
            "classified as spam",
            "considered spam",
            "detected as spam",
            "looks like spam",
            "likely spam",
            "suspected spam",
            "spam content",
            "spam score",
            "spam detected",
            "spam filter",
            "junk mail",
            "bulk mail",
            "unsolicited",
            "spam-like",
            "spamlike",
            "rejected as spam",
            "high probability of spam",
            "spam policy",
            "our spam",
            "message content rejected",
            "content rejected",
            "as spam",
        ],
    ),
    (
        Reason::Speeding,
        &[
            "rate limit",
            "ratelimit",
            "rate-limit",
            "sending rate",
            "receiving mail at a rate",
            "too many messages",
            "too many emails",
            "too much mail",
            "sent too many",
            "exceeded the rate",
            "message rate",
            "throttl",
            "sending too fast",
            "unusual rate",
            "too fast",
        ],
    ),
    (
        Reason::TooManyConn,
        &[
            "too many connections",
            "too many concurrent",
            "connection limit",
            "too many smtp sessions",
            "too many sessions",
            "maximum number of connections",
            "too many simultaneous",
            "connections from your ip",
            "too many recipients",
            "concurrent connection",
            "too many errors",
        ],
    ),
    (
        Reason::FailedStartTls,
        &[
            "not support tls",
            "support starttls",
            "tls (state",
            "starttls",
            "tls handshake",
            "tls negotiation",
            "tls is required",
            "tls required",
            "must issue a starttls",
            "encryption required",
        ],
    ),
    (
        Reason::Blocked,
        &[
            "after initial connection",
            "after ehlo",
            "after helo",
            "in reply to ehlo",
            "in reply to helo",
            "during greeting",
            "smtp greeting",
            "connection rejected by",
            "blocked",
            "blacklist",
            "blocklist",
            "block list",
            "black list",
            "denylist",
            "dnsbl",
            "rbl",
            "spamhaus",
            "spamcop",
            "barracuda",
            "sorbs",
            "listed at",
            "listed on",
            "listed in",
            "is listed",
            "client host rejected",
            "your ip",
            "sender ip",
            "ip address",
            "banned",
            "access denied",
            "connection refused",
            "refused to talk",
            "not accepting mail from",
            "poor sender",
            "rejected by dns",
            "dynamic ip",
            "residential",
            "is not allowed to send mail",
            "connection rejected",
            "your host",
            "host rejected",
            "has been temporarily rate",
            "service unavailable",
            "jmrbl",
            "denied",
        ],
    ),
    (
        Reason::PolicyViolation,
        &[
            "policy violation",
            "violates",
            "violation of",
            "policy reasons",
            "local policy",
            "security policy",
            "policy",
            "prohibited",
            "not allowed",
            "content filter",
            "attachment",
        ],
    ),
    (
        Reason::SecurityError,
        &[
            "auth capability",
            "send mail as",
            "customfromdenied",
            "authentication required",
            "authentication is required",
            "must authenticate",
            "auth required",
            "authentication failed",
            "not authenticated",
            "authentication mechanism",
            "insecure",
            "security",
            "certificate",
        ],
    ),
    (
        Reason::SystemFull,
        &[
            "insufficient system storage",
            "system storage",
            "disk full",
            "disk is full",
            "out of disk",
            "insufficient disk",
            "file system full",
            "system full",
            "not enough disk",
        ],
    ),
    (
        Reason::Filtered,
        &[
            "due to recipient's preferences",
            "recipient's preferences",
            "rejected by recipient",
            "filtered",
            "filter",
            "refused by recipient",
            "recipient has chosen",
            "not accepting mail with",
            "blocked by recipient",
        ],
    ),
    (
        Reason::Expired,
        &[
            "still undelivered",
            "message still undelivered",
            "delivery time expired",
            "retry timeout exceeded",
            "retry time not reached",
            "message expired",
            "has expired",
            "have expired",
            "expired",
            "giving up",
            "gave up",
            "maximum time",
            "too long in the queue",
            "queue lifetime",
            "could not be delivered within",
            "could not be delivered for",
            "unable to deliver for",
            "time limit",
            "timeout waiting",
            "delivery attempts will continue",
        ],
    ),
    (
        Reason::MailerError,
        &[
            "mailer error",
            "command died",
            "command failed",
            "command output",
            "pipe to",
            "procmail",
            "exit code",
            "exit status",
            "x-unix",
            "local delivery failed",
            "unknown mailer",
            "error in command",
        ],
    ),
    (
        Reason::NetworkError,
        &[
            "connection timed out",
            "connection refused",
            "network is unreachable",
            "no route to host",
            "lost connection",
            "connection reset",
            "connection dropped",
            "unable to connect",
            "could not connect",
            "couldn't connect",
            "can't connect",
            "cannot connect",
            "timed out",
            "timeout",
            "dns",
            "name server",
            "nameserver",
            "loops back",
            "mail loop",
            "loop detected",
            "too many hops",
            "routing loop",
            "temporary lookup failure",
            "host is unreachable",
            "unreachable",
            "failed to connect",
            "connection closed",
            "remote server did not respond",
            "malformed or unexpected name server reply",
            "host not responding",
        ],
    ),
    (
        Reason::SyntaxError,
        &[
            "command parameter not implemented",
            "parameter not implemented",
            "not implemented",
            "syntax error",
            "command unrecognized",
            "unrecognized command",
            "command not recognized",
            "bad sequence of commands",
            "command not implemented",
            "line too long",
            "protocol error",
        ],
    ),
    (
        Reason::SystemError,
        &[
            "system error",
            "internal error",
            "server error",
            "local error",
            "temporary failure",
            "system config",
            "configuration error",
            "misconfigur",
            "resources",
            "not available",
            "i/o error",
            "try again later",
            "unable to deliver",
            "processing error",
        ],
    ),
    (
        Reason::ContentError,
        &[
            "content error",
            "message content",
            "mime",
            "header",
            "encoding",
        ],
    ),
];

/// Phrases that hint at a reason without naming it ("denied", "policy", "not exist"): they
/// decide only when no specific phrase matched and the status code is not specific either.
const WEAK: &[&str] = &[
    "not exist",
    "no user",
    "cannot be found",
    "not listed in",
    "mailbox unavailable",
    "mailbox not available",
    "recipient rejected",
    "address rejected",
    "unrouteable address",
    "unroutable address",
    "invalid address",
    "user reject",
    "name is not recognized",
    "destination address rejected",
    "recipient domain",
    "domain is not",
    "no route for",
    "sender address",
    "your email address",
    "from address",
    "mail from:",
    "envelope sender",
    "return path",
    "your ip",
    "sender ip",
    "ip address",
    "access denied",
    "service unavailable",
    "denied",
    "your host",
    "host rejected",
    "blocked",
    "listed in",
    "listed on",
    "is listed",
    "policy",
    "local policy",
    "security policy",
    "prohibited",
    "not allowed",
    "attachment",
    "security",
    "certificate",
    "insecure",
    "filter",
    "filtered",
    "expired",
    "has expired",
    "have expired",
    "giving up",
    "gave up",
    "time limit",
    "maximum time",
    "timed out",
    "timeout",
    "dns",
    "unreachable",
    "name server",
    "nameserver",
    "not available",
    "try again later",
    "resources",
    "unable to deliver",
    "temporary failure",
    "processing error",
    "mime",
    "header",
    "encoding",
    "message content",
    "as spam",
    "is full",
    "size limit",
    "too large for",
    "deactivated",
    "is not active",
    "no longer active",
    "this account has been",
    "too fast",
    "throttl",
    "too many errors",
    "too many recipients",
    "infected",
    "malicious",
    "connection closed",
    "lost connection",
    "reputation",
    "content filter",
    "not authorized to send",
    "is not a relay",
    "relaying to",
    "groups.google.com",
];

/// Priority added to weak phrases, above every rule index.
const WEAK_OFFSET: usize = 1000;

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
        out.extend(c.to_lowercase());
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

/// True when the text holds a specific (not weak) wording rule.
pub(crate) fn has_strong_wording(text: &str) -> bool {
    reason_from_text(&normalise(text)).is_some_and(|(_, weak)| !weak)
}

/// True when the text says the reply answered RCPT TO (and not DATA).
pub(crate) fn says_rcpt_stage(text: &str) -> bool {
    let n = normalise(text);
    rcpt_stage(&n) && !after_data(&n)
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
    let normalised = normalise(text);
    let permanent = match (status, reply_code) {
        (Some(s), _) => s.class == 5,
        (None, Some(code)) => code >= 500,
        (None, None) => true,
    };
    let from_text = reason_from_text(&normalised);
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
        || (rcpt_stage(&normalised) && !after_data(&normalised));
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

/// Wording that names a directory lookup of the address, which no content filter says: enough
/// on its own for "user unknown" to mean a dead address.
const DEFINITIVE_UNKNOWN: &[&str] = &[
    "recipient name is not recognized",
    "not listed in public name",
    "not listed in domino directory",
    "mailbox unavailable",
    "recipient not found by smtp address lookup",
    "email account that you tried to reach does not exist",
    "address not present in directory",
    "does not exist",
    "doesn't exist",
    "no mailbox here by that name",
    "recipient address rejected: access denied",
];

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
