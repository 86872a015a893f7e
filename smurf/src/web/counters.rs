//! The web node's counters: what the one-click endpoint did and which bad tokens it refused,
//! by kind. They feed `/metrics` (Prometheus text) and the dashboard, so an operator sees a
//! forging attempt (a burst of `forged`) apart from mail clients cutting links (`truncated`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use mailfarm_templates::UnsubscribeError;

/// Kinds of bad tokens, in the order of [`WebCounters::bad_tokens`].
pub const BAD_TOKEN_KINDS: [&str; 6] = [
    "malformed",
    "truncated",
    "tampered",
    "forged",
    "unknown",
    "wrong_domain",
];

/// Live counters of a web node; shared by the handlers (atomics, no lock).
#[derive(Debug, Default)]
pub struct WebCounters {
    /// Unsubscribes written to the journal.
    pub unsubscribes: AtomicU64,
    /// One-click POSTs for recipients already unsubscribed (answered 200, nothing written).
    pub repeated: AtomicU64,
    /// Undos written to the journal.
    pub resubscribes: AtomicU64,
    /// Undos refused because the undo window had passed.
    pub undo_expired: AtomicU64,
    /// Unsubscribe pages shown (GET; they change nothing).
    pub pages_shown: AtomicU64,
    /// Bad tokens by kind, in the order of [`BAD_TOKEN_KINDS`].
    pub bad_tokens: [AtomicU64; 6],
    /// POSTs refused because the journal could not be written (answered 503).
    pub journal_errors: AtomicU64,
    /// Dashboard logins accepted.
    pub logins: AtomicU64,
    /// Dashboard logins refused.
    pub login_failures: AtomicU64,
}

/// A copy of the counters, for the dashboard feed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WebCountersSnapshot {
    /// See [`WebCounters::unsubscribes`].
    pub unsubscribes: u64,
    /// See [`WebCounters::repeated`].
    pub repeated: u64,
    /// See [`WebCounters::resubscribes`].
    pub resubscribes: u64,
    /// See [`WebCounters::undo_expired`].
    pub undo_expired: u64,
    /// See [`WebCounters::pages_shown`].
    pub pages_shown: u64,
    /// Bad tokens by kind name.
    pub bad_tokens: Vec<(String, u64)>,
    /// See [`WebCounters::journal_errors`].
    pub journal_errors: u64,
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl WebCounters {
    /// Adds one.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one bad token.
    pub fn bad_token(&self, error: &UnsubscribeError) {
        let kind = error.kind();
        if let Some(i) = BAD_TOKEN_KINDS.iter().position(|k| *k == kind) {
            Self::bump(&self.bad_tokens[i]);
        }
    }

    /// Bad tokens of one kind.
    pub fn bad_tokens_of(&self, kind: &str) -> u64 {
        BAD_TOKEN_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| get(&self.bad_tokens[i]))
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> WebCountersSnapshot {
        WebCountersSnapshot {
            unsubscribes: get(&self.unsubscribes),
            repeated: get(&self.repeated),
            resubscribes: get(&self.resubscribes),
            undo_expired: get(&self.undo_expired),
            pages_shown: get(&self.pages_shown),
            bad_tokens: BAD_TOKEN_KINDS
                .iter()
                .zip(&self.bad_tokens)
                .map(|(k, v)| ((*k).to_owned(), get(v)))
                .collect(),
            journal_errors: get(&self.journal_errors),
        }
    }

    /// Appends the counters in the Prometheus text format (for `/metrics`).
    pub fn render_prometheus(&self, out: &mut String) {
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "mailfarm_web_unsubscribes_total",
            "Unsubscribes written to the journal.",
            get(&self.unsubscribes),
        );
        counter(
            "mailfarm_web_unsubscribes_repeated_total",
            "One-click POSTs for recipients already unsubscribed.",
            get(&self.repeated),
        );
        counter(
            "mailfarm_web_resubscribes_total",
            "Undos of an unsubscribe written to the journal.",
            get(&self.resubscribes),
        );
        counter(
            "mailfarm_web_undo_expired_total",
            "Undos refused after the undo window.",
            get(&self.undo_expired),
        );
        counter(
            "mailfarm_web_unsubscribe_pages_total",
            "Unsubscribe pages shown (GET, changes nothing).",
            get(&self.pages_shown),
        );
        counter(
            "mailfarm_web_journal_errors_total",
            "POSTs answered 503 because the journal could not be written.",
            get(&self.journal_errors),
        );
        counter(
            "mailfarm_web_dashboard_logins_total",
            "Dashboard logins accepted.",
            get(&self.logins),
        );
        counter(
            "mailfarm_web_dashboard_login_failures_total",
            "Dashboard logins refused.",
            get(&self.login_failures),
        );
        let _ = writeln!(
            out,
            "# HELP mailfarm_web_bad_tokens_total Unsubscribe tokens refused, by kind.\n\
             # TYPE mailfarm_web_bad_tokens_total counter"
        );
        for (kind, value) in BAD_TOKEN_KINDS.iter().zip(&self.bad_tokens) {
            let _ = writeln!(
                out,
                "mailfarm_web_bad_tokens_total{{kind=\"{kind}\"}} {}",
                get(value)
            );
        }
    }
}
