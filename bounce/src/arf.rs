//! ARF feedback-loop complaints (RFC 5965): a `message/feedback-report` part says what kind of
//! feedback it is and about which recipient; the returned message (or its headers) fills in
//! what the report leaves out. Parsed here rather than with mail-auth, which would bring a DNS
//! resolver into a crate that only reads bytes.

use crate::address;
use crate::analyse::{Analysis, Kind, Parts, RecipientFailure};
use crate::reason::Reason;

/// Fills `analysis` from the text of a feedback-report part.
pub(crate) fn fill(analysis: &mut Analysis, report: &str, parts: &Parts) {
    let mut feedback_type = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut mail_from = None;
    let mut source_ip = None;
    for line in report.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "feedback-type" => feedback_type = Some(value.to_ascii_lowercase()),
            "original-rcpt-to" | "removal-recipient" => {
                if let Some(a) = address::clean(value) {
                    if !rcpts.iter().any(|r| address::same(r, &a)) {
                        rcpts.push(a);
                    }
                }
            }
            "original-mail-from" => mail_from = address::clean(value),
            "source-ip" => source_ip = Some(value.to_owned()),
            _ => {}
        }
    }
    if rcpts.is_empty() {
        rcpts.extend(parts.complaint_recipient.iter().cloned());
    }
    if rcpts.is_empty() {
        rcpts = parts.original_recipients.clone();
    }
    if rcpts.is_empty() {
        rcpts.push(String::new());
    }
    analysis.kind = Kind::Feedback;
    analysis.feedback_type = Some(feedback_type.unwrap_or_else(|| "abuse".to_owned()));
    if mail_from.is_some() {
        analysis.original_return_path = mail_from;
    }
    let diagnostic = source_ip
        .map(|ip| format!("source ip {ip}"))
        .unwrap_or_default();
    analysis.recipients = rcpts
        .into_iter()
        .map(|recipient| RecipientFailure {
            recipient,
            status: None,
            reply_code: None,
            reason: Reason::Feedback,
            hard: false,
            diagnostic: diagnostic.clone(),
            action: None,
            remote_mta: None,
        })
        .collect();
}
