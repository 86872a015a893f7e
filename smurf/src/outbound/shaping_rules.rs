//! The operator's reply rules of the shaping file (`[[rule]]`), in the manner of KumoMTA's
//! traffic-shaping automation, and the line numbers of shaping-file errors. Apart from
//! [`super::shaping`] to keep each file readable; the rules are compiled into the
//! [`Classifier`](super::throttle::Classifier) that decides what a reply means.
//!
//! ```toml
//! [[rule]]                                 # first matching rule wins, in file order
//! reply = "(?i)daily sending quota"        # regex on the reply text (optional)
//! enhanced = "4.7"                         # enhanced code, whole or leading part (optional)
//! code = 421                               # reply code (optional); at least one of the three
//! provider = "gmail"                       # or site = "relay:host:port" / "mx1.x,mx2.x"
//! action = "suspend"                       # suspend | cap | bog | throttle |
//!                                          # throttle-connections | ignore
//! duration = "30m"                         # for suspend and cap
//! rate = "5/s"                             # for cap (farm-wide, shared like the limits)
//! connections = 1                          # for cap (farm-wide)
//! ```
//!
//! `throttle` treats the reply as a throttling reply (learnt rate cut, message retried on the
//! smurf); `throttle-connections` the same for the connection count; `ignore` makes a reply the
//! built-in rules would take for throttling an ordinary one.

use mailfarm_protocol::Rate;
use regex::Regex;

use super::shaping::{parse_duration, ShapingError};
use super::throttle::{Action, Provider, Rule, SiteMatch, ThrottleKind};

/// Keys a rule may have.
const KEYS: &str = "reply, enhanced, code, site, provider, action, duration, rate, connections";

fn err(path: &str, message: impl Into<String>) -> ShapingError {
    ShapingError {
        path: path.to_owned(),
        message: message.into(),
        line: None,
    }
}

/// Parses the `rule` array of tables of the shaping file `text`; errors go to `errors` (all
/// of them).
pub(super) fn rules(text: &str, value: &toml::Value, errors: &mut Vec<ShapingError>) -> Vec<Rule> {
    let Some(list) = value.as_array() else {
        errors.push(err("rule", "must be an array of tables: write [[rule]]"));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let path = format!("rule[{i}]");
        if let Some(mut rule) = rule(item, &path, errors) {
            rule.line = line_of(text, &path).unwrap_or(0);
            out.push(rule);
        }
    }
    out
}

fn rule(value: &toml::Value, path: &str, errors: &mut Vec<ShapingError>) -> Option<Rule> {
    let Some(table) = value.as_table() else {
        errors.push(err(path, "must be a table"));
        return None;
    };
    let before = errors.len();
    let key = |k: &str| format!("{path}.{k}");
    let text = |k: &str, errors: &mut Vec<ShapingError>| -> Option<String> {
        let v = table.get(k)?;
        match v.as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                errors.push(err(&key(k), "must be a string"));
                None
            }
        }
    };
    for k in table.keys() {
        if !KEYS.split(", ").any(|known| known == k) {
            errors.push(err(&key(k), format!("unknown key (expected {KEYS})")));
        }
    }
    let reply = text("reply", errors).and_then(|re| match Regex::new(&re) {
        Ok(re) => Some(re),
        Err(e) => {
            let first = e.to_string().lines().last().unwrap_or("").trim().to_owned();
            errors.push(err(
                &key("reply"),
                format!("not a regular expression: {first}"),
            ));
            None
        }
    });
    let enhanced = text("enhanced", errors).and_then(|e| match enhanced_prefix(&e) {
        Some(parts) => Some(parts),
        None => {
            errors.push(err(
                &key("enhanced"),
                "must be an enhanced code or its leading part, such as \"4.7.1\" or \"4.7\"",
            ));
            None
        }
    });
    let code = table.get("code").and_then(|v| match v.as_integer() {
        Some(n) if (200..=599).contains(&n) => u16::try_from(n).ok(),
        _ => {
            errors.push(err(&key("code"), "must be a reply code from 200 to 599"));
            None
        }
    });
    if !["reply", "enhanced", "code"]
        .iter()
        .any(|k| table.contains_key(*k))
    {
        errors.push(err(
            path,
            "needs at least one of reply, enhanced or code to match",
        ));
    }
    let site = match (text("site", errors), text("provider", errors)) {
        (Some(_), Some(_)) => {
            errors.push(err(path, "has both site and provider: choose one"));
            SiteMatch::Any
        }
        (Some(site), None) => SiteMatch::Site(site.trim().to_ascii_lowercase()),
        (None, Some(p)) => match Provider::parse(&p) {
            Some(p) => SiteMatch::Provider(p),
            None => {
                errors.push(err(
                    &key("provider"),
                    "unknown provider (expected gmail, yahoo, microsoft or ses)",
                ));
                SiteMatch::Any
            }
        },
        (None, None) => SiteMatch::Any,
    };
    let duration = text("duration", errors).and_then(|d| match parse_duration(&d) {
        Some(d) if !d.is_zero() => Some(d),
        _ => {
            errors.push(err(&key("duration"), "must be a duration such as \"10m\""));
            None
        }
    });
    let rate = text("rate", errors).and_then(|r| match r.parse::<Rate>() {
        Ok(r) => Some(r),
        Err(e) => {
            errors.push(err(&key("rate"), e.to_string()));
            None
        }
    });
    let connections = table.get("connections").and_then(|v| match v.as_integer() {
        Some(n) if (1..=1_000_000).contains(&n) => u32::try_from(n).ok(),
        _ => {
            errors.push(err(
                &key("connections"),
                "must be a whole number from 1 to 1000000",
            ));
            None
        }
    });
    let has = |k: &str| table.contains_key(k);
    let action = match text("action", errors).as_deref() {
        None => {
            if !has("action") {
                errors.push(err(path, "needs an action"));
            }
            None
        }
        Some(name @ ("bog" | "throttle" | "throttle-connections" | "ignore")) => {
            for k in ["duration", "rate", "connections"] {
                if has(k) {
                    errors.push(err(&key(k), format!("does not apply to action {name:?}")));
                }
            }
            Some(match name {
                "bog" => Action::Bog,
                "throttle" => Action::Throttle(ThrottleKind::Rate),
                "throttle-connections" => Action::Throttle(ThrottleKind::Connections),
                _ => Action::Ignore,
            })
        }
        Some("suspend") => {
            for k in ["rate", "connections"] {
                if has(k) {
                    errors.push(err(&key(k), "does not apply to action \"suspend\""));
                }
            }
            if !has("duration") {
                errors.push(err(path, "action \"suspend\" needs a duration"));
            }
            duration.map(Action::Suspend)
        }
        Some("cap") => {
            if !has("duration") {
                errors.push(err(path, "action \"cap\" needs a duration"));
            }
            if !has("rate") && !has("connections") {
                errors.push(err(
                    path,
                    "action \"cap\" needs a rate, connections or both",
                ));
            }
            duration.map(|duration| Action::Cap {
                rate,
                connections,
                duration,
            })
        }
        Some(_) => {
            errors.push(err(
                &key("action"),
                "must be suspend, cap, bog, throttle, throttle-connections or ignore",
            ));
            None
        }
    };
    if errors.len() > before {
        return None;
    }
    Some(Rule {
        line: 0,
        reply,
        enhanced,
        code,
        site,
        action: action?,
    })
}

/// `"4.7.1"` or `"4.7"` or `"4"` into its parts.
fn enhanced_prefix(text: &str) -> Option<Vec<u16>> {
    let parts: Vec<u16> = text
        .trim()
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let class_ok = parts.first().is_some_and(|c| matches!(c, 2 | 4 | 5));
    (class_ok && parts.len() <= 3).then_some(parts)
}

/// The 1-based line a shaping-file key path (as in [`ShapingError::path`]) is written on, when
/// it can be found: `default.ramp_up`, `domain."x.test".message_rate`, `rule[2].action`,
/// `bog.rate`, or a section alone. Dotted keys and inline tables are not followed.
pub(super) fn line_of(text: &str, path: &str) -> Option<usize> {
    let (section, key) = split_path(path);
    let (header, index) = match section.find('[') {
        Some(at) if section.ends_with(']') && !section.starts_with('"') => {
            let n: usize = section[at + 1..section.len() - 1].parse().ok()?;
            (format!("[[{}]]", &section[..at]), n)
        }
        _ => (format!("[{section}]"), 0),
    };
    let mut seen = 0;
    let mut inside = false;
    for (n, line) in text.lines().enumerate() {
        let bare: String = line
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if bare.starts_with('[') {
            inside = false;
            if bare == header {
                if seen == index {
                    inside = true;
                    if key.is_none() {
                        return Some(n + 1);
                    }
                }
                seen += 1;
            }
            continue;
        }
        if let (true, Some(key)) = (inside, key.as_deref()) {
            let name = bare.split('=').next().unwrap_or("");
            if name == key || name.trim_matches('"') == key.trim_matches('"') {
                return Some(n + 1);
            }
        }
    }
    // A top-level key, before any section.
    let top = text.lines().position(|l| {
        let bare: String = l
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        bare.starts_with('[') || bare.split('=').next() == Some(section.as_str())
    })?;
    let line = text.lines().nth(top)?;
    (key.is_none() && !line.trim_start().starts_with('[')).then_some(top + 1)
}

/// `domain."x.test".rate` into (`domain."x.test"`, `rate`); `default` into (`default`, none).
fn split_path(path: &str) -> (String, Option<String>) {
    // Split on dots outside quotes.
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in path.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            '.' if !quoted => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    match parts.as_slice() {
        [one] => (one.clone(), None),
        [first, second] if first == "domain" || first == "site" => {
            (format!("{first}.{second}"), None)
        }
        [first, second, rest @ ..] if first == "domain" || first == "site" => {
            (format!("{first}.{second}"), Some(rest.join(".")))
        }
        [first, rest @ ..] => (first.clone(), Some(rest.join("."))),
        [] => (String::new(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_paths() {
        let text = "[default]\nramp_up = \"x\"\n\n[domain.\"gmail.test\"]\n# c\nmessage_rate = 1\n\
                    [[rule]]\naction = \"bog\"\n[[rule]]\ncode = 1\naction = \"x\"\n";
        assert_eq!(line_of(text, "default.ramp_up"), Some(2));
        assert_eq!(line_of(text, "domain.\"gmail.test\".message_rate"), Some(6));
        assert_eq!(line_of(text, "domain.\"gmail.test\""), Some(4));
        assert_eq!(line_of(text, "rule[0].action"), Some(8));
        assert_eq!(line_of(text, "rule[1].action"), Some(11));
        assert_eq!(line_of(text, "rule[1]"), Some(9));
        assert_eq!(line_of(text, "bog.rate"), None);
        assert_eq!(line_of("a = 1\nb = 2\n[x]\nc = 3", "b"), Some(2));
        assert_eq!(line_of("a = 1\n[x]\nc = 3", "c"), None);
    }

    #[test]
    fn enhanced_prefixes() {
        assert_eq!(enhanced_prefix("4.7.1"), Some(vec![4, 7, 1]));
        assert_eq!(enhanced_prefix("4.7"), Some(vec![4, 7]));
        assert_eq!(enhanced_prefix("3.1"), None);
        assert_eq!(enhanced_prefix("4.x"), None);
        assert_eq!(enhanced_prefix("4.7.1.2"), None);
    }
}
