//! Bounces that are not RFC 3464 DSNs: qmail, Exim, Sendmail v5, old Exchange, Notes, webmail
//! providers and filters write a human-readable text naming the failed addresses with the
//! remote server's reply next to them. This module finds that report (the text before the copy
//! of the original message), the addresses in it and the words that go with each address.

use crate::address;

/// Lines that start the copy of the original message in the common formats (lower case,
/// compared with the start of a trimmed line).
const ORIGINAL_MARKERS: &[&str] = &[
    "------ this is a copy of the message",
    "------ this is a copy of your message",
    "--- below this line is a copy of the message",
    "--- below this line is the original message",
    "----- original message -----",
    "-----original message-----",
    "------ original message",
    "--- original message",
    "----- unsent message follows -----",
    "----- message header follows -----",
    "----- message header follow",
    "------ received message headers",
    "original message headers",
    "original message follows",
    "------ the original message",
    "----- the original message",
    "the original message was:",
    "the header of the original message",
    "content-type: message/rfc822",
    "content-type: text/rfc822-headers",
    "------- returned message",
    "--- returned message",
    "------ failed message",
    "----- transcript of session follows -----: original",
    "return-path: <",
    "received: from",
    "received: by",
    "message-id: <",
    "--- the header of the original message",
    "the original message headers",
    "included is a copy of the message",
    "--------message header--------",
    "your message reads",
    "a copy of the original message",
    "original message:",
    "message headers follow",
];

/// Subject words of bounces whose sender does not say it is a mailer daemon.
const BOUNCE_SUBJECTS: &[&str] = &[
    "undeliver",
    "undelivered",
    "delivery fail",
    "delivery status notification",
    "failure notice",
    "returned mail",
    "mail delivery",
    "non-delivery",
    "nondeliver",
    "non delivery",
    "could not be delivered",
    "couldn't be delivered",
    "not delivered",
    "returned to sender",
    "delivery failure",
    "delivery problem",
    "delivery notification",
    "mail system error",
    "message not delivered",
    "rejected",
    "warning: could not send",
    "failed delivery",
    "bounce",
    "mail failure",
    "error sending",
    "unable to deliver",
    "delivery report",
    "message you sent",
    "message blocked",
    "permanent error",
];

/// Sentences of failure reports, for bounces whose sender and subject do not say what they are.
const BOUNCE_PHRASES: &[&str] = &[
    "could not be delivered",
    "couldn't be delivered",
    "was not delivered",
    "undeliverable",
    "delivery has failed",
    "delivery failed",
    "failed to deliver",
    "unable to deliver",
    "permanent error",
    "permanent failure",
    "error message below",
    "invalid user address",
    "delivery to the following",
];

/// Sentences of delay warnings (Exim, Sendmail, Exchange), which are not failures.
const DELAY_PHRASES: &[&str] = &[
    "has not yet been delivered",
    "have not yet been delivered",
    "delivery attempts will continue",
    "no action is required on your part",
    "will continue to try",
    "will keep trying",
    "still being retried",
    "is still in the queue",
    "this is only a temporary failure report",
    "delivery has been delayed",
    "message delayed",
    "delayed mail",
    "delivery delayed",
];

/// True when a report text (or the subject) says delivery is only late.
pub(crate) fn is_delay_warning(subject: &str, report: &str) -> bool {
    let subject = subject.to_ascii_lowercase();
    let lower = report.to_ascii_lowercase();
    DELAY_PHRASES
        .iter()
        .any(|p| lower.contains(p) || subject.contains(p))
        || subject.starts_with("warning: message")
}

/// True when a report text reads like a failure report.
pub(crate) fn body_is_bounce(report: &str) -> bool {
    let lower = report.to_ascii_lowercase();
    BOUNCE_PHRASES.iter().any(|p| lower.contains(p))
}

/// True when the subject reads like a bounce's.
pub(crate) fn subject_is_bounce(subject: &str) -> bool {
    let s = subject.to_ascii_lowercase();
    BOUNCE_SUBJECTS.iter().any(|w| s.contains(w))
}

/// The report part of a bounce text: everything before the first copy-of-original marker.
pub(crate) fn report_part(body: &str) -> &str {
    let mut offset = 0;
    let mut seen_text = false;
    for line in body.split_inclusive('\n') {
        let trimmed = line.trim();
        let starts = |m: &str| {
            trimmed.len() >= m.len()
                && trimmed.as_bytes()[..m.len()].eq_ignore_ascii_case(m.as_bytes())
        };
        let is_marker = ORIGINAL_MARKERS.iter().any(|m| starts(m));
        // Header-like markers only count once some report text came before them.
        let header_like = starts("received:") || starts("return-path:") || starts("message-id:");
        if is_marker && (!header_like || seen_text) {
            return &body[..offset];
        }
        if !trimmed.is_empty() {
            seen_text = true;
        }
        offset += line.len();
    }
    body
}

/// Lines whose addresses are not failed recipients: headers quoted in the report, message ids,
/// the sender.
fn ignorable_line(lower: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "from:",
        "reply-to:",
        "sender:",
        "return-path:",
        "message-id:",
        "in-reply-to:",
        "references:",
        "reporting-mta:",
        "x-postfix-sender:",
        "mail from:",
        ">>> mail from",
        "<<< 250",
        "the mail system <",
        "id <",
    ];
    PREFIXES.iter().any(|p| lower.starts_with(p))
        || lower.contains('\u{1b}')
        || lower.contains("please contact")
        || lower.contains("contact your")
        || lower.contains("contact the")
        || lower.contains("contact us")
        || lower.contains("for further assistance")
        || lower.contains("for assistance")
        || lower.contains("envelope-from")
        || lower.contains("mail from:<")
        || lower.contains("message-id")
        || lower.contains("sent by")
        || lower.contains("original sender")
}

/// Most recipients read from one report text (real reports list a handful; this bounds the
/// work on hostile input).
const MAX_RECIPIENTS: usize = 1000;

/// The first line mentioning each candidate recipient, in order.
fn first_mentions(lines: &[&str], exclude: &[String], skip_to_lines: bool) -> Vec<(usize, String)> {
    let mut firsts: Vec<(usize, String)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.contains('@') {
            continue;
        }
        let lower = line.trim().to_ascii_lowercase();
        if ignorable_line(&lower)
            || (skip_to_lines && (lower.starts_with("to:") || lower.starts_with("cc:")))
        {
            continue;
        }
        for addr in address::find_all(line) {
            if exclude.iter().any(|e| address::same(e, &addr)) || address::is_system(&addr) {
                continue;
            }
            if firsts.iter().any(|(_, a)| address::same(a, &addr)) {
                continue;
            }
            firsts.push((i, addr));
            if firsts.len() >= MAX_RECIPIENTS {
                return firsts;
            }
        }
    }
    firsts
}

/// One failed recipient found in a report text, with the text that goes with it.
#[derive(Debug, Clone)]
pub(crate) struct TextRecipient {
    pub address: String,
    pub diagnostic: String,
}

/// Finds the failed recipients of a report text and the words that go with each: the lines
/// from an address's first mention up to the next recipient's. `exclude` holds addresses that
/// are not recipients (the sender, the bounce's own addresses).
pub(crate) fn recipients(report: &str, exclude: &[String]) -> Vec<TextRecipient> {
    let lines: Vec<&str> = report.lines().collect();
    // (line index, address) of each recipient's first mention. Lines quoting the original's
    // To/Cc name recipients only when nothing else does (Exchange's "Your message To: ...").
    let mut firsts = first_mentions(&lines, exclude, true);
    if firsts.is_empty() {
        firsts = first_mentions(&lines, exclude, false);
    }
    let mut out = Vec::with_capacity(firsts.len());
    for (n, (start, addr)) in firsts.iter().enumerate() {
        let end = firsts
            .iter()
            .skip(n + 1)
            .map(|(i, _)| *i)
            .find(|i| i > start)
            .unwrap_or(lines.len());
        let mut diagnostic = lines[*start..end.max(start + 1)].join("\n");
        if diagnostic.len() > 4096 {
            let cut = (0..=4096)
                .rev()
                .find(|&i| diagnostic.is_char_boundary(i))
                .unwrap_or(0);
            diagnostic.truncate(cut);
        }
        out.push(TextRecipient {
            address: addr.clone(),
            diagnostic,
        });
    }
    out
}

/// The text of a report with the recipient lines' context removed: what to classify when the
/// per-recipient block says nothing (the reason stands in a sentence above the addresses).
pub(crate) fn preamble<'a>(report: &'a str, first_recipient_line: Option<&str>) -> &'a str {
    match first_recipient_line.and_then(|l| report.find(l)) {
        Some(pos) => &report[..pos],
        None => report,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_stops_at_the_copy() {
        let body = "Hi.\n<a@x.example>:\n550 no\n--- Below this line is a copy of the message.\n\nTo: b@y.example\n";
        let r = report_part(body);
        assert!(r.contains("550 no") && !r.contains("b@y.example"));
    }

    #[test]
    fn each_address_gets_its_own_words() {
        let report = "  a@x.example\n    550 User unknown\n  b@x.example\n    552 Mailbox full\n";
        let found = recipients(report, &[]);
        assert_eq!(found.len(), 2);
        assert!(found[0].diagnostic.contains("User unknown"));
        assert!(found[1].diagnostic.contains("Mailbox full"));
    }
}
