//! Traffic shaping: how hard the farm may push each receiving site, read from the shaping file
//! the coordinator sends to every smurf (with this smurf's share of the limits).
//!
//! ```toml
//! [default]                          # every site; built-in values shown
//! max_connections = 4                # simultaneous sessions per site, farm-wide
//! max_messages_per_connection = 1000 # built-in: the smurf's own setting (default 1000)
//! message_rate = "100/s"             # per site, farm-wide; "unlimited" lifts the limit
//! connection_rate = "10/s"           # new sessions per site, farm-wide; or "unlimited"
//! ramp_up = "10s"                    # a fresh site starts at 10 % of message_rate and
//!                                    # reaches it after this long ("0s": no ramp)
//! tls = "opportunistic"              # optional; see "TLS" below
//!
//! [domain."gmail.test"]              # per recipient domain, applied to the domain's site
//! message_rate = "50/s"
//! tls = "required"
//!
//! [site."mx1.slow.test,mx2.slow.test"]   # per site (SiteKey: sorted MX host names, ',')
//! max_connections = 1
//!
//! [site."relay:smtp.example.net:587"]    # a relay site (relay mode)
//! message_rate = "200/s"
//!
//! [bog]                              # the slow lane for failing sites; built-in values shown
//! after_failures = 10                # consecutive failed attempts that send a site there
//! failure_ratio = 0.8                # ... or this share of failures among its last 20
//!                                    #     attempts
//! rate = "12/m"                      # attempts per smurf while bogged (one connection)
//! max_queued = 8                     # messages kept waiting per bogged site; more are
//!                                    # deferred at once, without an attempt
//! ```
//!
//! A failed attempt, for the bog, is one where the site did not work: no session could be
//! opened (refused, timed out, greeting refused), the session broke (dropped mid-DATA, timed
//! out), or the site asked us to slow down (421, 4.7.x…). A 4xx to one recipient in a working
//! session is not: the site answered, and the coordinator retries that recipient.
//!
//! Precedence, per limit: `[site."…"]` beats `[domain."…"]` beats `[default]` beats the built-in
//! values above. When several domains of one site have a section, the most restrictive value of
//! each limit wins (smallest number or rate, longest ramp, strictest TLS). Relay sites
//! (`relay:host:port`) ignore `[default]` and `[domain]`: they get the campaign's
//! `connections` per smurf, no rate limit and no ramp, unless a `[site."relay:host:port"]`
//! section says otherwise.
//!
//! Shares: every limit is farm-wide. A smurf applies `share` (1 / number of smurfs) of it:
//! rates via [`Rate::scaled`], `max_connections` rounded down but never below 1. With more
//! smurfs than connections the farm-wide cap is therefore exceeded by that rounding (say
//! `max_connections = 2` over 3 smurfs: each smurf opens 1, 3 in all). The campaign's relay
//! `connections` are per smurf already and are not scaled; `[bog] rate` is per smurf.
//!
//! TLS: `tls` is `"required"`, `"opportunistic"` or `"disabled"` and overrides the smurf's own
//! `[tls] policy` for the site. The sessions of a site carry mail for all its domains, so the
//! strictest policy among the site's domains applies to the whole site.
//!
//! Reply rules (`[[rule]]`: suspend, cap or bog a site on a matching reply, or say what is and
//! is not a throttling reply) are described in [`super::shaping_rules`].
//!
//! Parsing reports every problem at once, each with its key path and line; unknown keys are
//! errors.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use mailfarm_protocol::{Rate, ShapingUpdate};
use mailfarm_templates::address::is_dns_name;

use super::route::SiteKey;
use super::throttle::Classifier;
use super::tls::TlsPolicy;

/// Built-in `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4;
/// Built-in `message_rate`.
pub const DEFAULT_MESSAGE_RATE: Rate = Rate {
    count: 100,
    per: Duration::from_secs(1),
};
/// Built-in `connection_rate`.
pub const DEFAULT_CONNECTION_RATE: Rate = Rate {
    count: 10,
    per: Duration::from_secs(1),
};
/// Built-in `ramp_up`.
pub const DEFAULT_RAMP_UP: Duration = Duration::from_secs(10);
/// Largest accepted `max_connections` / `max_messages_per_connection` / `max_queued`.
const MAX_COUNT: i64 = 1_000_000;

/// A problem in the shaping file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapingError {
    /// Where: a TOML key path such as `domain."gmail.test".message_rate` (empty for syntax
    /// errors).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// The 1-based line it is on, when known.
    pub line: Option<usize>,
}

impl fmt::Display for ShapingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A rate that may be lifted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limit {
    Unlimited,
    Rate(Rate),
}

impl Limit {
    fn per_second(self) -> f64 {
        match self {
            Limit::Unlimited => f64::INFINITY,
            Limit::Rate(r) => r.per_second(),
        }
    }

    fn rate(self) -> Option<Rate> {
        match self {
            Limit::Unlimited => None,
            Limit::Rate(r) => Some(r),
        }
    }
}

/// The keys of one `[default]`, `[domain."…"]` or `[site."…"]` section.
#[derive(Clone, Debug, Default, PartialEq)]
struct Section {
    max_connections: Option<u32>,
    max_messages_per_connection: Option<u32>,
    message_rate: Option<Limit>,
    connection_rate: Option<Limit>,
    ramp_up: Option<Duration>,
    tls: Option<TlsPolicy>,
}

fn strictness(policy: TlsPolicy) -> u8 {
    match policy {
        TlsPolicy::Disabled => 0,
        TlsPolicy::Opportunistic => 1,
        TlsPolicy::Required => 2,
    }
}

fn min_by<T: Copy>(a: Option<T>, b: Option<T>, less: impl Fn(T, T) -> bool) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if less(y, x) { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Section {
    /// `other`'s values where it has one.
    fn overlay(&mut self, other: &Section) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        take!(
            max_connections,
            max_messages_per_connection,
            message_rate,
            connection_rate,
            ramp_up,
            tls
        );
    }

    /// The most restrictive of both, key by key.
    fn strictest(&self, other: &Section) -> Section {
        let rate_less = |a: Limit, b: Limit| a.per_second() < b.per_second();
        Section {
            max_connections: min_by(self.max_connections, other.max_connections, |a, b| a < b),
            max_messages_per_connection: min_by(
                self.max_messages_per_connection,
                other.max_messages_per_connection,
                |a, b| a < b,
            ),
            message_rate: min_by(self.message_rate, other.message_rate, rate_less),
            connection_rate: min_by(self.connection_rate, other.connection_rate, rate_less),
            ramp_up: min_by(self.ramp_up, other.ramp_up, |a, b| a > b),
            tls: min_by(self.tls, other.tls, |a, b| strictness(a) > strictness(b)),
        }
    }
}

/// The slow lane's settings (`[bog]`).
#[derive(Clone, Debug, PartialEq)]
pub struct BogSettings {
    /// Consecutive failed attempts (see the module docs) that send a site to the bog
    /// (default 10).
    pub after_failures: u32,
    /// Share of failed attempts among a site's last [`BOG_WINDOW`] that sends it there, once
    /// it has made that many (default 0.8).
    pub failure_ratio: f64,
    /// Attempts (and connections) per second while bogged, per smurf (default 12/m).
    pub rate: Rate,
    /// Messages kept waiting per bogged site; more are deferred without an attempt
    /// (default 8), so that a dead site never holds much of the smurf's window.
    pub max_queued: u32,
}

/// Attempts remembered for [`BogSettings::failure_ratio`].
pub const BOG_WINDOW: usize = 20;

impl Default for BogSettings {
    fn default() -> Self {
        Self {
            after_failures: 10,
            failure_ratio: 0.8,
            rate: Rate {
                count: 12,
                per: Duration::from_secs(60),
            },
            max_queued: 8,
        }
    }
}

/// The limits of one site on this smurf.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteLimits {
    /// Most simultaneous sessions (at least 1).
    pub max_connections: u32,
    /// Messages per session before it is closed; `None`: the smurf's own setting.
    pub max_messages_per_connection: Option<u32>,
    /// Most messages per period; `None`: unlimited.
    pub message_rate: Option<Rate>,
    /// Most new sessions per period; `None`: unlimited.
    pub connection_rate: Option<Rate>,
    /// How long a fresh site takes to reach `message_rate` (zero: at once).
    pub ramp_up: Duration,
    /// TLS policy for the site; `None`: the smurf's own.
    pub tls: Option<TlsPolicy>,
}

/// A parsed shaping file and this smurf's share of its limits.
#[derive(Clone, Debug, PartialEq)]
pub struct Shaping {
    share: f64,
    default: Section,
    domains: HashMap<String, Section>,
    sites: HashMap<SiteKey, Section>,
    bog: BogSettings,
    classifier: Classifier,
}

impl Default for Shaping {
    /// The built-in values, share 1.
    fn default() -> Self {
        Self {
            share: 1.0,
            default: Section::default(),
            domains: HashMap::new(),
            sites: HashMap::new(),
            bog: BogSettings::default(),
            classifier: Classifier::default(),
        }
    }
}

impl Shaping {
    /// Parses a shaping file (share 1: [`Shaping::limits_for`] then gives farm-wide limits).
    /// An empty text gives the built-in values.
    pub fn parse(text: &str) -> Result<Shaping, Vec<ShapingError>> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            vec![ShapingError {
                path: String::new(),
                message: e.message().trim().to_owned(),
                line,
            }]
        })?;
        let mut errors = Vec::new();
        let mut shaping = Shaping::default();
        for (key, value) in &table {
            match key.as_str() {
                "default" => {
                    shaping.default = section(value, &quote(key), &mut errors);
                }
                "domain" | "site" => {
                    let Some(entries) = value.as_table() else {
                        errors.push(error(key, "must be a table of sections"));
                        continue;
                    };
                    for (name, value) in entries {
                        let path = format!("{key}.{}", quote(name));
                        let parsed = section(value, &path, &mut errors);
                        if key == "domain" {
                            let domain = name.trim_end_matches('.').to_ascii_lowercase();
                            if !is_domain(&domain) {
                                errors.push(error(&path, "is not a domain name"));
                            } else if shaping.domains.insert(domain, parsed).is_some() {
                                errors.push(error(&path, "duplicates another domain section"));
                            }
                        } else {
                            match site_key(name) {
                                Some(site) => {
                                    if shaping.sites.insert(site, parsed).is_some() {
                                        errors
                                            .push(error(&path, "duplicates another site section"));
                                    }
                                }
                                None => errors.push(error(
                                    &path,
                                    "is not a site: write MX host names joined by ',' or \
                                     relay:host:port",
                                )),
                            }
                        }
                    }
                }
                "bog" => shaping.bog = bog(value, &mut errors),
                "rule" => {
                    let rules = super::shaping_rules::rules(text, value, &mut errors);
                    shaping.classifier = Classifier::new(rules);
                }
                _ => errors.push(error(
                    &quote(key),
                    "unknown section (expected default, domain, site, bog or rule)",
                )),
            }
        }
        for e in &mut errors {
            if e.line.is_none() {
                e.line = super::shaping_rules::line_of(text, &e.path);
            }
        }
        errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        if errors.is_empty() {
            Ok(shaping)
        } else {
            Err(errors)
        }
    }

    /// Parses the update's file and applies its share.
    pub fn from_update(update: &ShapingUpdate) -> Result<Shaping, Vec<ShapingError>> {
        Ok(Shaping::parse(&update.toml)?.with_share(update.share()))
    }

    /// The same rules with another share, clamped to (0, 1].
    pub fn with_share(mut self, share: f64) -> Shaping {
        self.share = if share.is_finite() && share > 0.0 {
            share.min(1.0)
        } else {
            1.0
        };
        self
    }

    /// This smurf's share of every limit.
    pub fn share(&self) -> f64 {
        self.share
    }

    /// The domains that have a `[domain."…"]` section (lower case, no trailing dot).
    pub fn domain_names(&self) -> impl Iterator<Item = &str> {
        self.domains.keys().map(String::as_str)
    }

    /// Whether `domain` (lower case, no trailing dot) has a `[domain."…"]` section.
    pub fn has_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
    }

    /// How replies are classified: the `[[rule]]`s, then the built-in throttling rules.
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// The bog settings.
    pub fn bog(&self) -> &BogSettings {
        &self.bog
    }

    /// This smurf's limits for an MX site that carries mail for `domains` (lower case, no
    /// trailing dot): built-ins, then `[default]`, then the domains' sections (the strictest
    /// value of each), then the site's section, scaled by the share.
    pub fn limits_for(&self, site: &SiteKey, domains: &[&str]) -> SiteLimits {
        let mut merged = Section {
            max_connections: Some(DEFAULT_MAX_CONNECTIONS),
            max_messages_per_connection: None,
            message_rate: Some(Limit::Rate(DEFAULT_MESSAGE_RATE)),
            connection_rate: Some(Limit::Rate(DEFAULT_CONNECTION_RATE)),
            ramp_up: Some(DEFAULT_RAMP_UP),
            tls: None,
        };
        merged.overlay(&self.default);
        let mut by_domain: Option<Section> = None;
        for domain in domains {
            if let Some(section) = self.domains.get(*domain) {
                by_domain = Some(match by_domain {
                    None => section.clone(),
                    Some(s) => s.strictest(section),
                });
            }
        }
        if let Some(section) = &by_domain {
            merged.overlay(section);
        }
        if let Some(section) = self.sites.get(site) {
            merged.overlay(section);
        }
        self.finish(&merged)
    }

    /// This smurf's limits for a relay site: the campaign's `connections` (per smurf, not
    /// scaled), unlimited rates and no ramp, unless the site's own section (farm-wide, scaled)
    /// says otherwise.
    pub fn relay_limits(&self, site: &SiteKey, connections_per_smurf: u32) -> SiteLimits {
        let base = Section {
            max_connections: None,
            max_messages_per_connection: None,
            message_rate: Some(Limit::Unlimited),
            connection_rate: Some(Limit::Unlimited),
            ramp_up: Some(Duration::ZERO),
            tls: None,
        };
        let mut merged = base;
        if let Some(section) = self.sites.get(site) {
            merged.overlay(section);
        }
        let mut limits = self.finish(&merged);
        if merged.max_connections.is_none() {
            limits.max_connections = connections_per_smurf.max(1);
        }
        limits
    }

    /// Applies the share to merged values.
    fn finish(&self, merged: &Section) -> SiteLimits {
        let share = self.share;
        let scale = |limit: Option<Limit>| limit.and_then(Limit::rate).map(|r| r.scaled(share));
        let connections = merged.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        SiteLimits {
            max_connections: ((f64::from(connections) * share).floor() as u32).max(1),
            max_messages_per_connection: merged.max_messages_per_connection,
            message_rate: scale(merged.message_rate),
            connection_rate: scale(merged.connection_rate),
            ramp_up: merged.ramp_up.unwrap_or(DEFAULT_RAMP_UP),
            tls: merged.tls,
        }
    }
}

/// The site a `[site."…"]` name stands for.
fn site_key(name: &str) -> Option<SiteKey> {
    if let Some(relay) = name.strip_prefix("relay:") {
        let (host, port) = relay.rsplit_once(':')?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return None;
        }
        return Some(SiteKey(
            format!("relay:{}", relay.to_ascii_lowercase()).into(),
        ));
    }
    let hosts: Vec<&str> = name.split(',').map(str::trim).collect();
    if hosts
        .iter()
        .any(|h| !is_domain(&h.trim_end_matches('.').to_ascii_lowercase()))
    {
        return None;
    }
    Some(SiteKey::from_hosts(hosts))
}

/// A DNS name of at most 253 octets.
fn is_domain(name: &str) -> bool {
    name.len() <= 253 && is_dns_name(name)
}

/// A key as written in a TOML path: bare when possible, quoted otherwise.
fn quote(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

fn error(path: &str, message: impl Into<String>) -> ShapingError {
    ShapingError {
        path: path.to_owned(),
        message: message.into(),
        line: None,
    }
}

/// A duration written `"10s"`, `"500ms"`, `"2m"`, `"1h 30m"`, `"1.5m"` (or `"0"`). The one
/// duration parser of the smurf's configuration and shaping file: humantime's syntax, plus a
/// decimal number with one unit (ms, s, m, h) as earlier versions accepted.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if let Ok(d) = humantime::parse_duration(text) {
        return Some(d);
    }
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// A TLS policy written `"required"`, `"opportunistic"` or `"disabled"`.
pub fn parse_tls_policy(text: &str) -> Option<TlsPolicy> {
    match text {
        "required" => Some(TlsPolicy::Required),
        "opportunistic" => Some(TlsPolicy::Opportunistic),
        "disabled" => Some(TlsPolicy::Disabled),
        _ => None,
    }
}

fn count(value: &toml::Value, path: &str, errors: &mut Vec<ShapingError>) -> Option<u32> {
    match value.as_integer() {
        Some(n) if (1..=MAX_COUNT).contains(&n) => u32::try_from(n).ok(),
        _ => {
            errors.push(error(
                path,
                format!("must be a whole number from 1 to {MAX_COUNT}"),
            ));
            None
        }
    }
}

fn limit(value: &toml::Value, path: &str, errors: &mut Vec<ShapingError>) -> Option<Limit> {
    let Some(text) = value.as_str() else {
        errors.push(error(
            path,
            "must be a string such as \"100/s\" or \"unlimited\"",
        ));
        return None;
    };
    if text.trim() == "unlimited" {
        return Some(Limit::Unlimited);
    }
    match text.parse::<Rate>() {
        Ok(rate) => Some(Limit::Rate(rate)),
        Err(e) => {
            errors.push(error(path, e.to_string()));
            None
        }
    }
}

fn section(value: &toml::Value, path: &str, errors: &mut Vec<ShapingError>) -> Section {
    let mut out = Section::default();
    let Some(table) = value.as_table() else {
        errors.push(error(path, "must be a table"));
        return out;
    };
    for (key, value) in table {
        let path = format!("{path}.{}", quote(key));
        match key.as_str() {
            "max_connections" => out.max_connections = count(value, &path, errors),
            "max_messages_per_connection" => {
                out.max_messages_per_connection = count(value, &path, errors);
            }
            "message_rate" => out.message_rate = limit(value, &path, errors),
            "connection_rate" => out.connection_rate = limit(value, &path, errors),
            "ramp_up" => match value.as_str().and_then(parse_duration) {
                Some(d) => out.ramp_up = Some(d),
                None => errors.push(error(&path, "must be a duration such as \"10s\" or \"0s\"")),
            },
            "tls" => match value.as_str().and_then(parse_tls_policy) {
                Some(p) => out.tls = Some(p),
                None => errors.push(error(
                    &path,
                    "must be \"required\", \"opportunistic\" or \"disabled\"",
                )),
            },
            _ => errors.push(error(
                &path,
                "unknown key (expected max_connections, max_messages_per_connection, \
                 message_rate, connection_rate, ramp_up or tls)",
            )),
        }
    }
    out
}

fn bog(value: &toml::Value, errors: &mut Vec<ShapingError>) -> BogSettings {
    let mut out = BogSettings::default();
    let Some(table) = value.as_table() else {
        errors.push(error("bog", "must be a table"));
        return out;
    };
    for (key, value) in table {
        let path = format!("bog.{}", quote(key));
        match key.as_str() {
            "after_failures" => {
                if let Some(n) = count(value, &path, errors) {
                    out.after_failures = n;
                }
            }
            "max_queued" => {
                if let Some(n) = count(value, &path, errors) {
                    out.max_queued = n;
                }
            }
            "failure_ratio" => match value.as_float() {
                Some(r) if r > 0.0 && r <= 1.0 => out.failure_ratio = r,
                _ => errors.push(error(&path, "must be a number above 0 and at most 1.0")),
            },
            "rate" => match limit(value, &path, errors) {
                Some(Limit::Rate(r)) => out.rate = r,
                Some(Limit::Unlimited) => errors.push(error(&path, "cannot be unlimited")),
                None => {}
            },
            _ => errors.push(error(
                &path,
                "unknown key (expected after_failures, failure_ratio, rate or max_queued)",
            )),
        }
    }
    out
}

#[cfg(test)]
#[path = "shaping_tests.rs"]
mod tests;
