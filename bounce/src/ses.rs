//! Amazon SES notifications delivered by e-mail (through SNS): a JSON document instead of a
//! DSN, with `notificationType` `Bounce`, `Complaint` or `Delivery`. Line wrapping on the way
//! may have broken the JSON (`!` + line end + space inserted in long lines); that is undone
//! before parsing.

use serde_json::Value;

use crate::analyse::{Action, Analysis, Kind, RecipientFailure};
use crate::classify::{self, find_reply_code, Status};
use crate::reason::Reason;

/// Largest JSON document looked at.
const MAX_JSON: usize = 256 * 1024;

/// Fills `analysis` from an SES notification in `text`; false when there is none.
pub(crate) fn fill(analysis: &mut Analysis, text: &str) -> bool {
    let Some(start) = text.find("{\"notificationType\"") else {
        return false;
    };
    let rest = &text[start..];
    // The SNS footer starts with a "--" line after the JSON.
    let rest = rest.find("\n--").map_or(rest, |end| &rest[..end]);
    let Some(end) = rest.rfind('}') else {
        return false;
    };
    if end > MAX_JSON {
        return false;
    }
    let json = rest[..=end]
        .replace("!\r\n ", "")
        .replace("!\n ", "")
        .replace(['\r', '\n'], "");
    let Ok(doc) = serde_json::from_str::<Value>(&json) else {
        return false;
    };
    let source = doc["mail"]["source"].as_str().map(str::to_owned);
    match doc["notificationType"].as_str() {
        Some("Bounce") => {
            let permanent = doc["bounce"]["bounceType"].as_str() == Some("Permanent");
            let list = doc["bounce"]["bouncedRecipients"].as_array();
            for r in list.into_iter().flatten() {
                let Some(address) = r["emailAddress"].as_str() else {
                    continue;
                };
                let diagnostic = r["diagnosticCode"].as_str().unwrap_or_default();
                let diagnostic = diagnostic
                    .strip_prefix("smtp;")
                    .unwrap_or(diagnostic)
                    .trim();
                let status = r["status"]
                    .as_str()
                    .and_then(Status::parse)
                    .or_else(|| Status::find(diagnostic));
                let reply_code = find_reply_code(diagnostic);
                let mut verdict = classify::classify(status, reply_code, diagnostic, false);
                if !permanent {
                    verdict.hard = false;
                }
                analysis.recipients.push(RecipientFailure {
                    recipient: address.to_owned(),
                    status: status.map(|s| s.to_string()),
                    reply_code,
                    reason: verdict.reason,
                    hard: verdict.hard,
                    diagnostic: diagnostic.to_owned(),
                    action: Some(Action::Failed),
                    remote_mta: None,
                });
            }
            analysis.kind = Kind::Bounce;
        }
        Some("Complaint") => {
            let feedback = doc["complaint"]["complaintFeedbackType"]
                .as_str()
                .unwrap_or("abuse");
            let list = doc["complaint"]["complainedRecipients"].as_array();
            for r in list.into_iter().flatten() {
                if let Some(address) = r["emailAddress"].as_str() {
                    analysis.recipients.push(RecipientFailure {
                        recipient: address.to_owned(),
                        status: None,
                        reply_code: None,
                        reason: Reason::Feedback,
                        hard: false,
                        diagnostic: String::new(),
                        action: None,
                        remote_mta: None,
                    });
                }
            }
            analysis.kind = Kind::Feedback;
            analysis.feedback_type = Some(feedback.to_owned());
        }
        _ => analysis.kind = Kind::NotBounce,
    }
    if source.is_some() {
        analysis.original_return_path = source;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_wrapped_bounce_notification() {
        let text = "{\"notificationType\":\"Bounce\",\"bounce\":{\"bounceType\":\"Permanent\",\
            \"bouncedRecipients\":[{\"emailAddress\":\"a@x.example\",\"action\":\"failed\",\
            \"status\":\"5.1.1\",\"diagnosticCode\":\"smtp; 550 5.1.1 user unknown\"}]},\
            \"mail\":{\"source\":\"s@y.ex!\n ample\"}}\n\n--\nunsubscribe here\n";
        let mut a = crate::analyse::analyse(b"");
        assert!(fill(&mut a, text));
        assert_eq!(a.kind, Kind::Bounce);
        assert_eq!(a.recipients[0].reason, Reason::UserUnknown);
        assert!(a.recipients[0].hard);
        assert_eq!(a.original_return_path.as_deref(), Some("s@y.example"));
    }
}
