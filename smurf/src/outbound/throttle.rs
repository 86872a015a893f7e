//! The one place that decides whether a server's reply means "you are sending too fast".
//!
//! Receivers say it in many ways (see issue 11): Amazon SES's `454 Throttling failure`, Gmail's
//! `421 4.7.0 Try again later, closing connection` and `450 4.2.1 ... rate that prevents
//! additional messages`, Yahoo's `421 4.7.0 [TSS04] ... unexpected volume`, Microsoft's
//! `451 4.7.500 Server busy`, Postfix's `421 4.7.0 Error: too many connections`. Everything
//! that reacts to throttling (the adaptive rate and connection count, the smurf-side retry of a
//! refused message, operator rules) asks [`Classifier::classify`], so a new provider text is
//! taught here once.
//!
//! Order: the operator's rules from the shaping file (first match wins), then the built-in
//! provider rules, then the generic test ([`generic`]).

use std::time::Duration;

use mailfarm_protocol::Rate;
use regex::Regex;

use super::reply::EnhancedStatus;

/// What a throttling reply asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThrottleKind {
    /// Fewer messages per second.
    Rate,
    /// Fewer parallel sessions.
    Connections,
}

/// What the engine does about a reply.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Not throttling: the reply is handled as usual (per-recipient outcome, retries).
    Ignore,
    /// Cut the site's learnt rate or connection count (AIMD) and retry the message on the smurf.
    Throttle(ThrottleKind),
    /// Send nothing to the site for this long; its messages wait on the smurf (or are deferred
    /// to the coordinator when the wait is longer than the smurf holds a message).
    Suspend(Duration),
    /// Cap the site's rate and/or connection count for a while (then learn again).
    Cap {
        /// Farm-wide rate cap (this smurf applies its share).
        rate: Option<Rate>,
        /// Farm-wide connection cap (this smurf applies its share, at least 1).
        connections: Option<u32>,
        /// How long the cap holds.
        duration: Duration,
    },
    /// Move the site to the bog (slow lane) now.
    Bog,
}

/// Which sites a rule applies to.
#[derive(Clone, Debug, PartialEq)]
pub enum SiteMatch {
    /// Every site.
    Any,
    /// One site, by its key (`relay:host:port` or sorted MX host names joined by `,`).
    Site(String),
    /// Sites of a known provider (see [`provider_of`]).
    Provider(Provider),
}

/// Mailbox providers and relay services with built-in rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Gmail and Google Workspace.
    Gmail,
    /// Yahoo and AOL.
    Yahoo,
    /// Outlook.com, Hotmail, Microsoft 365.
    Microsoft,
    /// Amazon SES.
    Ses,
}

impl Provider {
    /// The provider named `name` (`gmail`, `yahoo`, `microsoft`, `ses`).
    pub fn parse(name: &str) -> Option<Provider> {
        match name.to_ascii_lowercase().as_str() {
            "gmail" | "google" => Some(Provider::Gmail),
            "yahoo" | "aol" => Some(Provider::Yahoo),
            "microsoft" | "outlook" | "hotmail" => Some(Provider::Microsoft),
            "ses" | "amazon" => Some(Provider::Ses),
            _ => None,
        }
    }
}

/// The provider whose MX or relay hosts make up a site key, if known.
pub fn provider_of(site: &str) -> Option<Provider> {
    let site = site.to_ascii_lowercase();
    if site.contains("google.com") || site.contains("googlemail.com") {
        Some(Provider::Gmail)
    } else if site.contains("yahoodns.net") || site.contains("yahoo.com") {
        Some(Provider::Yahoo)
    } else if site.contains("outlook.com") || site.contains("hotmail.com") {
        Some(Provider::Microsoft)
    } else if site.contains("amazonaws.com") || site.contains("amazonses.com") {
        Some(Provider::Ses)
    } else {
        None
    }
}

/// An operator's rule (a `[[rule]]` of the shaping file), compiled.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Line of its `[[rule]]` header in the shaping file (for messages).
    pub line: usize,
    /// Regex on the reply text (without code and enhanced code).
    pub reply: Option<Regex>,
    /// Enhanced code, whole or leading parts (`4.7`, `4.7.1`).
    pub enhanced: Option<Vec<u16>>,
    /// Reply code.
    pub code: Option<u16>,
    /// Where it applies.
    pub site: SiteMatch,
    /// What it does.
    pub action: Action,
}

impl PartialEq for Rule {
    fn eq(&self, other: &Self) -> bool {
        self.line == other.line
            && self.reply.as_ref().map(Regex::as_str) == other.reply.as_ref().map(Regex::as_str)
            && self.enhanced == other.enhanced
            && self.code == other.code
            && self.site == other.site
            && self.action == other.action
    }
}

impl Rule {
    fn matches(&self, site: &str, code: u16, enhanced: Option<EnhancedStatus>, text: &str) -> bool {
        let site_ok = match &self.site {
            SiteMatch::Any => true,
            SiteMatch::Site(key) => key == site,
            SiteMatch::Provider(p) => provider_of(site) == Some(*p),
        };
        let code_ok = self.code.is_none_or(|c| c == code);
        let enhanced_ok = self.enhanced.as_ref().is_none_or(|parts| {
            enhanced.is_some_and(|e| {
                let have = [u16::from(e.class), e.subject, e.detail];
                parts.iter().zip(have).all(|(a, b)| *a == b)
            })
        });
        let text_ok = self.reply.as_ref().is_none_or(|re| re.is_match(text));
        site_ok && code_ok && enhanced_ok && text_ok
    }
}

/// A built-in provider rule: code, enhanced code prefix, a lower-case phrase, and the kind.
struct BuiltIn {
    code: u16,
    phrase: &'static str,
    kind: ThrottleKind,
}

/// Built-in rules for Gmail, Yahoo, Microsoft, SES and Postfix (the texts of issue 11).
const BUILT_IN: &[BuiltIn] = &[
    // Amazon SES, at the end of DATA.
    BuiltIn {
        code: 454,
        phrase: "maximum sending rate exceeded",
        kind: ThrottleKind::Rate,
    },
    BuiltIn {
        code: 454,
        phrase: "throttling failure",
        kind: ThrottleKind::Rate,
    },
    // Gmail.
    BuiltIn {
        code: 421,
        phrase: "try again later, closing connection",
        kind: ThrottleKind::Rate,
    },
    BuiltIn {
        code: 450,
        phrase: "rate that prevents additional messages",
        kind: ThrottleKind::Rate,
    },
    // Yahoo.
    BuiltIn {
        code: 421,
        phrase: "[tss04]",
        kind: ThrottleKind::Rate,
    },
    BuiltIn {
        code: 421,
        phrase: "unexpected volume",
        kind: ThrottleKind::Rate,
    },
    // Microsoft.
    BuiltIn {
        code: 451,
        phrase: "server busy",
        kind: ThrottleKind::Rate,
    },
    // Postfix anvil, and most MTAs.
    BuiltIn {
        code: 421,
        phrase: "too many connections",
        kind: ThrottleKind::Connections,
    },
    BuiltIn {
        code: 421,
        phrase: "too many concurrent",
        kind: ThrottleKind::Connections,
    },
];

/// Phrases that make a 4xx a throttling reply (lower case).
const RATE_PHRASES: &[&str] = &[
    "too many messages",
    "slow down",
    "throttl",
    "too fast",
    "volume",
    "server busy",
    "sending rate",
];

/// The generic test, after rules and built-ins: a 421/450/451/452/454 speaking of rates,
/// volume, "too many", throttling or slowing down, or carrying enhanced code 4.7.x or 4.2.1,
/// or any 421 asking to try again later. "Too many connections" (or concurrent sessions) asks
/// for fewer sessions; "too many recipients" is a per-message limit, not throttling.
///
/// A bare "try again later" with another code is not enough: receivers put it on every kind of
/// 4xx (greylisting's `451 4.3.0 Temporary failure, try again later`, a full mailbox), and
/// counting it would throttle a site to the floor on ordinary per-recipient deferrals, which
/// the coordinator's retries handle.
pub fn generic(code: u16, enhanced: Option<EnhancedStatus>, text: &str) -> Option<ThrottleKind> {
    if !matches!(code, 421 | 450 | 451 | 452 | 454) {
        return None;
    }
    let text = text.to_ascii_lowercase();
    if text.contains("too many connections") || text.contains("too many concurrent") {
        return Some(ThrottleKind::Connections);
    }
    if text.contains("too many recipients") {
        return None;
    }
    let by_code = enhanced
        .is_some_and(|e| e.class == 4 && (e.subject == 7 || (e.subject == 2 && e.detail == 1)));
    let by_text = RATE_PHRASES.iter().any(|p| text.contains(p))
        || text.contains("too many")
        || text
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| matches!(w, "rate" | "ratelimit" | "ratelimited"));
    let by_421 = code == 421 && text.contains("try again later");
    (by_code || by_text || by_421).then_some(ThrottleKind::Rate)
}

/// Classifies replies for one shaping file: its rules, then the built-ins, then [`generic`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Classifier {
    rules: Vec<Rule>,
}

impl Classifier {
    /// A classifier with the operator's rules (in file order).
    pub fn new(rules: Vec<Rule>) -> Self {
        Self { rules }
    }

    /// The operator's rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// What to do about a reply from `site` (only transient replies, 4xx, ever throttle; an
    /// operator rule may act on any code).
    pub fn classify(
        &self,
        site: &str,
        code: u16,
        enhanced: Option<EnhancedStatus>,
        text: &str,
    ) -> Action {
        if let Some(rule) = self
            .rules
            .iter()
            .find(|r| r.matches(site, code, enhanced, text))
        {
            return rule.action.clone();
        }
        if !(400..500).contains(&code) {
            return Action::Ignore;
        }
        let lower = text.to_ascii_lowercase();
        if let Some(b) = BUILT_IN
            .iter()
            .find(|b| b.code == code && lower.contains(b.phrase))
        {
            return Action::Throttle(b.kind);
        }
        generic(code, enhanced, text).map_or(Action::Ignore, Action::Throttle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(c: u8, s: u16, d: u16) -> Option<EnhancedStatus> {
        Some(EnhancedStatus::new(c, s, d))
    }

    #[test]
    fn provider_texts_are_throttling() {
        let c = Classifier::default();
        let rate = Action::Throttle(ThrottleKind::Rate);
        let conns = Action::Throttle(ThrottleKind::Connections);
        let cases = [
            (454, None, "Throttling failure: Maximum sending rate exceeded.", &rate),
            (421, e(4, 7, 0), "Try again later, closing connection.", &rate),
            (
                450,
                e(4, 2, 1),
                "The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered.",
                &rate,
            ),
            (
                421,
                e(4, 7, 0),
                "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints",
                &rate,
            ),
            (451, e(4, 7, 500), "Server busy. Please try again later", &rate),
            (421, e(4, 7, 0), "Error: too many connections from 192.0.2.1", &conns),
            (452, None, "Rate limit exceeded", &rate),
            (451, e(4, 7, 1), "later", &rate),
        ];
        for (code, enh, text, want) in cases {
            assert_eq!(
                &c.classify("mx.test", code, enh, text),
                want,
                "{code} {text}"
            );
        }
    }

    #[test]
    fn ordinary_deferrals_are_not() {
        let c = Classifier::default();
        for (code, enh, text) in [
            (451, e(4, 3, 0), "Temporary failure, try again later"),
            (450, e(4, 2, 0), "Mailbox busy, try again later"),
            (452, e(4, 5, 3), "Too many recipients"),
            (550, e(5, 7, 1), "rate limit"),
            (250, None, "slow down"),
            (451, None, "local error in processing"),
        ] {
            assert_eq!(
                c.classify("mx.test", code, enh, text),
                Action::Ignore,
                "{text}"
            );
        }
    }

    #[test]
    fn operator_rules_come_first_and_match_site_or_provider() {
        let rule = |site, action| Rule {
            line: 1,
            reply: Some(Regex::new("(?i)daily quota").unwrap()),
            enhanced: Some(vec![4, 7]),
            code: None,
            site,
            action,
        };
        let suspend = Action::Suspend(Duration::from_secs(600));
        let c = Classifier::new(vec![
            rule(SiteMatch::Provider(Provider::Gmail), suspend.clone()),
            rule(SiteMatch::Site("relay:x:25".into()), Action::Bog),
        ]);
        let gmail = "alt1.gmail-smtp-in.l.google.com,gmail-smtp-in.l.google.com";
        assert_eq!(
            c.classify(gmail, 421, e(4, 7, 0), "Daily quota hit"),
            suspend
        );
        assert_eq!(
            c.classify("relay:x:25", 550, e(4, 7, 2), "daily quota"),
            Action::Bog
        );
        // Enhanced code must match; the built-ins still apply elsewhere.
        assert_eq!(
            c.classify(
                "relay:x:25",
                421,
                e(4, 3, 0),
                "daily quota, try again later"
            ),
            Action::Throttle(ThrottleKind::Rate)
        );
        assert_eq!(
            c.classify("other", 421, e(4, 7, 0), "daily quota").clone(),
            { Action::Throttle(ThrottleKind::Rate) }
        );
    }
}
