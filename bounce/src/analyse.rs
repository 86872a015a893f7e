//! From raw message bytes to an [`Analysis`]: what kind of message it is (bounce, delay,
//! complaint, auto-reply or none of them), which recipients failed and why. This is the one
//! entry point the bounce role calls for every message it leases.

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};
use serde::Serialize;

use crate::address;
use crate::classify::{self, find_reply_code, Status};
use crate::dsn;
use crate::reason::Reason;
use crate::text;

/// What kind of message was analysed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A delivery failure report: at least one recipient failed.
    Bounce,
    /// A delivery delay report (`Action: delayed`): not a failure, nothing to suppress.
    Delay,
    /// An automatic reply (RFC 3834, vacation): not a failure.
    AutoReply,
    /// A feedback-loop complaint (ARF, RFC 5965): the recipient marked the mail as spam.
    Feedback,
    /// Anything else, including success DSNs.
    NotBounce,
}

/// The DSN action of a recipient (RFC 3464 section 2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Delivery failed for good.
    Failed,
    /// Delivery is late and still being tried.
    Delayed,
    /// Delivered, relayed or expanded: a success.
    Delivered,
}

/// One recipient of the original message the report is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecipientFailure {
    /// The recipient address as the report names it (may be empty when the report names none;
    /// the VERP return path then tells who it was).
    pub recipient: String,
    /// RFC 3463 enhanced status code (`5.1.1`), when the report gives or implies one.
    pub status: Option<String>,
    /// The remote server's SMTP reply code (`550`), when the report quotes one.
    pub reply_code: Option<u16>,
    /// Why it failed.
    pub reason: Reason,
    /// True for a hard bounce: the address is dead and must not be mailed again.
    pub hard: bool,
    /// The remote server's words or the reporting MTA's explanation, as found.
    pub diagnostic: String,
    /// Failed, delayed, or (for auto-replies and complaints) not a delivery action at all.
    pub action: Option<Action>,
    /// The server that gave the answer, when the report names it.
    pub remote_mta: Option<String>,
}

/// Everything learned from one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Analysis {
    /// What the message is.
    pub kind: Kind,
    /// For a bounce: the failed recipients. For a delay: the delayed ones. For a complaint:
    /// the complained-about recipients (reason `feedback`). For an auto-reply: its sender
    /// (reason `vacation`). Empty otherwise.
    pub recipients: Vec<RecipientFailure>,
    /// ARF `Feedback-Type` (`abuse`, `fraud`, `not-spam`, ...), for complaints.
    pub feedback_type: Option<String>,
    /// The envelope sender of the original message, when the report quotes it (`Return-Path`
    /// of the returned copy, ARF `Original-Mail-From`, DSN `X-Postfix-Sender`). With VERP this is
    /// the signed return path.
    pub original_return_path: Option<String>,
    /// The addresses this report was sent to: `Delivered-To`, `X-Original-To`, `Envelope-To`,
    /// then `To`, in that order. With VERP one of them is the signed return path.
    pub envelope_recipients: Vec<String>,
    /// The bounce's Subject.
    pub subject: Option<String>,
    /// The MTA that wrote the report (DSN `Reporting-MTA`), when known.
    pub reporting_mta: Option<String>,
    /// True when the MIME parser could not read the message at all (it is then
    /// [`Kind::NotBounce`]); worth counting.
    pub malformed: bool,
}

impl Analysis {
    fn empty(kind: Kind) -> Analysis {
        Analysis {
            kind,
            recipients: Vec::new(),
            feedback_type: None,
            original_return_path: None,
            envelope_recipients: Vec::new(),
            subject: None,
            reporting_mta: None,
            malformed: false,
        }
    }

    /// Addresses that may be the VERP return path, best first: the envelope recipients of the
    /// report, then the original message's return path. Check each with
    /// `VerpSigner::verify` (or [`crate::decode_verp`] without the key).
    pub fn verp_candidates(&self) -> impl Iterator<Item = &str> {
        self.envelope_recipients
            .iter()
            .map(String::as_str)
            .chain(self.original_return_path.as_deref())
    }

    /// The recipients that failed (empty unless [`Kind::Bounce`]).
    pub fn failures(&self) -> impl Iterator<Item = &RecipientFailure> {
        self.recipients
            .iter()
            .filter(move |r| self.kind == Kind::Bounce && r.action == Some(Action::Failed))
    }
}

/// Largest message analysed; beyond it only the first part is read (bounces are small, and
/// the caller should have bounded what it stores anyway).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Analyses one message (raw RFC 5322 bytes, any line ends, an mbox `From ` line allowed).
/// Never fails and never panics: what cannot be read is [`Kind::NotBounce`].
///
/// ```
/// let raw = b"From: MAILER-DAEMON@mx.example\r\nTo: b-c1-2s-aaaaaaaaaaaaaaaa@bounces.example\r\n\
/// Subject: Undelivered Mail Returned to Sender\r\nContent-Type: multipart/report; \
/// report-type=delivery-status; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
/// Sorry.\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\
/// \r\nFinal-Recipient: rfc822; gone@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\
/// Diagnostic-Code: smtp; 550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown\r\n\
/// --b--\r\n";
/// let a = mailfarm_bounce::analyse(raw);
/// assert_eq!(a.kind, mailfarm_bounce::Kind::Bounce);
/// assert_eq!(a.recipients[0].recipient, "gone@example.org");
/// assert_eq!(a.recipients[0].reason, mailfarm_bounce::Reason::UserUnknown);
/// assert!(a.recipients[0].hard);
/// ```
pub fn analyse(raw: &[u8]) -> Analysis {
    let raw = &raw[..raw.len().min(MAX_MESSAGE_BYTES)];
    let normalised;
    let raw = if needs_cr_fix(raw) {
        normalised = raw
            .iter()
            .map(|&b| if b == b'\r' { b'\n' } else { b })
            .collect::<Vec<u8>>();
        &normalised[..]
    } else {
        raw
    };
    let raw = skip_mbox_from_line(raw);
    let message = match parse_guarded(raw, false) {
        Ok(Some(message)) => message,
        Ok(None) => return Analysis::empty(Kind::NotBounce),
        Err(Malformed) => {
            let mut analysis = Analysis::empty(Kind::NotBounce);
            analysis.malformed = true;
            return analysis;
        }
    };
    let mut analysis = Analysis::empty(Kind::NotBounce);
    analysis.subject = message.subject().map(str::to_owned);
    analysis.envelope_recipients = envelope_recipients(&message);
    let parts = Parts::collect(&message);
    analysis.original_return_path = parts.original_return_path.clone();

    if let Some(report) = &parts.feedback {
        crate::arf::fill(&mut analysis, report, &parts);
        return analysis;
    }
    // DSN fields pasted into the text (no message/delivery-status part, or MIME that did not
    // parse) are read the same way.
    let embedded = parts.delivery_status.is_none() && {
        let lower = parts.report_text.to_ascii_lowercase();
        lower.contains("final-recipient:") && lower.contains("status:")
    };
    let status_text = if embedded {
        Some(&parts.report_text)
    } else {
        parts.delivery_status.as_ref()
    };
    if let Some(status_text) = status_text {
        from_dsn(&mut analysis, status_text, &parts);
        if analysis.kind != Kind::NotBounce {
            return analysis;
        }
    }
    if parts.report_text.contains("\"notificationType\"")
        && crate::ses::fill(&mut analysis, &parts.report_text)
    {
        return analysis;
    }
    let from = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or_default()
        .to_owned();
    let from_name = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.name())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let subject = analysis.subject.clone().unwrap_or_default();
    let failed_header = message.header_raw("X-Failed-Recipients").map(str::to_owned);
    let from_daemon = address::is_system(&from)
        || from_name.contains("mail delivery")
        || from_name.contains("mailer-daemon")
        || from_name.contains("postmaster");
    if is_auto_reply(&message) && !from_daemon && !text::subject_is_bounce(&subject) {
        analysis.kind = Kind::AutoReply;
        analysis.recipients.push(RecipientFailure {
            recipient: from,
            status: None,
            reply_code: None,
            reason: Reason::Vacation,
            hard: false,
            diagnostic: subject,
            action: None,
            remote_mta: None,
        });
        return analysis;
    }
    if parts.complaint_recipient.is_some()
        || subject
            .to_ascii_lowercase()
            .starts_with("complaint about message from")
    {
        // Microsoft JMRP: the complained-about message is attached, no feedback-report part.
        crate::arf::fill(&mut analysis, "Feedback-Type: abuse", &parts);
        return analysis;
    }
    if from_daemon
        || failed_header.is_some()
        || text::subject_is_bounce(&subject)
        || text::body_is_bounce(text::report_part(&parts.report_text))
    {
        let to: Vec<String> = message
            .to()
            .map(|t| {
                t.iter()
                    .filter_map(|a| a.address())
                    .filter_map(address::clean)
                    .collect()
            })
            .unwrap_or_default();
        from_text(&mut analysis, &parts, &from, &to, failed_header.as_deref());
    }
    analysis
}

/// mail-parser gave up on the bytes with a panic.
struct Malformed;

/// Runs mail-parser, turning a panic inside it into an error. mail-parser 0.11 documents that
/// it never panics, but fuzzing found inputs that fail one of its `debug_assert!`s ("Invalid
/// part ID, could not find multipart"; the input is kept in tests/data): a panic in builds
/// with debug assertions (tests, cargo-fuzz), nothing in release builds. The panic message
/// still reaches the panic hook (stderr); the message is then reported as not a bounce with
/// `malformed` set.
fn parse_guarded(raw: &[u8], headers_only: bool) -> Result<Option<Message<'_>>, Malformed> {
    std::panic::catch_unwind(|| {
        // Only the headers read here are parsed (MIME, addresses, Subject); the rest stay raw,
        // which spares tokenising every Received line.
        let parser = MessageParser::new().with_minimal_headers();
        if headers_only {
            parser.parse_headers(raw)
        } else {
            parser.parse(raw)
        }
    })
    .map_err(|_| Malformed)
}

/// True for text with bare CRs as line ends (old Mac files), which mail-parser does not split.
fn needs_cr_fix(raw: &[u8]) -> bool {
    let head = &raw[..raw.len().min(4096)];
    head.contains(&b'\r') && !head.contains(&b'\n')
}

/// Skips a leading mbox `From ` separator line.
fn skip_mbox_from_line(raw: &[u8]) -> &[u8] {
    if raw.starts_with(b"From ") {
        match raw.iter().position(|&b| b == b'\n') {
            Some(nl) => &raw[nl + 1..],
            None => &[],
        }
    } else {
        raw
    }
}

/// Delivered-To, X-Original-To, Envelope-To, X-Envelope-To, then To addresses.
fn envelope_recipients(message: &Message<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in [
        "Delivered-To",
        "X-Original-To",
        "Envelope-To",
        "X-Envelope-To",
    ] {
        for value in message.header_values(name) {
            if let Some(addr) = value.as_text().and_then(address::clean) {
                if !out.iter().any(|a| address::same(a, &addr)) {
                    out.push(addr);
                }
            }
        }
    }
    if let Some(to) = message.to() {
        for addr in to.iter().filter_map(|a| a.address()) {
            if let Some(addr) = address::clean(addr) {
                if !out.iter().any(|a| address::same(a, &addr)) {
                    out.push(addr);
                }
            }
        }
    }
    out
}

/// RFC 3834 and the common vendor markers of automatic replies.
fn is_auto_reply(message: &Message<'_>) -> bool {
    let header = |name: &str| {
        message
            .header_raw(name)
            .map(|v| v.trim().to_ascii_lowercase())
    };
    if header("Auto-Submitted").is_some_and(|v| v.starts_with("auto-replied")) {
        return true;
    }
    if header("X-Autoreply").is_some()
        || header("X-Autorespond").is_some()
        || header("X-Auto-Reply").is_some()
        || header("X-Mail-Autoreply").is_some()
        || header("Precedence").is_some_and(|v| v.contains("auto_reply"))
    {
        return true;
    }
    let subject = message.subject().unwrap_or_default().to_lowercase();
    [
        "auto:",
        "automatic reply",
        "autoreply",
        "auto-reply",
        "auto reply",
        "out of office",
        "out of the office",
        "vacation",
        "away from",
        "abwesenheit",
        "absence",
        "réponse automatique",
        "automatische antwort",
        "respuesta automática",
        "risposta automatica",
        "resposta automática",
    ]
    .iter()
    .any(|w| subject.contains(w))
}

/// The parts of a report that matter, wherever they sit in the MIME tree.
pub(crate) struct Parts {
    /// Text of the first `message/(global-)delivery-status` part.
    pub delivery_status: Option<String>,
    /// Text of the first `message/feedback-report` part.
    pub feedback: Option<String>,
    /// The human-readable report: the first text part outside the returned message.
    pub report_text: String,
    /// Recipients (To, Cc) of the returned original message, when it is there.
    pub original_recipients: Vec<String>,
    /// The sender (From) of the returned original message.
    pub original_from: Option<String>,
    /// The Return-Path of the returned original message.
    pub original_return_path: Option<String>,
    /// `X-HmXmrOriginalRecipient` of a returned message: Microsoft's complaint (JMRP) format.
    pub complaint_recipient: Option<String>,
}

impl Parts {
    fn collect(message: &Message<'_>) -> Parts {
        let mut parts = Parts {
            delivery_status: None,
            feedback: None,
            report_text: String::new(),
            original_recipients: Vec::new(),
            original_from: None,
            original_return_path: None,
            complaint_recipient: None,
        };
        let mut html = None;
        for (i, part) in message.parts.iter().enumerate() {
            let (ctype, subtype) = part
                .content_type()
                .map(|c| {
                    (
                        c.ctype().to_ascii_lowercase(),
                        c.subtype().unwrap_or_default().to_ascii_lowercase(),
                    )
                })
                .unwrap_or_else(|| ("text".into(), "plain".into()));
            match (&part.body, ctype.as_str(), subtype.as_str()) {
                (PartType::Message(inner), _, _) => parts.original(inner),
                (_, "message", "delivery-status" | "global-delivery-status")
                    if parts.delivery_status.is_none() =>
                {
                    parts.delivery_status =
                        Some(String::from_utf8_lossy(part.contents()).into_owned());
                }
                (_, "message", "feedback-report") if parts.feedback.is_none() => {
                    parts.feedback = Some(String::from_utf8_lossy(part.contents()).into_owned());
                }
                (_, "text" | "message", "rfc822-headers" | "rfc822" | "global-headers") => {
                    if let Ok(Some(inner)) = parse_guarded(part.contents(), true) {
                        parts.original(&inner);
                    }
                }
                (PartType::Text(t), "text", _) if parts.report_text.is_empty() && i > 0 => {
                    parts.report_text = t.to_string();
                }
                (PartType::Text(t), "text", _) if parts.report_text.is_empty() => {
                    // A single-part message: its body is the report.
                    parts.report_text = t.to_string();
                }
                (PartType::Html(h), _, _) if html.is_none() => html = Some(h.to_string()),
                _ => {}
            }
        }
        if parts.report_text.trim().is_empty() {
            if let Some(h) = html {
                parts.report_text = strip_html(&h);
            }
        }
        if parts.report_text.trim().is_empty() {
            // Broken MIME (a boundary parameter on an unfolded line): read the raw body.
            if let Some(root) = message.parts.first() {
                let raw = message.raw_message();
                let start = (root.offset_body as usize).min(raw.len());
                let end = (root.offset_end as usize).clamp(start, raw.len());
                parts.report_text = String::from_utf8_lossy(&raw[start..end]).into_owned();
            }
        }
        parts
    }

    fn original(&mut self, inner: &Message<'_>) {
        if !self.original_recipients.is_empty() {
            return;
        }
        self.complaint_recipient = inner
            .header_raw("X-HmXmrOriginalRecipient")
            .and_then(address::clean);
        for list in [inner.to(), inner.cc()].into_iter().flatten() {
            for addr in list.iter().filter_map(|a| a.address()) {
                if let Some(addr) = address::clean(addr) {
                    self.original_recipients.push(addr);
                }
            }
        }
        self.original_from = inner
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .and_then(address::clean);
        self.original_return_path = inner
            .header_raw("Return-Path")
            .and_then(address::clean)
            .or_else(|| self.original_return_path.take());
    }
}

/// The last `max` bytes of `text` (at a character boundary).
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Crude HTML to text: drops tags, keeps line structure at block tags.
fn strip_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    let mut tag = String::new();
    for c in html.chars() {
        match (in_tag, c) {
            (false, '<') => {
                in_tag = true;
                tag.clear();
            }
            (true, '>') => {
                in_tag = false;
                let t = tag.to_ascii_lowercase();
                if t.starts_with("br")
                    || t.starts_with("/p")
                    || t.starts_with("/div")
                    || t.starts_with("/tr")
                {
                    out.push('\n');
                }
            }
            (true, c) => tag.push(c),
            (false, c) => out.push(c),
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

/// Fills an analysis from a DSN part (plus the human-readable text for what it lacks).
fn from_dsn(analysis: &mut Analysis, status_text: &str, parts: &Parts) {
    let dsn = dsn::parse(status_text);
    analysis.reporting_mta = dsn.reporting_mta.clone();
    let report = text::report_part(&parts.report_text);
    let from_text = text::recipients(report, &[]);
    let mut failed = Vec::new();
    let mut delayed = Vec::new();
    for rcpt in &dsn.recipients {
        let Some(addr) = rcpt.address() else {
            continue;
        };
        let status = rcpt.status.as_deref().and_then(Status::parse);
        let action = match rcpt.action.as_deref().map(str::trim) {
            Some(a) if a.starts_with("delayed") => Action::Delayed,
            Some(a)
                if a.starts_with("delivered")
                    || a.starts_with("relayed")
                    || a.starts_with("expanded") =>
            {
                Action::Delivered
            }
            Some(_) => Action::Failed,
            None if status.is_some_and(|s| s.class == 2) => Action::Delivered,
            None => Action::Failed,
        };
        let text_match = from_text
            .iter()
            .find(|t| address::same(&t.address, &addr))
            .map(|t| t.diagnostic.as_str());
        let mut diagnostic = rcpt.diagnostic.clone().unwrap_or_default();
        if diagnostic.trim().is_empty() {
            if let Some(t) = text_match {
                diagnostic = t.trim().to_owned();
            }
        }
        if diagnostic.trim().is_empty() && dsn.recipients.len() == 1 {
            diagnostic = report.trim().to_owned();
        }
        // The human-readable text often says more (the SMTP stage, the server's full words).
        let context = match text_match {
            Some(t) if !diagnostic.contains(t.trim()) => format!("{diagnostic}\n{t}"),
            _ => diagnostic.clone(),
        };
        let status = status.or_else(|| Status::find(&diagnostic));
        let reply_code = find_reply_code(&diagnostic).or_else(|| find_reply_code(&context));
        // The remote server's own words (Diagnostic-Code) come first: the reporting MTA's
        // summary around them may say something else (Sendmail writes "User unknown" under a
        // block-list refusal).
        let n_diag = classify::normalise(&diagnostic);
        let n_context = (context.len() != diagnostic.len()).then(|| classify::normalise(&context));
        let n_context = n_context.as_deref().unwrap_or(&n_diag);
        let mut verdict = if rcpt.diagnostic.is_some() && classify::has_strong_wording(&n_diag) {
            let at_rcpt = classify::says_rcpt_stage(n_context);
            classify::classify_normalised(status, reply_code, &n_diag, at_rcpt)
        } else {
            classify::classify_normalised(status, reply_code, n_context, false)
        };
        if action == Action::Failed && status.is_some_and(|s| s.class == 4) {
            // Given up after retrying: a temporary failure that became final.
            verdict.hard = false;
        }
        let entry = RecipientFailure {
            recipient: addr,
            status: status.map(|s| s.to_string()),
            reply_code,
            reason: if action == Action::Delivered {
                Reason::Delivered
            } else {
                verdict.reason
            },
            hard: action == Action::Failed && verdict.hard,
            diagnostic: diagnostic.trim().to_owned(),
            action: Some(action),
            remote_mta: rcpt.remote_mta.clone(),
        };
        match action {
            Action::Failed => failed.push(entry),
            Action::Delayed => delayed.push(entry),
            Action::Delivered => {}
        }
    }
    if !failed.is_empty() {
        // A report with failed and delayed recipients lists both; `failures()` keeps the
        // failed ones.
        analysis.kind = Kind::Bounce;
        analysis.recipients = failed;
        analysis.recipients.extend(delayed);
    } else if !delayed.is_empty() {
        analysis.kind = Kind::Delay;
        analysis.recipients = delayed;
    }
}

/// Fills an analysis from the human-readable text of a non-standard bounce.
fn from_text(
    analysis: &mut Analysis,
    parts: &Parts,
    from: &str,
    to: &[String],
    failed_header: Option<&str>,
) {
    let report = text::report_part(&parts.report_text);
    // Not recipients: the report's own addressee (the original sender or its VERP path), the
    // reporting daemon, the original sender. X-Original-To and Delivered-To are not excluded:
    // some agents (DragonFly) put the failed recipient there.
    let mut exclude: Vec<String> = to.to_vec();
    exclude.extend(
        analysis
            .envelope_recipients
            .iter()
            .filter(|a| crate::verp::decode_verp(a).is_some())
            .cloned(),
    );
    exclude.push(from.to_owned());
    exclude.extend(parts.original_from.iter().cloned());
    exclude.extend(parts.original_return_path.iter().cloned());
    let mut found = text::recipients(report, &exclude);
    if let Some(header) = failed_header {
        let listed: Vec<String> = header.split(',').filter_map(address::clean).collect();
        if !listed.is_empty() {
            found.retain(|f| listed.iter().any(|l| address::same(l, &f.address)));
            for l in &listed {
                if !found.iter().any(|f| address::same(l, &f.address)) {
                    found.push(text::TextRecipient {
                        address: l.clone(),
                        diagnostic: report.to_owned(),
                    });
                }
            }
        }
    }
    if found.is_empty() {
        let fallback = parts
            .original_recipients
            .first()
            .cloned()
            .unwrap_or_default();
        found.push(text::TextRecipient {
            address: fallback,
            diagnostic: report.to_owned(),
        });
    }
    let first_line = found
        .first()
        .map(|f| f.diagnostic.lines().next().unwrap_or_default().to_owned());
    let preamble = text::preamble(report, first_line.as_deref());
    // The sentence that matters sits right above the addresses; a bounded tail keeps hostile
    // input linear.
    let preamble = tail(preamble, 2048).to_owned();
    for f in found {
        let mut status = Status::find(&f.diagnostic);
        let mut reply_code = find_reply_code(&f.diagnostic);
        let mut verdict = classify::classify(status, reply_code, &f.diagnostic, false);
        if matches!(verdict.reason, Reason::Undefined | Reason::Expired) && status.is_none() {
            // The block says nothing: the reason stands in the sentence above the addresses.
            let whole = format!("{preamble}\n{}", f.diagnostic);
            status = status.or_else(|| Status::find(&preamble));
            reply_code = reply_code.or_else(|| find_reply_code(&preamble));
            verdict = classify::classify(status, reply_code, &whole, false);
        }
        analysis.recipients.push(RecipientFailure {
            recipient: f.address,
            status: status.map(|s| s.to_string()),
            reply_code,
            reason: verdict.reason,
            hard: verdict.hard,
            diagnostic: f.diagnostic.trim().to_owned(),
            action: Some(Action::Failed),
            remote_mta: None,
        });
    }
    analysis.kind = Kind::Bounce;
    if text::is_delay_warning(analysis.subject.as_deref().unwrap_or_default(), report)
        && analysis.recipients.iter().all(|r| !r.hard)
    {
        // A warning that delivery is late (no DSN part to say so field by field).
        analysis.kind = Kind::Delay;
        for r in &mut analysis.recipients {
            r.action = Some(Action::Delayed);
        }
    }
}
