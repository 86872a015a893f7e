//! The 8bit transport (for receivers that announce 8BITMIME): the same message text as the
//! quoted-printable one, decoded part by part, on valid wire lines; and the fall-back to
//! quoted-printable for a part with a line over 998 octets.

mod common;

use common::*;
use mail_parser::{Message, MimeHeaders};
use mailfarm_templates::{
    BodyTransport, MessageSettings, MessageTemplate, TemplateSources, VerpSigner,
};

const NEWSLETTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/newsletter");

fn newsletter() -> MessageTemplate {
    let read = |file: &str| {
        std::fs::read_to_string(format!("{NEWSLETTER}/{file}")).expect("example campaign file")
    };
    let sources = TemplateSources {
        subject: "{{first_name}}, your autumn picks from {{city}}".into(),
        text: read("body.txt.hbs"),
        html: Some(read("body.html.hbs")),
    };
    let settings = MessageSettings {
        unsubscribe_base_url: Some("https://unsub.acme.example".into()),
        list_unsubscribe: None,
        ..settings()
    };
    let fields = [
        "email",
        "first_name",
        "last_name",
        "city",
        "plan",
        "points",
        "vip",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    MessageTemplate::compile(&sources, settings, fields, VerpSigner::new(KEY)).expect("compiles")
}

/// Content-Transfer-Encoding of each leaf part, in order.
fn encodings(msg: &Message<'_>) -> Vec<String> {
    msg.parts
        .iter()
        .filter(|p| !p.is_multipart())
        .map(|p| {
            p.content_transfer_encoding()
                .unwrap_or("7bit")
                .to_ascii_lowercase()
        })
        .collect()
}

/// Renders both ways and checks that both decode to the same subject and parts.
fn same_text(template: &MessageTemplate, values: &[String]) -> (Vec<String>, Vec<String>) {
    let email = values[0].as_str();
    let seven = template
        .render_for(11, email, values, BodyTransport::SevenBit)
        .expect("renders 7bit");
    let eight = template
        .render_for(11, email, values, BodyTransport::EightBit)
        .expect("renders 8bit");
    let (a, b) = (parse(&seven.data), parse(&eight.data)); // wire rules: CRLF, <= 998
    assert_eq!(a.subject(), b.subject());
    assert_eq!(a.body_text(0), b.body_text(0), "text part");
    assert_eq!(a.body_html(0), b.body_html(0), "html part");
    assert!(a.body_text(0).is_some());
    assert_eq!(a.parts.len(), b.parts.len(), "same MIME structure");
    assert_eq!(eight.return_path, seven.return_path);
    (encodings(&a), encodings(&b))
}

#[test]
fn newsletter_in_8bit_decodes_to_the_same_text_as_quoted_printable() {
    let values: Vec<String> = [
        "zoe@example.org",
        "Zoë",
        "Ünal",
        "Zürich",
        "plus",
        "1200",
        "yes",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (seven, eight) = same_text(&newsletter(), &values);
    assert_eq!(seven, ["quoted-printable", "quoted-printable"]);
    assert_eq!(eight, ["8bit", "8bit"]);
    let out = newsletter()
        .render_for(11, &values[0], &values, BodyTransport::EightBit)
        .expect("renders");
    assert!(!out.data.is_ascii(), "the 8-bit text is sent as it is");
    let qp = newsletter()
        .render_for(11, &values[0], &values, BodyTransport::SevenBit)
        .expect("renders");
    assert!(qp.data.is_ascii());
    assert!(out.data.len() < qp.data.len(), "8bit is smaller");
}

#[test]
fn ascii_parts_are_labelled_7bit_and_long_lines_fall_back_to_quoted_printable() {
    let template = compile();
    let (_, eight) = same_text(&template, &row("a@example.org", "Ann", "Oslo", "plain"));
    assert_eq!(eight, ["7bit", "7bit"]);
    // A value makes one line of each part longer than 998 octets: those parts are encoded.
    let long = "é".repeat(600);
    let (seven, eight) = same_text(&template, &row("a@example.org", "Ann", "Oslo", &long));
    assert_eq!(eight, seven, "mail-builder's own choice, as in 7-bit mode");
    assert!(eight
        .iter()
        .all(|e| e == "quoted-printable" || e == "base64"));
    // CRLF, lone CR and NUL in values are cleaned the same way in both.
    let (_, eight) = same_text(
        &template,
        &row("a@example.org", "Ann", "Os\rlo", "x\0\r\ny\nz"),
    );
    assert_eq!(eight, ["7bit", "7bit"]);
}
