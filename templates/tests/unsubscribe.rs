//! Signed unsubscribe links: real tokens verify, every mutation of a real token is refused with
//! a typed error, and rendered messages carry the signed links (header and body) and never the
//! address.

mod common;

use common::*;
use mailfarm_templates::{
    MessageSettings, MessageTemplate, TemplateError, TemplateSources, UnsubscribeError,
    UnsubscribeSigner, UnsubscribeTarget, VerpSigner,
};

const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn signer() -> UnsubscribeSigner {
    UnsubscribeSigner::from_verp_key(KEY)
}

fn target(campaign: &str, list: &str, id: u64) -> UnsubscribeTarget {
    UnsubscribeTarget {
        campaign_id: campaign.into(),
        list_id: Some(list.into()),
        recipient_id: id,
    }
}

#[test]
fn real_url_tokens_verify_and_name_campaign_list_and_recipient() {
    let s = signer();
    for (campaign, list, id) in [
        ("autumn-2026", "weekly.acme.example", 0),
        ("a", "l", 1),
        ("X_y-Z", "weekly.acme.example", u64::MAX),
        (&"c".repeat(31), &"l".repeat(255), 1 << 40),
    ] {
        let token = s.url_token(campaign, list, id);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "URL-safe: {token}"
        );
        assert_eq!(s.verify_url_token(&token), Ok(target(campaign, list, id)));
    }
    let url = s.url("https://unsub.acme.example/", "c1", "l.example", 7);
    assert!(url.starts_with("https://unsub.acme.example/u/"), "{url}");
}

#[test]
fn every_mutation_of_a_real_url_token_is_refused() {
    let s = signer();
    let mut tried = 0usize;
    for (campaign, list, id) in [
        ("autumn-2026", "weekly.acme.example", 42),
        ("c", "l", 0),
        ("big", "list.example", 123_456_789_012),
    ] {
        let token = s.url_token(campaign, list, id);
        let chars: Vec<char> = token.chars().collect();
        let mut check = |mutated: String, what: &str| {
            tried += 1;
            assert_ne!(mutated, token, "{what} left the token unchanged");
            let result = s.verify_url_token(&mutated);
            assert!(
                result.is_err(),
                "{what}: {mutated} was accepted: {result:?}"
            );
        };
        for i in 0..chars.len() {
            // Every substitution with every other alphabet character, and some foreign ones.
            for c in B64.chars().chain(['=', '.', '%', '+', '/', ' ', 'é']) {
                if c == chars[i] {
                    continue;
                }
                let mut m = chars.clone();
                m[i] = c;
                check(m.into_iter().collect(), "substitution");
            }
            let mut m = chars.clone();
            m.remove(i);
            check(m.into_iter().collect(), "deletion");
            let mut m = chars.clone();
            m.insert(i, 'A');
            check(m.into_iter().collect(), "insertion");
            if i + 1 < chars.len() && chars[i] != chars[i + 1] {
                let mut m = chars.clone();
                m.swap(i, i + 1);
                check(m.into_iter().collect(), "swap");
            }
            check(chars[..i].iter().collect(), "truncation");
        }
        check(format!("{token}A"), "appended character");
        check(format!("{token}AAAA"), "appended block");
        check(token.to_uppercase(), "upper case");
        check(token.to_lowercase(), "lower case");
        // A valid token of another farm is refused too.
        check(
            UnsubscribeSigner::from_verp_key(b"another farm").url_token(campaign, list, id),
            "other key",
        );
        // The same fields with another recipient id is a different, valid token, but its
        // signature does not carry over to our token's text.
        let other = s.url_token(campaign, list, id + 1);
        check(
            format!(
                "{}{}",
                &other[..other.len() - 22],
                &token[token.len() - 22..]
            ),
            "spliced signature",
        );
    }
    assert!(tried > 10_000, "tried {tried} mutations");
}

#[test]
fn bad_url_tokens_are_told_apart() {
    let s = signer();
    let token = s.url_token("autumn-2026", "weekly.acme.example", 42);
    assert_eq!(s.verify_url_token(""), Err(UnsubscribeError::Truncated));
    assert_eq!(
        s.verify_url_token(&token[..token.len() - 4]),
        Err(UnsubscribeError::Truncated)
    );
    assert!(matches!(
        s.verify_url_token("not a token!"),
        Err(UnsubscribeError::Malformed(_))
    ));
    assert!(matches!(
        s.verify_url_token(&"A".repeat(600)),
        Err(UnsubscribeError::Malformed(_))
    ));
    // Another farm's key: well formed, check passes, signature does not.
    let foreign = UnsubscribeSigner::from_verp_key(b"another farm").url_token("c", "l", 1);
    assert_eq!(s.verify_url_token(&foreign), Err(UnsubscribeError::Forged));
    // Changing a signed byte (here in the campaign id, char 8 = byte 6) is tampering.
    let mut chars: Vec<char> = token.chars().collect();
    let at = 8;
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    assert_eq!(
        s.verify_url_token(&chars.iter().collect::<String>()),
        Err(UnsubscribeError::Tampered)
    );
    // Version 2 does not exist: version byte 2 is "Ag..." in base64url.
    let v2 = format!("Ag{}", &token[2..]);
    assert!(matches!(
        s.verify_url_token(&v2),
        Err(UnsubscribeError::Unknown { version: 2 })
    ));
    assert_eq!(UnsubscribeError::Forged.kind(), "forged");
}

#[test]
fn mailto_tokens_verify_and_every_mutation_is_refused() {
    let s = signer();
    let address = s.mailto_address("autumn-2026", 42, "bounces.acme.example");
    assert!(address.starts_with("u-autumn-2026-16-"), "{address}");
    let expected = UnsubscribeTarget {
        campaign_id: "autumn-2026".into(),
        list_id: None,
        recipient_id: 42,
    };
    assert_eq!(
        s.verify_mailto(&address, "bounces.acme.example"),
        Ok(expected.clone())
    );
    assert!(
        s.verify_mailto(&address.to_uppercase(), "bounces.acme.example")
            .is_err(),
        "an upper-cased token is not ours"
    );
    assert_eq!(
        s.verify_mailto(
            &address.replace("bounces.acme.example", "BOUNCES.ACME.EXAMPLE"),
            "bounces.acme.example"
        ),
        Ok(expected),
        "the domain is compared without regard to case"
    );
    assert_eq!(
        s.verify_mailto(&address, "other.example"),
        Err(UnsubscribeError::WrongDomain)
    );
    let (local, domain) = address.split_once('@').unwrap();
    let chars: Vec<char> = local.chars().collect();
    let mut tried = 0;
    for i in 0..chars.len() {
        for c in "abcdefghijklmnopqrstuvwxyz0123456789-_A".chars() {
            if c == chars[i] {
                continue;
            }
            let mut m = chars.clone();
            m[i] = c;
            let mutated = format!("{}@{domain}", m.iter().collect::<String>());
            tried += 1;
            assert!(
                s.verify_mailto(&mutated, domain).is_err(),
                "{mutated} was accepted"
            );
        }
        let mutated = format!("{}@{domain}", chars[..i].iter().collect::<String>());
        assert!(s.verify_mailto(&mutated, domain).is_err(), "{mutated}");
    }
    assert!(tried > 1000);
    // A VERP return path is not an unsubscribe address, even with a valid VERP signature.
    let verp = VerpSigner::new(KEY).return_path("autumn-2026", 42, domain);
    assert!(s.verify_mailto(&verp, domain).is_err());
}

fn signed_settings(base: &str) -> MessageSettings {
    MessageSettings {
        list_unsubscribe: None,
        unsubscribe_base_url: Some(base.into()),
        ..settings()
    }
}

fn signed_sources() -> TemplateSources {
    TemplateSources {
        text: "Hi {{first_name}}\nLeave: {{unsubscribe_url}}\n".into(),
        html: Some("<p><a href=\"{{unsubscribe_url}}\">Unsubscribe</a></p>\n".into()),
        ..sources()
    }
}

#[test]
fn rendered_messages_carry_signed_links_and_no_address() {
    let template = MessageTemplate::compile(
        &signed_sources(),
        signed_settings("https://unsub.acme.example/"),
        field_names(),
        VerpSigner::new(KEY),
    )
    .expect("compiles");
    let email = "carol+news@example.org";
    let out = template
        .render(42, email, &row(email, "Carol", "Lyon", "n"))
        .expect("renders");
    let msg = parse(&out.data);
    let header = msg
        .header_raw("List-Unsubscribe")
        .expect("List-Unsubscribe")
        .trim()
        .replace("\r\n", "");
    assert!(
        !header.contains("carol"),
        "no address in the header: {header}"
    );
    let urls: Vec<&str> = header
        .split(',')
        .map(|u| u.trim().trim_start_matches('<').trim_end_matches('>'))
        .collect();
    assert_eq!(urls.len(), 2, "{header}");
    let token = urls[0]
        .strip_prefix("https://unsub.acme.example/u/")
        .expect("https link first");
    assert_eq!(
        signer().verify_url_token(token),
        Ok(target("autumn-2026", "weekly.acme.example", 42))
    );
    let mailto = urls[1]
        .strip_prefix("mailto:")
        .and_then(|m| m.strip_suffix("?subject=unsubscribe"))
        .expect("mailto second");
    assert_eq!(
        signer()
            .verify_mailto(mailto, "bounces.acme.example")
            .map(|t| t.recipient_id),
        Ok(42)
    );
    assert_eq!(
        msg.header_raw("List-Unsubscribe-Post").map(str::trim),
        Some("List-Unsubscribe=One-Click")
    );
    let text = msg.body_text(0).expect("text part");
    assert!(text.contains(urls[0]), "text body has the link: {text}");
    let html = msg.body_html(0).expect("html part");
    assert!(html.contains(urls[0]), "html body has the link: {html}");
    assert!(!String::from_utf8_lossy(&out.data).contains("carol+news@example.org?"));
}

#[test]
fn plain_http_base_gets_no_one_click_header() {
    let template = MessageTemplate::compile(
        &signed_sources(),
        signed_settings("http://127.0.0.1:8080"),
        field_names(),
        VerpSigner::new(KEY),
    )
    .expect("compiles");
    let out = template
        .render(1, "a@example.org", &row("a@example.org", "A", "B", "C"))
        .expect("renders");
    let msg = parse(&out.data);
    assert!(msg
        .header_raw("List-Unsubscribe")
        .is_some_and(|h| h.contains("http://127.0.0.1:8080/u/")));
    assert!(msg.header_raw("List-Unsubscribe-Post").is_none());
}

#[test]
fn unsubscribe_settings_are_checked_at_compile() {
    let compile = |sources: &TemplateSources, settings: MessageSettings| {
        MessageTemplate::compile(sources, settings, field_names(), VerpSigner::new(KEY)).err()
    };
    // {{unsubscribe_url}} without a base URL.
    let err = compile(&signed_sources(), settings()).expect("refused");
    assert!(
        matches!(
            err,
            TemplateError::InvalidSetting {
                setting: "unsubscribe_base_url",
                ..
            }
        ),
        "{err:?}"
    );
    // Both the old setting and the base URL.
    let err = compile(
        &sources(),
        MessageSettings {
            unsubscribe_base_url: Some("https://u.example".into()),
            ..settings()
        },
    )
    .expect("refused");
    assert!(matches!(
        err,
        TemplateError::InvalidSetting {
            setting: "list_unsubscribe",
            ..
        }
    ));
    for bad in [
        "ftp://u.example",
        "https://",
        "https:///path",
        "https://u.example/?u=1",
        "https://u.example/#x",
        "https://u example",
        "javascript:alert(1)",
    ] {
        let err = compile(&signed_sources(), signed_settings(bad)).expect("refused");
        assert!(
            matches!(
                err,
                TemplateError::InvalidSetting {
                    setting: "unsubscribe_base_url",
                    ..
                }
            ),
            "{bad}: {err:?}"
        );
    }
}
