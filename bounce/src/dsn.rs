//! The machine-readable part of an RFC 3464 delivery status notification
//! (`message/delivery-status`, or `message/global-delivery-status` from RFC 6533): one block of
//! per-message fields, then one block per recipient. mail-parser hands us the part's text; the
//! field parsing is ours, and tolerant (missing blank lines, odd case, folded lines).

use crate::address;

/// Most recipients read from one DSN (bounds the work on hostile input).
const MAX_RECIPIENTS: usize = 1000;

/// What a DSN says about one recipient.
#[derive(Debug, Clone, Default)]
pub(crate) struct DsnRecipient {
    pub final_recipient: Option<String>,
    pub original_recipient: Option<String>,
    pub action: Option<String>,
    pub status: Option<String>,
    pub remote_mta: Option<String>,
    pub diagnostic: Option<String>,
}

impl DsnRecipient {
    fn has_address(&self) -> bool {
        self.final_recipient.is_some() || self.original_recipient.is_some()
    }

    /// The recipient address: Final-Recipient, else Original-Recipient.
    pub fn address(&self) -> Option<String> {
        self.final_recipient
            .as_deref()
            .and_then(address::clean)
            .or_else(|| self.original_recipient.as_deref().and_then(address::clean))
    }
}

/// The per-message fields that matter here.
#[derive(Debug, Clone, Default)]
pub(crate) struct DsnMessage {
    pub reporting_mta: Option<String>,
    pub recipients: Vec<DsnRecipient>,
}

/// Unfolds the part into `(name, value)` fields, each with a flag saying a blank line came
/// before it.
fn fields(text: &str) -> Vec<(String, String, bool)> {
    let mut out: Vec<(String, String, bool)> = Vec::new();
    let mut blank = false;
    for line in text.lines() {
        if line.trim().is_empty() {
            blank = true;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
                continue;
            }
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if !name.is_empty() && !name.contains(' ') {
                out.push((name.to_ascii_lowercase(), value.trim().to_owned(), blank));
                blank = false;
            }
        }
    }
    out
}

/// Parses the text of a delivery-status part. Blocks are separated by blank lines; a block
/// naming a recipient (Final-Recipient or Original-Recipient, in any order with the other
/// fields) is one recipient, or several when it names several without blank lines between.
pub(crate) fn parse(text: &str) -> DsnMessage {
    let mut msg = DsnMessage::default();
    let all = fields(text);
    let mut blocks: Vec<Vec<(String, String)>> = Vec::new();
    for (name, value, after_blank) in all {
        if after_blank || blocks.is_empty() {
            blocks.push(Vec::new());
        }
        if let Some(block) = blocks.last_mut() {
            block.push((name, value));
        }
    }
    for block in blocks {
        let finals = block.iter().filter(|(n, _)| n == "final-recipient").count();
        let originals = block
            .iter()
            .filter(|(n, _)| n == "original-recipient")
            .count();
        if finals == 0 && originals == 0 {
            if let Some((_, v)) = block.iter().find(|(n, _)| n == "reporting-mta") {
                msg.reporting_mta = Some(strip_type(v));
            }
            continue;
        }
        // The field that starts each recipient when a block holds several.
        let splitter = if finals >= originals {
            "final-recipient"
        } else {
            "original-recipient"
        };
        let mut current = DsnRecipient::default();
        let mut seen_splitter = false;
        for (name, value) in block {
            if name == splitter {
                if seen_splitter && finals.max(originals) > 1 {
                    msg.recipients.push(std::mem::take(&mut current));
                }
                seen_splitter = true;
            }
            match name.as_str() {
                "final-recipient" => current.final_recipient = Some(value),
                "x-actual-recipient" if current.final_recipient.is_none() => {
                    current.final_recipient = Some(value)
                }
                "original-recipient" => current.original_recipient = Some(value),
                "action" => current.action = Some(value.to_ascii_lowercase()),
                "status" => current.status = Some(value),
                "remote-mta" => current.remote_mta = Some(strip_type(&value)),
                "diagnostic-code" => current.diagnostic = Some(strip_type(&value)),
                _ => {}
            }
        }
        if current.has_address() {
            msg.recipients.push(current);
        }
        if msg.recipients.len() >= MAX_RECIPIENTS {
            msg.recipients.truncate(MAX_RECIPIENTS);
            break;
        }
    }
    msg
}

/// Strips the `type;` prefix of a DSN field value (`smtp; 550 ...`, `dns; mx.example`).
fn strip_type(value: &str) -> String {
    match value.split_once(';') {
        Some((kind, rest))
            if !kind.trim().is_empty()
                && kind.trim().len() < 16
                && kind
                    .trim()
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            rest.trim().to_owned()
        }
        _ => value.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_recipient_blocks() {
        let text = "Reporting-MTA: dns; mx.example\nArrival-Date: x\n\n\
            Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\n\
            Diagnostic-Code: smtp; 550 5.1.1 <a@example.org>:\n  User unknown\n\n\
            Final-Recipient: rfc822; b@example.org\nAction: delayed\nStatus: 4.4.1\n";
        let dsn = parse(text);
        assert_eq!(dsn.reporting_mta.as_deref(), Some("mx.example"));
        assert_eq!(dsn.recipients.len(), 2);
        assert_eq!(
            dsn.recipients[0].address().as_deref(),
            Some("a@example.org")
        );
        assert_eq!(
            dsn.recipients[0].diagnostic.as_deref(),
            Some("550 5.1.1 <a@example.org>: User unknown")
        );
        assert_eq!(dsn.recipients[1].action.as_deref(), Some("delayed"));
    }

    #[test]
    fn recipients_without_blank_lines_are_split() {
        let text = "Final-Recipient: rfc822; a@x.example\nStatus: 5.0.0\n\
            Final-Recipient: rfc822; b@x.example\nStatus: 5.0.0\n";
        assert_eq!(parse(text).recipients.len(), 2);
        let fields_first = "Action: failed\nStatus: 5.0.0\nFinal-recipient: rfc822;c@x.example\n";
        let dsn = parse(fields_first);
        assert_eq!(dsn.recipients[0].action.as_deref(), Some("failed"));
    }
}
