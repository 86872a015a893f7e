//! Shared fixtures of the integration tests: a small campaign like examples/newsletter, and
//! checks every rendered message must pass (CRLF only, short lines, parseable).

#![allow(dead_code)]

use mail_parser::{Message, MessageParser};
use mailfarm_templates::{MessageSettings, MessageTemplate, TemplateSources, VerpSigner};

pub const KEY: &[u8] = b"test key: 32 bytes of randomness";

pub fn field_names() -> Vec<String> {
    ["email", "first_name", "city", "note"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

pub fn sources() -> TemplateSources {
    TemplateSources {
        subject: "{{first_name}}, your picks from {{city}}".into(),
        text: "Hi {{first_name}},\n\nNote: {{note}}\n{{#if city}}City: {{city}}{{else}}No city{{/if}}\n"
            .into(),
        html: Some(
            "<html><body>\n<p>Hi {{first_name}}</p>\n<p>Note: {{note}}</p>\n<p>{{city}}</p>\n</body></html>\n"
                .into(),
        ),
    }
}

pub fn settings() -> MessageSettings {
    MessageSettings {
        campaign_id: "autumn-2026".into(),
        from: "Acme Weekly <news@acme.example>".into(),
        reply_to: Some("editor@acme.example".into()),
        list_id: "weekly.acme.example".into(),
        bounce_domain: "bounces.acme.example".into(),
        list_unsubscribe: Some("https://acme.example/unsubscribe?u={{urlencode email}}".into()),
        unsubscribe_base_url: None,
    }
}

pub fn compile() -> MessageTemplate {
    MessageTemplate::compile(&sources(), settings(), field_names(), VerpSigner::new(KEY))
        .expect("fixture compiles")
}

pub fn row(email: &str, first_name: &str, city: &str, note: &str) -> Vec<String> {
    vec![email.into(), first_name.into(), city.into(), note.into()]
}

/// Parses a message after checking the wire rules: CRLF line endings only, no line over 998
/// octets, a blank line between headers and body.
pub fn parse(data: &[u8]) -> Message<'_> {
    check_wire(data);
    MessageParser::default()
        .parse(data)
        .expect("mail-parser parses the message")
}

pub fn check_wire(data: &[u8]) {
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && data[i - 1] == b'\r', "bare LF at {i}");
        }
        if b == b'\r' {
            assert_eq!(data.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
        assert_ne!(b, 0, "NUL at {i}");
    }
    for line in data.split(|&b| b == b'\n') {
        assert!(line.len() <= 999, "line of {} octets", line.len());
    }
    assert!(
        data.windows(4).any(|w| w == b"\r\n\r\n"),
        "no blank line after headers"
    );
}

/// The header section (up to the first blank line) as text.
pub fn header_section(data: &[u8]) -> String {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("blank line");
    String::from_utf8(data[..end + 2].to_vec()).expect("headers are ASCII")
}

/// Header names of the header section, in order (continuation lines skipped).
pub fn header_names(data: &[u8]) -> Vec<String> {
    header_section(data)
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with(' ') && !l.starts_with('\t'))
        .map(|l| l.split(':').next().unwrap_or_default().to_ascii_lowercase())
        .collect()
}
