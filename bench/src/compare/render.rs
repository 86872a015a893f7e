//! The traditional pipeline's messages: the campaign rendered per recipient with the project's
//! own templates crate (the same compiled template, the same personalisation, the same size as
//! what the smurfs send), ready to inject into another MTA. Also the sample messages the DKIM
//! micro-measurement signs.

use anyhow::Context;
use mailfarm_protocol::CampaignSubmission;
use mailfarm_templates::{MessageSettings, MessageTemplate, TemplateSources, VerpSigner};

/// One message, ready for SMTP: envelope and dot-stuffed data ending in CRLF (without the
/// final `.` line).
pub struct Prepared {
    /// MAIL FROM (the signed VERP return path).
    pub from: String,
    /// RCPT TO.
    pub to: String,
    /// Dot-stuffed message.
    pub data: Vec<u8>,
}

/// The campaign's template compiled for the columns of `csv` (its header line).
pub fn compile(submission: &CampaignSubmission, csv: &[u8]) -> anyhow::Result<MessageTemplate> {
    let header = csv
        .split(|&b| b == b'\n')
        .next()
        .context("the recipient list is empty")?;
    let fields = std::str::from_utf8(header)
        .context("the recipient list header is not UTF-8")?
        .trim_end()
        .split(',')
        .map(str::to_owned)
        .collect();
    MessageTemplate::compile(
        &TemplateSources {
            subject: submission.subject.clone(),
            text: submission.text.clone(),
            html: submission.html.clone(),
        },
        MessageSettings {
            campaign_id: submission.id.clone(),
            from: submission.from.clone(),
            reply_to: submission.reply_to.clone(),
            list_id: submission.list_id.clone(),
            bounce_domain: submission.bounce_domain.clone(),
            list_unsubscribe: submission.list_unsubscribe.clone(),
            unsubscribe_base_url: submission.unsubscribe_base_url.clone(),
        },
        fields,
        VerpSigner::new(b"mailfarm-bench compare: VERP key of the traditional pipeline"),
    )
    .context("compiling the campaign's templates")
}

/// Renders every row of `csv` (the synthetic list: no quoted fields) with `template`; row `i`
/// gets recipient id `i + 1`. With `stuff`, the data is dot-stuffed for SMTP.
pub fn render_all(
    template: &MessageTemplate,
    csv: &[u8],
    stuff: bool,
    limit: usize,
) -> anyhow::Result<Vec<Prepared>> {
    let text = std::str::from_utf8(csv).context("the recipient list is not UTF-8")?;
    let email_col = template
        .field_names()
        .iter()
        .position(|f| f == "email")
        .context("the recipient list has no email column")?;
    let mut out = Vec::new();
    for (i, line) in (1u64..).zip(text.lines().skip(1).take(limit)) {
        let values: Vec<String> = line.split(',').map(str::to_owned).collect();
        let email = values.get(email_col).context("row without email")?.clone();
        let message = template
            .render(i, &email, &values)
            .with_context(|| format!("rendering row {i}"))?;
        out.push(Prepared {
            from: message.return_path,
            to: message.recipient,
            data: if stuff {
                dot_stuff(&message.data)
            } else {
                message.data
            },
        });
    }
    Ok(out)
}

/// SMTP transparency (RFC 5321 §4.5.2): a `.` starting a line is doubled; the data ends in
/// CRLF.
pub fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let mut line_start = true;
    for &b in data {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_doubles_leading_dots_and_ends_in_crlf() {
        assert_eq!(dot_stuff(b".a\r\nb.\r\n..c"), b"..a\r\nb.\r\n...c\r\n");
    }

    #[test]
    fn the_example_renders_about_forty_kilobytes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/newsletter");
        let work = crate::workload::build(&dir, 3, 1).expect("example campaign");
        let template = compile(&work.submission, &work.csv).expect("compiles");
        let messages = render_all(&template, &work.csv, true, 10).expect("renders");
        assert_eq!(messages.len(), 3);
        assert!(
            messages[0].data.len() > 30_000,
            "{}",
            messages[0].data.len()
        );
        assert_ne!(messages[0].data, messages[1].data);
    }
}
