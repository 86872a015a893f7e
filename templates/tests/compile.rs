//! Launch-time checks: templates that cannot work for anyone and invalid settings are refused
//! by compile(), with the file, line and column an operator needs.

mod common;

use common::*;
use mailfarm_templates::{
    MessageSettings, MessageTemplate, TemplateError, TemplateSources, VerpSigner, HTML_FILE,
    SUBJECT_FILE, TEXT_FILE, UNSUBSCRIBE_FILE,
};

fn compile_with(sources: TemplateSources, settings: MessageSettings) -> Result<(), TemplateError> {
    MessageTemplate::compile(&sources, settings, field_names(), VerpSigner::new(KEY)).map(|_| ())
}

fn with_html(html: &str) -> TemplateSources {
    TemplateSources {
        html: Some(html.into()),
        ..sources()
    }
}

fn with_text(text: &str) -> TemplateSources {
    TemplateSources {
        text: text.into(),
        ..sources()
    }
}

#[test]
fn syntax_error_gives_file_line_and_column() {
    let html = "<html>\n<body>\n<p>{{first_name}}</p>\n<p>{{#if city}}open</p>\n</body>\n";
    let err = compile_with(with_html(html), settings()).expect_err("unclosed if");
    match &err {
        TemplateError::Syntax {
            file, line, reason, ..
        } => {
            assert_eq!(*file, HTML_FILE);
            assert!(line.is_some(), "{err:?}");
            assert!(!reason.is_empty());
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    assert!(err.to_string().starts_with("body.html.hbs:"), "{err}");

    let err = compile_with(
        with_text("line one\nline two {{first_name}\nline three\n"),
        settings(),
    )
    .expect_err("unclosed mustache");
    match &err {
        TemplateError::Syntax {
            file, line, column, ..
        } => {
            assert_eq!(*file, TEXT_FILE);
            assert_eq!(*line, Some(2), "{err}");
            assert!(column.is_some());
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    let shown = err.to_string();
    assert!(shown.starts_with("body.txt.hbs:2:"), "{shown}");

    let err = compile_with(
        TemplateSources {
            subject: "{{#if}}".into(),
            ..sources()
        },
        settings(),
    )
    .expect_err("bad subject");
    assert!(err.to_string().starts_with("subject"), "{err}");
}

#[test]
fn unknown_field_is_a_launch_error_with_position() {
    let err = compile_with(
        with_text("Hi {{first_name}},\n\nyour {{plan}} plan\n"),
        settings(),
    )
    .expect_err("plan is not a column");
    assert_eq!(
        err,
        TemplateError::UnknownField {
            file: TEXT_FILE,
            line: Some(3),
            column: Some(6),
            name: "plan".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "body.txt.hbs:3:6: unknown field `plan`: the recipient list has no such column"
    );

    // In every template, and in every position a field can appear.
    let cases: Vec<(TemplateSources, MessageSettings, &str, &str)> = vec![
        (
            TemplateSources {
                subject: "Hi {{frist_name}}".into(),
                ..sources()
            },
            settings(),
            SUBJECT_FILE,
            "frist_name",
        ),
        (
            with_html("{{{raw_html}}}"),
            settings(),
            HTML_FILE,
            "raw_html",
        ),
        (
            with_html("{{#if vip}}x{{/if}}"),
            settings(),
            HTML_FILE,
            "vip",
        ),
        (
            with_html("{{#if (eq vip \"y\")}}x{{/if}}"),
            settings(),
            HTML_FILE,
            "vip",
        ),
        (with_html("{{urlencode vip}}"), settings(), HTML_FILE, "vip"),
        (
            with_text("{{#with city}}{{@root.vip}}{{/with}}"),
            settings(),
            TEXT_FILE,
            "@root.vip",
        ),
        (
            with_text("{{#each city}}{{../vip}}{{/each}}"),
            settings(),
            TEXT_FILE,
            "../vip",
        ),
        (
            with_text("{{#if city}}{{else}}{{vip}}{{/if}}"),
            settings(),
            TEXT_FILE,
            "vip",
        ),
        (
            with_text("{{#if city}}{{else if vip}}x{{/if}}"),
            settings(),
            TEXT_FILE,
            "vip",
        ),
        (
            with_text("{{city.name}}"),
            settings(),
            TEXT_FILE,
            "city.name",
        ),
        (
            sources(),
            MessageSettings {
                list_unsubscribe: Some("https://x.example/u?id={{user_id}}".into()),
                ..settings()
            },
            UNSUBSCRIBE_FILE,
            "user_id",
        ),
    ];
    for (sources, settings, file, name) in cases {
        match compile_with(sources, settings) {
            Err(TemplateError::UnknownField {
                file: got_file,
                name: got_name,
                ..
            }) => {
                assert_eq!((got_file, got_name.as_str()), (file, name));
            }
            other => panic!("{file} {name}: expected UnknownField, got {other:?}"),
        }
    }
}

#[test]
fn known_fields_in_blocks_compile() {
    for text in [
        "{{#each city}}{{this}} {{@index}} {{../first_name}}{{/each}}",
        "{{#with city as |c|}}{{c}} {{@root.note}}{{/with}}",
        "{{#if city}}{{city}}{{else if note}}{{note}}{{else}}-{{/if}}",
        "{{[first_name]}} {{this.city}} {{lookup this \"city\"}}",
        "{{email}}",
    ] {
        assert_eq!(compile_with(with_text(text), settings()), Ok(()), "{text}");
    }
    // `email` is always available, even without such a column.
    let names = vec!["first_name".to_string()];
    let sources = TemplateSources {
        subject: "{{first_name}} {{email}}".into(),
        text: "{{email}}".into(),
        html: None,
    };
    assert!(MessageTemplate::compile(&sources, settings(), names, VerpSigner::new(KEY)).is_ok());
}

#[test]
fn unknown_helpers_and_partials_are_refused() {
    let err = compile_with(with_text("{{shout first_name}}"), settings()).expect_err("no helper");
    assert!(
        matches!(err, TemplateError::UnknownHelper { ref name, .. } if name == "shout"),
        "{err:?}"
    );
    let err = compile_with(with_text("{{#city}}x{{/city}}"), settings()).expect_err("section");
    assert!(
        matches!(err, TemplateError::UnknownHelper { .. }),
        "{err:?}"
    );
    let err = compile_with(with_html("a\n  {{> footer}}"), settings()).expect_err("partial");
    assert_eq!(
        err.to_string(),
        "body.html.hbs:2:3: partials are not supported in campaign templates"
    );
    let err = compile_with(with_html("{{#*inline \"x\"}}y{{/inline}}"), settings())
        .expect_err("decorator");
    assert!(matches!(err, TemplateError::Unsupported { .. }), "{err:?}");
}

#[test]
fn invalid_settings_are_refused() {
    let bad_ids = ["", "bad id", "dot.id", "é", &"x".repeat(32)];
    for id in bad_ids {
        let err = compile_with(
            sources(),
            MessageSettings {
                campaign_id: id.to_string(),
                ..settings()
            },
        )
        .expect_err("bad campaign id");
        assert!(
            matches!(err, TemplateError::InvalidCampaignId { .. }),
            "{id:?}: {err:?}"
        );
    }
    assert!(compile_with(
        sources(),
        MessageSettings {
            campaign_id: "A_b-9".repeat(6) + "z",
            ..settings()
        }
    )
    .is_ok());

    for from in [
        "",
        "news",
        "Acme <news@>",
        "Acme\r\nBcc: x <n@acme.example>",
        "<n@a b>",
    ] {
        let err = compile_with(
            sources(),
            MessageSettings {
                from: from.into(),
                ..settings()
            },
        )
        .expect_err("bad from");
        assert!(
            matches!(
                err,
                TemplateError::InvalidAddress {
                    setting: "from",
                    ..
                }
            ),
            "{from:?}: {err:?}"
        );
    }
    let err = compile_with(
        sources(),
        MessageSettings {
            reply_to: Some("nope".into()),
            ..settings()
        },
    )
    .expect_err("bad reply_to");
    assert!(matches!(
        err,
        TemplateError::InvalidAddress {
            setting: "reply_to",
            ..
        }
    ));

    let bad_settings = [
        MessageSettings {
            list_id: "weekly acme".into(),
            ..settings()
        },
        MessageSettings {
            list_id: "<x>\r\nBcc: y".into(),
            ..settings()
        },
        MessageSettings {
            bounce_domain: "bounces..example".into(),
            ..settings()
        },
        MessageSettings {
            list_unsubscribe: Some("javascript:alert({{email}})".into()),
            ..settings()
        },
    ];
    for settings in bad_settings {
        let err = compile_with(sources(), settings.clone()).expect_err("bad setting");
        assert!(
            matches!(err, TemplateError::InvalidSetting { .. }),
            "{settings:?}: {err:?}"
        );
    }

    let names = vec!["email".to_string(), "city".into(), "city".into()];
    let err = MessageTemplate::compile(&sources(), settings(), names, VerpSigner::new(KEY))
        .expect_err("duplicate column");
    assert_eq!(err, TemplateError::DuplicateField("city".into()));
}
