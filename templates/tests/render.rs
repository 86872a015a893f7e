//! Rendering tests: each message is parsed back with mail-parser and checked header by header
//! and part by part.

mod common;

use std::collections::HashSet;

use common::*;
use mail_parser::MimeHeaders;
use mailfarm_templates::{
    MessageTemplate, RenderError, TemplateSources, VerpSigner, VerpToken, HTML_FILE, TEXT_FILE,
};

#[test]
fn renders_headers_and_both_parts() {
    let template = compile();
    let values = row("ann@example.org", "Ann", "Lyon", "see you");
    let out = template
        .render(42, "ann@example.org", &values)
        .expect("renders");
    let msg = parse(&out.data);

    let from = msg.from().and_then(|a| a.first()).expect("From");
    assert_eq!(from.name(), Some("Acme Weekly"));
    assert_eq!(from.address(), Some("news@acme.example"));
    let to = msg.to().and_then(|a| a.first()).expect("To");
    assert_eq!(to.address(), Some("ann@example.org"));
    let reply_to = msg.reply_to().and_then(|a| a.first()).expect("Reply-To");
    assert_eq!(reply_to.address(), Some("editor@acme.example"));
    assert_eq!(msg.subject(), Some("Ann, your picks from Lyon"));
    assert_eq!(msg.message_id(), Some(out.message_id.as_str()));
    assert!(msg.date().is_some(), "Date header");
    assert_eq!(msg.header_raw("MIME-Version").map(str::trim), Some("1.0"));
    assert_eq!(
        msg.header_raw("List-Id").map(str::trim),
        Some("<weekly.acme.example>")
    );
    assert_eq!(
        msg.header_raw("List-Unsubscribe").map(str::trim),
        Some("<https://acme.example/unsubscribe?u=ann%40example.org>")
    );
    assert_eq!(
        msg.header_raw("List-Unsubscribe-Post").map(str::trim),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(msg.header_raw("Return-Path").is_none(), "the MTA adds it");

    let ct = msg.root_part().content_type().expect("Content-Type");
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("alternative"));
    assert_eq!(msg.text_body_count(), 1);
    assert_eq!(msg.html_body_count(), 1);
    let text = msg.body_text(0).expect("text part");
    assert!(text.contains("Hi Ann,"), "{text}");
    assert!(text.contains("Note: see you"), "{text}");
    assert!(text.contains("City: Lyon"), "{text}");
    let html = msg.body_html(0).expect("html part");
    assert!(html.contains("<p>Hi Ann</p>"), "{html}");
    assert!(html.contains("<p>Note: see you</p>"), "{html}");
    let html_ct = msg
        .html_part(0)
        .and_then(|p| p.content_type())
        .expect("html ct");
    assert_eq!(html_ct.subtype(), Some("html"));
    assert_eq!(html_ct.attribute("charset"), Some("utf-8"));

    assert_eq!(out.recipient, "ann@example.org");
    assert!(out.return_path.ends_with("@bounces.acme.example"));
    assert_eq!(
        VerpSigner::new(KEY).verify(&out.return_path),
        Ok(VerpToken {
            campaign_id: "autumn-2026".into(),
            recipient_id: 42
        })
    );
    assert!(!out.message_id.starts_with('<'));
    assert!(
        out.message_id.starts_with("autumn-2026.16."),
        "{}",
        out.message_id
    );
    assert!(out.message_id.ends_with("@acme.example"));
}

#[test]
fn text_only_campaign_is_a_single_text_part() {
    let sources = TemplateSources {
        html: None,
        ..sources()
    };
    let mut settings = settings();
    settings.list_unsubscribe = Some("mailto:unsub@acme.example?subject={{email}}".into());
    settings.reply_to = None;
    let template =
        MessageTemplate::compile(&sources, settings, field_names(), VerpSigner::new(KEY))
            .expect("compiles");
    let out = template
        .render(
            1,
            "bob@example.org",
            &row("bob@example.org", "Bob", "", "x"),
        )
        .expect("renders");
    let msg = parse(&out.data);
    let ct = msg.root_part().content_type().expect("Content-Type");
    assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("plain")));
    assert_eq!(ct.attribute("charset"), Some("utf-8"));
    assert!(!header_section(&out.data).contains("multipart"));
    let text = msg.body_text(0).expect("text");
    assert!(text.contains("Hi Bob,"));
    assert!(
        text.contains("No city"),
        "empty string is present but false: {text}"
    );
    assert!(msg.reply_to().is_none());
    assert_eq!(
        msg.header_raw("List-Unsubscribe").map(str::trim),
        Some("<mailto:unsub@acme.example?subject=bob@example.org>")
    );
    assert!(
        msg.header_raw("List-Unsubscribe-Post").is_none(),
        "only for https"
    );
}

#[test]
fn without_unsubscribe_there_is_no_such_header() {
    let mut settings = settings();
    settings.list_unsubscribe = None;
    let template =
        MessageTemplate::compile(&sources(), settings, field_names(), VerpSigner::new(KEY))
            .expect("compiles");
    let out = template
        .render(
            1,
            "bob@example.org",
            &row("bob@example.org", "Bob", "Oslo", ""),
        )
        .expect("renders");
    let names = header_names(&out.data);
    assert!(!names.iter().any(|n| n.starts_with("list-unsubscribe")));
    assert!(names.contains(&"list-id".to_string()));
}

#[test]
fn each_recipient_gets_own_values() {
    let template = compile();
    let people = [
        ("ann@example.org", "Ann", "Lyon", "note-ann"),
        ("bob@example.org", "Bob", "Oslo", "note-bob"),
        ("cy@example.org", "Cy", "Rome", "note-cy"),
    ];
    for (id, (email, name, city, note)) in people.iter().enumerate() {
        let out = template
            .render(id as u64, email, &row(email, name, city, note))
            .expect("renders");
        let msg = parse(&out.data);
        assert_eq!(
            msg.subject(),
            Some(format!("{name}, your picks from {city}").as_str())
        );
        let text = msg.body_text(0).expect("text");
        let html = msg.body_html(0).expect("html");
        for body in [&text, &html] {
            assert!(body.contains(name) && body.contains(city) && body.contains(note));
            for (_, other_name, other_city, other_note) in people.iter().filter(|p| p.0 != *email) {
                assert!(!body.contains(other_name), "{other_name} leaked");
                assert!(!body.contains(other_city) && !body.contains(other_note));
            }
        }
        assert_eq!(
            msg.to().and_then(|a| a.first()).and_then(|a| a.address()),
            Some(*email)
        );
        assert_eq!(
            VerpSigner::new(KEY)
                .verify(&out.return_path)
                .map(|t| t.recipient_id),
            Ok(id as u64)
        );
    }
}

#[test]
fn non_ascii_subject_name_and_body_round_trip() {
    let sources = TemplateSources {
        subject: "Grüße, {{first_name}} ☕ — 日本語の件名 {{city}}".into(),
        text: "Liebe {{first_name}}, schöne Grüße aus {{city}}.\n".into(),
        html: Some("<p>Liebe {{first_name}} — {{city}}</p>".into()),
    };
    let mut settings = settings();
    settings.from = "Café Ünïcode, \"Straße\" <news@acme.example>".into();
    settings.reply_to = Some("\"Rédaction\" <editor@acme.example>".into());
    let template =
        MessageTemplate::compile(&sources, settings, field_names(), VerpSigner::new(KEY))
            .expect("compiles");
    let out = template
        .render(
            7,
            "zoe@example.org",
            &row("zoe@example.org", "Zoë", "Zürich", ""),
        )
        .expect("renders");
    let headers = header_section(&out.data);
    assert!(
        headers.is_ascii(),
        "headers are RFC 2047 encoded: {headers}"
    );
    let msg = parse(&out.data);
    assert_eq!(msg.subject(), Some("Grüße, Zoë ☕ — 日本語の件名 Zürich"));
    let from = msg.from().and_then(|a| a.first()).expect("From");
    assert_eq!(from.name(), Some("Café Ünïcode, \"Straße\""));
    assert_eq!(from.address(), Some("news@acme.example"));
    let reply_to = msg.reply_to().and_then(|a| a.first()).expect("Reply-To");
    assert_eq!(reply_to.name(), Some("Rédaction"));
    assert_eq!(
        msg.body_text(0).as_deref().map(str::trim_end),
        Some("Liebe Zoë, schöne Grüße aus Zürich.")
    );
    assert!(msg
        .body_html(0)
        .expect("html")
        .contains("Liebe Zoë — Zürich"));
    let body = String::from_utf8_lossy(&out.data);
    assert!(
        body.contains("Content-Transfer-Encoding: quoted-printable")
            || body.contains("Content-Transfer-Encoding: base64")
    );
    assert!(out.data.is_ascii(), "8-bit content is transfer-encoded");
}

#[test]
fn long_lines_and_long_values_stay_within_line_limits() {
    let template = compile();
    let long_word = "x".repeat(5000);
    let long_spaced = "word ".repeat(1000);
    let out = template
        .render(
            3,
            "long@example.org",
            &row("long@example.org", &long_word, &long_spaced, &long_word),
        )
        .expect("renders");
    let msg = parse(&out.data); // checks every line <= 998 octets
    assert_eq!(
        msg.subject(),
        Some(format!("{long_word}, your picks from {}", long_spaced.trim_end()).as_str())
    );
    let text = msg.body_text(0).expect("text");
    assert!(text.contains(&format!("Hi {long_word},")));
    let html = msg.body_html(0).expect("html");
    assert!(html.contains(&format!("<p>Note: {long_word}</p>")));
}

#[test]
fn message_ids_are_unique_over_1000_renders() {
    let template = compile();
    let mut ids = HashSet::new();
    for i in 0..1000u64 {
        // Half the renders are the same recipient again: ids must still differ.
        let recipient = if i % 2 == 0 { 5 } else { i };
        let out = template
            .render(
                recipient,
                "same@example.org",
                &row("same@example.org", "A", "B", "C"),
            )
            .expect("renders");
        let header = format!("Message-ID: <{}>\r\n", out.message_id);
        assert!(header_section(&out.data).contains(&header));
        assert!(ids.insert(out.message_id), "duplicate Message-ID");
    }
    assert_eq!(ids.len(), 1000);
}

#[test]
fn missing_field_fails_alone_and_names_the_field() {
    let template = compile();
    // The row stops before `note`: note is absent, not empty.
    let short = vec!["ann@example.org".to_string(), "Ann".into(), "Lyon".into()];
    let err = template
        .render(1, "ann@example.org", &short)
        .expect_err("note is absent");
    assert_eq!(
        err,
        RenderError::MissingField {
            file: TEXT_FILE,
            field: "note".into()
        }
    );
    assert!(err.to_string().contains("`note`"), "{err}");
    assert!(err.to_string().contains(TEXT_FILE), "{err}");

    // The next recipient is not affected.
    let out = template
        .render(
            2,
            "bob@example.org",
            &row("bob@example.org", "Bob", "Oslo", ""),
        )
        .expect("full row renders");
    assert!(parse(&out.data)
        .body_text(0)
        .expect("text")
        .contains("Hi Bob,"));

    // A field used only in a condition is still required.
    let sources = TemplateSources {
        subject: "Hi".into(),
        text: "{{#if note}}noted{{/if}}".into(),
        html: None,
    };
    let template =
        MessageTemplate::compile(&sources, settings(), field_names(), VerpSigner::new(KEY))
            .expect("compiles");
    let err = template
        .render(3, "ann@example.org", &short)
        .expect_err("note is absent");
    assert!(matches!(err, RenderError::MissingField { ref field, .. } if field == "note"));
    // Unused absent fields do not matter, and the email is always there.
    let sources = TemplateSources {
        subject: "Hi {{first_name}} <{{email}}>".into(),
        text: "{{email}}".into(),
        html: None,
    };
    let template =
        MessageTemplate::compile(&sources, settings(), field_names(), VerpSigner::new(KEY))
            .expect("compiles");
    let out = template
        .render(4, "ann@example.org", &short[..2])
        .expect("city and note unused");
    assert_eq!(parse(&out.data).subject(), Some("Hi Ann <ann@example.org>"));
}

#[test]
fn html_part_escapes_values_and_text_part_does_not() {
    let template = compile();
    let out = template
        .render(
            9,
            "ann@example.org",
            &row("ann@example.org", "Ann", "Lyon", r#"<b>&""#),
        )
        .expect("renders");
    let msg = parse(&out.data);
    let text = msg.body_text(0).expect("text");
    assert!(text.contains(r#"Note: <b>&""#), "verbatim in text: {text}");
    let html = msg.body_html(0).expect("html");
    assert!(
        html.contains("<p>Note: &lt;b&gt;&amp;&quot;</p>"),
        "escaped in html: {html}"
    );
    assert!(!html.contains("<b>"), "{html}");

    let subject_template = MessageTemplate::compile(
        &TemplateSources {
            subject: "{{note}}".into(),
            text: "x".into(),
            html: Some("{{{note}}}".into()),
        },
        settings(),
        field_names(),
        VerpSigner::new(KEY),
    )
    .expect("compiles");
    let out = subject_template
        .render(
            1,
            "ann@example.org",
            &row("ann@example.org", "", "", "<i>&"),
        )
        .expect("renders");
    let msg = parse(&out.data);
    assert_eq!(msg.subject(), Some("<i>&"), "subject is not escaped");
    assert!(
        msg.body_html(0).expect("html").contains("<i>&"),
        "triple-stash is raw"
    );
}

#[test]
fn crlf_in_values_cannot_inject_headers() {
    let template = compile();
    let normal = template
        .render(
            1,
            "ann@example.org",
            &row("ann@example.org", "Ann", "Lyon", "x"),
        )
        .expect("renders");
    let evil = "Eve\r\nBcc: victim@evil.example\r\n\r\nbody";
    let out = template
        .render(
            2,
            "eve@example.org",
            &row(
                "eve@example.org",
                evil,
                "Lyon\nX-Injected: 1",
                "\r\n.\r\nQUIT\r\n",
            ),
        )
        .expect("renders");
    let headers = header_section(&out.data);
    for line in headers.split("\r\n") {
        let lower = line.to_ascii_lowercase();
        assert!(!lower.starts_with("bcc:"), "{headers}");
        assert!(!lower.starts_with("x-injected"), "{headers}");
    }
    assert_eq!(header_names(&out.data), header_names(&normal.data));
    let msg = parse(&out.data);
    assert!(msg.bcc().is_none());
    let subject = msg.subject().expect("subject");
    assert!(
        !subject.contains('\r') && !subject.contains('\n'),
        "{subject:?}"
    );
    assert!(
        subject.starts_with("Eve  Bcc: victim@evil.example"),
        "{subject:?}"
    );
    // The body keeps the text, inside the part.
    assert!(msg
        .body_text(0)
        .expect("text")
        .contains("Bcc: victim@evil.example"));

    // An address with CRLF is refused, not sent.
    let err = template
        .render(
            3,
            "a@example.org\r\nBcc: v@evil.example",
            &row("", "A", "B", "C"),
        )
        .expect_err("bad recipient");
    assert!(matches!(err, RenderError::InvalidRecipient { .. }), "{err}");
    for bad in [
        "",
        "no-at",
        "a b@example.org",
        "a@exa mple.org",
        "<a@example.org>",
    ] {
        assert!(
            matches!(
                template.render(4, bad, &row(bad, "A", "B", "C")),
                Err(RenderError::InvalidRecipient { .. })
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn crlf_in_unsubscribe_url_is_percent_encoded() {
    let mut settings = settings();
    settings.list_unsubscribe = Some("https://acme.example/u?n={{first_name}}".into());
    let template =
        MessageTemplate::compile(&sources(), settings, field_names(), VerpSigner::new(KEY))
            .expect("compiles");
    let out = template
        .render(
            1,
            "eve@example.org",
            &row("eve@example.org", "Eve>\r\nBcc: v@evil.example", "", ""),
        )
        .expect("renders");
    let msg = parse(&out.data);
    assert!(msg.bcc().is_none());
    assert_eq!(
        msg.header_raw("List-Unsubscribe").map(str::trim),
        Some("<https://acme.example/u?n=Eve%3E%0D%0ABcc:%20v@evil.example>")
    );
}

#[test]
fn too_many_values_is_an_error() {
    let template = compile();
    let mut values = row("ann@example.org", "Ann", "Lyon", "x");
    values.push("extra".into());
    assert_eq!(
        template.render(1, "ann@example.org", &values),
        Err(RenderError::TooManyValues {
            got: 5,
            expected: 4
        })
    );
}

#[test]
fn helpers_still_work() {
    let mut names = field_names();
    names.push("plan".into());
    let sources = TemplateSources {
        subject: "{{#if (eq plan \"gold\")}}Gold{{else}}Basic{{/if}} for {{first_name}}".into(),
        text: concat!(
            "{{#unless note}}no note{{/unless}}|",
            "{{#with city}}in {{this}} ({{../first_name}}){{/with}}|",
            "{{#each first_name}}never{{else}}not a list{{/each}}|",
            "{{len city}}|{{urlencode note}}|{{!comment}}",
            "{{#if (and city (ne plan \"free\"))}}paid{{/if}}"
        )
        .into(),
        html: Some("{{#if first_name}}<b>{{first_name}}</b>{{/if}}".into()),
    };
    let template = MessageTemplate::compile(&sources, settings(), names, VerpSigner::new(KEY))
        .expect("compiles");
    let mut values = row("ann@example.org", "Ann", "Lyon", "");
    values.push("gold".into());
    let out = template
        .render(1, "ann@example.org", &values)
        .expect("renders");
    let msg = parse(&out.data);
    assert_eq!(msg.subject(), Some("Gold for Ann"));
    assert_eq!(
        msg.body_text(0).as_deref().map(str::trim_end),
        Some("no note|in Lyon (Ann)|not a list|4||paid")
    );
    assert_eq!(
        msg.body_html(0).as_deref().map(str::trim_end),
        Some("<b>Ann</b>")
    );
}

#[test]
fn hostile_values_never_panic_and_always_make_valid_messages() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let template = compile();
    let expected_headers = header_names(
        &template
            .render(0, "a@example.org", &row("a@example.org", "A", "B", "C"))
            .expect("renders")
            .data,
    );
    let alphabet: Vec<char> = "ab <>&\"'\r\n\t\0\u{1}\u{7f}\u{85}\u{2028}é☕=?.-{}"
        .chars()
        .collect();
    for i in 0..300u64 {
        let values: Vec<String> = (0..4)
            .map(|_| {
                let len = rng.gen_range(0..if i % 10 == 0 { 3000 } else { 60 });
                (0..len)
                    .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                    .collect()
            })
            .collect();
        let out = template
            .render(i, "a@example.org", &values)
            .expect("any value renders");
        let msg = parse(&out.data);
        assert_eq!(header_names(&out.data), expected_headers);
        assert!(msg.bcc().is_none());
        assert!(msg.body_text(0).is_some() && msg.body_html(0).is_some());
    }
}

#[test]
fn error_display_names_the_file() {
    let err = RenderError::MissingField {
        file: HTML_FILE,
        field: "city".into(),
    };
    assert_eq!(
        err.to_string(),
        "body.html.hbs uses field `city`, which this recipient's row does not have (row too short)"
    );
}
