//! Tests of the shaping file parser and of limit resolution.

use super::*;

fn rate(s: &str) -> Rate {
    s.parse().unwrap()
}

const EXAMPLE: &str = r#"
[default]
max_connections = 4
max_messages_per_connection = 1000
message_rate = "100/s"
connection_rate = "10/s"
[domain."gmail.test"]
message_rate = "50/s"
tls = "required"
[domain."Other.TEST."]
message_rate = "70/s"
max_connections = 2
[site."MX2.slow.test, mx1.slow.test"]
max_connections = 1
ramp_up = "0s"
[site."relay:smtp.test:587"]
message_rate = "10/s"
[bog]
rate = "1/s"
"#;

#[test]
fn precedence_site_then_domain_then_default() {
    let s = Shaping::parse(EXAMPLE).unwrap();
    let site = SiteKey::from_hosts(["mx.gmail.test"]);
    let l = s.limits_for(&site, &["gmail.test"]);
    assert_eq!(l.message_rate, Some(rate("50/s")));
    assert_eq!(l.max_connections, 4);
    assert_eq!(l.max_messages_per_connection, Some(1000));
    assert_eq!(l.connection_rate, Some(rate("10/s")));
    assert_eq!(l.tls, Some(TlsPolicy::Required));
    assert_eq!(l.ramp_up, DEFAULT_RAMP_UP);
    // Two domains on one site: the strictest of each key.
    let l = s.limits_for(&site, &["gmail.test", "other.test", "plain.test"]);
    assert_eq!(l.message_rate, Some(rate("50/s")));
    assert_eq!(l.max_connections, 2);
    assert_eq!(l.tls, Some(TlsPolicy::Required));
    // The site section beats the domain's.
    let slow = SiteKey::from_hosts(["mx1.slow.test", "mx2.slow.test"]);
    let l = s.limits_for(&slow, &["other.test"]);
    assert_eq!(l.max_connections, 1);
    assert_eq!(l.message_rate, Some(rate("70/s")));
    assert_eq!(l.ramp_up, Duration::ZERO);
    assert_eq!(s.bog().rate, rate("1/s"));
}

#[test]
fn share_scales_rates_and_connections() {
    let s = Shaping::parse(EXAMPLE).unwrap().with_share(1.0 / 3.0);
    let l = s.limits_for(&SiteKey::from_hosts(["mx.x.test"]), &["x.test"]);
    assert_eq!(l.message_rate, Some(rate("33/s")));
    assert_eq!(l.connection_rate, Some(rate("3/s")));
    assert_eq!(l.max_connections, 1);
    let slow = SiteKey::from_hosts(["mx1.slow.test", "mx2.slow.test"]);
    assert_eq!(s.limits_for(&slow, &[]).max_connections, 1, "never below 1");
    let update = ShapingUpdate {
        toml: String::new(),
        share_numerator: 1,
        share_denominator: 2,
    };
    let s = Shaping::from_update(&update).unwrap();
    let l = s.limits_for(&SiteKey::from_hosts(["mx.x.test"]), &[]);
    assert_eq!(l.message_rate, Some(rate("50/s")));
    assert_eq!(l.max_connections, 2);
}

#[test]
fn relay_sites_ignore_defaults() {
    let s = Shaping::parse(EXAMPLE).unwrap().with_share(0.5);
    let relay = SiteKey("relay:smtp.test:587".into());
    let l = s.relay_limits(&relay, 7);
    assert_eq!(l.max_connections, 7);
    assert_eq!(l.message_rate, Some(rate("5/s")));
    assert_eq!(l.connection_rate, None);
    assert_eq!(l.ramp_up, Duration::ZERO);
    let other = SiteKey("relay:other.test:25".into());
    assert_eq!(s.relay_limits(&other, 3).message_rate, None);
}

#[test]
fn every_error_is_reported_with_its_path() {
    let text = r#"
colour = 1
[default]
max_connections = 0
message_rate = "fast"
speed = 3
[domain."bad domain"]
tls = "sometimes"
[domain."ok.test"]
ramp_up = "soon"
connection_rate = 5
[site."relay:nope"]
[bog]
failure_ratio = 2.0
rate = "unlimited"
"#;
    let errors = Shaping::parse(text).unwrap_err();
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "colour",
        "default.max_connections",
        "default.message_rate",
        "default.speed",
        "domain.\"bad domain\"",
        "domain.\"bad domain\".tls",
        "domain.\"ok.test\".ramp_up",
        "domain.\"ok.test\".connection_rate",
        "site.\"relay:nope\"",
        "bog.failure_ratio",
        "bog.rate",
    ] {
        assert!(paths.contains(&want), "{want} missing from {errors:#?}");
    }
    assert_eq!(errors.len(), 11, "{errors:#?}");
    let line = |path: &str| errors.iter().find(|e| e.path == path).and_then(|e| e.line);
    assert_eq!(line("colour"), Some(2));
    assert_eq!(line("default.max_connections"), Some(4));
    assert_eq!(line("domain.\"ok.test\".connection_rate"), Some(11));
    assert_eq!(line("bog.rate"), Some(15));
    assert!(
        errors[0].to_string().starts_with("line 2: colour: "),
        "{}",
        errors[0]
    );
    let syntax = Shaping::parse("[default]\nx = 1\n[default").unwrap_err();
    assert_eq!(syntax.len(), 1);
    assert_eq!(syntax[0].line, Some(3), "{:?}", syntax[0]);
}

#[test]
fn reply_rules_compile_and_classify() {
    use crate::outbound::reply::EnhancedStatus;
    use crate::outbound::throttle::{Action, ThrottleKind};
    let text = r#"
[[rule]]
reply = "(?i)daily sending quota"
provider = "ses"
action = "suspend"
duration = "30m"

[[rule]]
enhanced = "4.7.26"
action = "cap"
rate = "10/s"
connections = 2
duration = "1h"

[[rule]]
code = 451
reply = "Server busy"
site = "relay:smtp.example.net:587"
action = "ignore"

[[rule]]
reply = "please wait"
action = "throttle-connections"
"#;
    let s = Shaping::parse(text).unwrap();
    let c = s.classifier();
    assert_eq!(c.rules().len(), 4);
    assert_eq!(c.rules()[1].line, 8);
    let ses = "email-smtp.us-east-1.amazonaws.com";
    assert_eq!(
        c.classify(ses, 454, None, "Daily sending quota exceeded"),
        Action::Suspend(Duration::from_secs(1800))
    );
    let e = Some(EnhancedStatus::new(4, 7, 26));
    assert_eq!(
        c.classify("mx.test", 421, e, "unauthenticated"),
        Action::Cap {
            rate: Some(rate("10/s")),
            connections: Some(2),
            duration: Duration::from_secs(3600)
        }
    );
    let relay = "relay:smtp.example.net:587";
    assert_eq!(c.classify(relay, 451, None, "Server busy"), Action::Ignore);
    // Elsewhere the built-in Microsoft rule still holds.
    assert_eq!(
        c.classify("mx.test", 451, None, "Server busy"),
        Action::Throttle(ThrottleKind::Rate)
    );
    assert_eq!(
        c.classify("mx.test", 450, None, "please wait"),
        Action::Throttle(ThrottleKind::Connections)
    );
}

#[test]
fn every_rule_error_is_reported_with_its_line() {
    let text = r#"[[rule]]
reply = "(unclosed"
action = "suspend"

[[rule]]
action = "cap"
duration = "soon"
provider = "hotmale"
colour = "red"

[[rule]]
code = 42
enhanced = "9.9"
action = "bog"
duration = "1m"
site = "a"
provider = "gmail"
"#;
    let errors = Shaping::parse(text).unwrap_err();
    let found: Vec<(Option<usize>, &str)> =
        errors.iter().map(|e| (e.line, e.path.as_str())).collect();
    for want in [
        (Some(2), "rule[0].reply"),
        (Some(1), "rule[0]"),
        (Some(7), "rule[1].duration"),
        (Some(8), "rule[1].provider"),
        (Some(9), "rule[1].colour"),
        (Some(5), "rule[1]"),
        (Some(12), "rule[2].code"),
        (Some(13), "rule[2].enhanced"),
        (Some(15), "rule[2].duration"),
        (Some(11), "rule[2]"),
    ] {
        assert!(found.contains(&want), "{want:?} missing from {errors:#?}");
    }
    // Sorted by line, every one of them.
    let lines: Vec<usize> = errors.iter().filter_map(|e| e.line).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{errors:#?}");
    assert_eq!(lines.len(), errors.len(), "{errors:#?}");
}

#[test]
fn empty_text_gives_built_ins() {
    let s = Shaping::parse("").unwrap();
    let l = s.limits_for(&SiteKey::from_hosts(["mx.a.test"]), &["a.test"]);
    assert_eq!(
        l,
        SiteLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_messages_per_connection: None,
            message_rate: Some(DEFAULT_MESSAGE_RATE),
            connection_rate: Some(DEFAULT_CONNECTION_RATE),
            ramp_up: DEFAULT_RAMP_UP,
            tls: None,
        }
    );
    assert_eq!(s.bog(), &BogSettings::default());
}

#[test]
fn durations() {
    assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("1.5m"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("0"), Some(Duration::ZERO));
    assert_eq!(parse_duration("1h 30m"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_duration("2min"), Some(Duration::from_secs(120)));
    for bad in ["", "s", "10", "10 parsecs", "-1s"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}
