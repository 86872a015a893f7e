//! Checks and cleans everything that goes into the message headers and bodies, so that no value,
//! however hostile (a CSV field with CRLF in it), can add a header, break the MIME structure or
//! make a line longer than 998 octets; and builds the final RFC 5322 message with mail-builder,
//! which does the RFC 2047 encoding, the folding and the transfer encodings.

use std::borrow::Cow;

use mail_builder::headers::address::{Address, EmailAddress};
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::headers::url::URL;
use mail_builder::mime::MimePart;
use mail_builder::MessageBuilder;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use crate::address::check_address;
use crate::BodyTransport;

/// Longest List-Unsubscribe URL we put in a header, after percent-encoding: an unbreakable
/// atom must stay well inside the 998-octet line limit.
pub(crate) const MAX_URL_LEN: usize = 900;

/// A mailbox from the settings: optional display name and a checked address.
#[derive(Debug, Clone)]
pub(crate) struct Mailbox {
    pub(crate) name: Option<String>,
    pub(crate) address: String,
}

impl Mailbox {
    /// Parses `"Display Name" <addr@domain>`, `Display Name <addr@domain>` or `addr@domain`.
    pub(crate) fn parse(value: &str) -> Result<Mailbox, &'static str> {
        let value = value.trim();
        let (name, address) = match value.strip_suffix('>') {
            Some(head) => {
                let lt = head.rfind('<').ok_or("'>' without '<'")?;
                let name = head[..lt].trim();
                let name = match name
                    .strip_prefix('"')
                    .and_then(|inner| inner.strip_suffix('"'))
                {
                    Some(quoted) => unquote(quoted),
                    None => name.to_owned(),
                };
                (name, head[lt + 1..].trim())
            }
            None => (String::new(), value),
        };
        if name.chars().any(char::is_control) {
            return Err("display name contains control characters");
        }
        if name.len() > 200 {
            return Err("display name longer than 200 bytes");
        }
        check_address(address)?;
        Ok(Mailbox {
            name: (!name.is_empty()).then_some(name),
            address: address.to_owned(),
        })
    }

    /// The domain of the address.
    pub(crate) fn domain(&self) -> &str {
        self.address
            .rsplit_once('@')
            .map_or("", |(_, domain)| domain)
    }

    fn header(&self) -> Address<'_> {
        Address::Address(EmailAddress {
            name: self.name.as_deref().map(Cow::Borrowed),
            email: Cow::Borrowed(&self.address),
        })
    }
}

fn unquote(quoted: &str) -> String {
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Subject text on one line: control characters (CR, LF, tab, NUL...) become spaces, ends are
/// trimmed. Borrows when nothing changes.
pub(crate) fn one_line(text: &str) -> Cow<'_, str> {
    let trimmed = text.trim();
    if trimmed.chars().any(char::is_control) {
        let cleaned: String = trimmed
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Cow::Owned(cleaned.trim().to_owned())
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// Body text that MIME can carry: a CR not followed by LF becomes CRLF, NUL is dropped (bare
/// LF is turned into CRLF by the encoder). Returns the input untouched when nothing changes.
pub(crate) fn clean_body(text: String) -> String {
    let bytes = text.as_bytes();
    let needs = memchr::memchr(0, bytes).is_some()
        || memchr::memchr_iter(b'\r', bytes).any(|at| bytes.get(at + 1) != Some(&b'\n'));
    if !needs {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\0' => {}
            '\r' if chars.peek() != Some(&'\n') => out.push_str("\r\n"),
            _ => out.push(c),
        }
    }
    out
}

/// Bytes percent-encoded in a URL inside `<>`: controls, space, non-ASCII (always) and `<>"\^`{|}`.
const NOT_IN_ANGLE_URL: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'<')
    .add(b'>')
    .add(b'"')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Makes a rendered List-Unsubscribe value safe for the header: checks the scheme and
/// percent-encodes every byte that may not appear in a URL inside `<>` (spaces, controls,
/// non-ASCII, `<>"` ...). Returns the URL and whether it is https (one-click capable).
pub(crate) fn unsubscribe_url(rendered: &str) -> Result<(String, bool), &'static str> {
    let url = rendered.trim();
    let lower_prefix = |prefix: &str| {
        url.len() >= prefix.len()
            && url.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    let https = lower_prefix("https://");
    if !(https || lower_prefix("http://") || lower_prefix("mailto:")) {
        return Err("must start with https://, http:// or mailto:");
    }
    let out = utf8_percent_encode(url, NOT_IN_ANGLE_URL).to_string();
    if out.len() > MAX_URL_LEN {
        return Err("longer than 900 bytes");
    }
    Ok((out, https))
}

/// Everything of one message, borrowed from the compiled template and the render.
pub(crate) struct Parts<'a> {
    pub(crate) from: &'a Mailbox,
    pub(crate) reply_to: Option<&'a Mailbox>,
    pub(crate) to: &'a str,
    pub(crate) subject: &'a str,
    pub(crate) message_id: &'a str,
    pub(crate) list_id: &'a str,
    /// The List-Unsubscribe URLs (already checked and escaped) and whether the first is one-click.
    pub(crate) unsubscribe: Option<(Vec<String>, bool)>,
    pub(crate) text: String,
    pub(crate) html: Option<String>,
    /// How the parts are encoded.
    pub(crate) transport: BodyTransport,
}

/// Longest line of an unencoded part, without its CRLF (RFC 5322 §2.1.1).
const MAX_LINE: usize = 998;

/// A body for an unencoded (`7bit` or `8bit`) part: CRLF line endings (a bare LF becomes CRLF;
/// [`clean_body`] already fixed lone CRs and NULs), and its label; `None` when a line is longer
/// than 998 octets, so the part must be encoded.
fn unencoded(body: &str) -> Option<(String, &'static str)> {
    let bytes = body.as_bytes();
    let mut out = String::with_capacity(body.len() + body.len() / 32);
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', bytes) {
        let line = body[start..end]
            .strip_suffix('\r')
            .unwrap_or(&body[start..end]);
        if line.len() > MAX_LINE {
            return None;
        }
        out.push_str(line);
        out.push_str("\r\n");
        start = end + 1;
    }
    if body.len() - start > MAX_LINE {
        return None;
    }
    out.push_str(&body[start..]);
    let label = if body.is_ascii() { "7bit" } else { "8bit" };
    Some((out, label))
}

/// A text part for `transport`: unencoded when it may be and can be, else left to
/// mail-builder's choice (7bit, quoted-printable or base64).
fn part(content_type: &'static str, body: String, transport: BodyTransport) -> MimePart<'static> {
    if transport == BodyTransport::EightBit {
        if let Some((body, label)) = unencoded(&body) {
            return MimePart::new(content_type, body).transfer_encoding(label);
        }
    }
    MimePart::new(content_type, body)
}

/// Builds the complete message: headers, then a text/plain part or a multipart/alternative of
/// text and HTML. CRLF line endings throughout.
pub(crate) fn build(parts: Parts<'_>) -> Vec<u8> {
    let mut builder = MessageBuilder::new()
        .from(parts.from.header())
        .to(Address::Address(EmailAddress {
            name: None,
            email: Cow::Borrowed(parts.to),
        }));
    if let Some(reply_to) = parts.reply_to {
        builder = builder.reply_to(reply_to.header());
    }
    builder = builder
        .subject(Text::new(parts.subject))
        .message_id(MessageId::new(parts.message_id))
        .header("List-Id", Raw::new(parts.list_id));
    if let Some((urls, one_click)) = parts.unsubscribe {
        builder = builder.header("List-Unsubscribe", URL::new_list(urls.into_iter()));
        if one_click {
            builder = builder.header(
                "List-Unsubscribe-Post",
                Raw::new("List-Unsubscribe=One-Click"),
            );
        }
    }
    if parts.transport == BodyTransport::SevenBit {
        builder = builder.text_body(parts.text);
        if let Some(html) = parts.html {
            builder = builder.html_body(html);
        }
    } else {
        // The same structure mail-builder makes of text_body and html_body.
        let text = part("text/plain", parts.text, parts.transport);
        builder = builder.body(match parts.html {
            Some(html) => MimePart::new(
                "multipart/alternative",
                vec![text, part("text/html", html, parts.transport)],
            ),
            None => text,
        });
    }
    let mut out = Vec::new();
    builder.serialize(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mailboxes() {
        let m = Mailbox::parse("Acme Weekly <news@acme.example>").unwrap();
        assert_eq!(m.name.as_deref(), Some("Acme Weekly"));
        assert_eq!(m.address, "news@acme.example");
        assert_eq!(m.domain(), "acme.example");
        let m = Mailbox::parse(r#""Acme, \"Inc\"" <a@b.example>"#).unwrap();
        assert_eq!(m.name.as_deref(), Some(r#"Acme, "Inc""#));
        let m = Mailbox::parse("  a@b.example ").unwrap();
        assert_eq!(m.name, None);
        assert!(Mailbox::parse("Evil\r\nBcc: x <a@b.example>").is_err());
        assert!(Mailbox::parse("no-at-sign").is_err());
        assert!(Mailbox::parse("x <a@b.example").is_err());
        assert!(Mailbox::parse("a b@c.example").is_err());
    }

    #[test]
    fn one_line_removes_breaks() {
        assert_eq!(one_line(" Hi\r\nBcc: x\t"), "Hi  Bcc: x");
        assert!(matches!(one_line("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn clean_body_fixes_lone_cr_and_nul() {
        assert_eq!(clean_body("a\rb\r\nc\0d\r".into()), "a\r\nb\r\ncd\r\n");
        assert_eq!(clean_body("a\nb".into()), "a\nb");
    }

    #[test]
    fn unencoded_bodies_have_crlf_and_short_lines() {
        assert_eq!(
            unencoded("a\nb\r\nc"),
            Some(("a\r\nb\r\nc".to_owned(), "7bit"))
        );
        assert_eq!(unencoded("Grüße\n"), Some(("Grüße\r\n".to_owned(), "8bit")));
        let longest = "x".repeat(998);
        assert!(unencoded(&format!("{longest}\r\n{longest}")).is_some());
        assert_eq!(unencoded(&format!("a\n{longest}x\nb")), None);
        assert_eq!(unencoded(&format!("a\n{longest}x")), None);
    }

    #[test]
    fn unsubscribe_urls_are_encoded() {
        let (url, https) = unsubscribe_url("https://x.example/u?e=a b>\r\nX: y").unwrap();
        assert!(https);
        assert_eq!(url, "https://x.example/u?e=a%20b%3E%0D%0AX:%20y");
        let (url, https) = unsubscribe_url("MAILTO:unsub@x.example?subject=é").unwrap();
        assert!(!https);
        assert_eq!(url, "MAILTO:unsub@x.example?subject=%C3%A9");
        assert!(unsubscribe_url("javascript:alert(1)").is_err());
        assert!(unsubscribe_url(&format!("https://x/{}", "a".repeat(900))).is_err());
    }
}
