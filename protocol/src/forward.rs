//! Forwarding on the `in` role: the rule set the coordinator owns and pushes to every node, the
//! farm-wide claim of a change-of-address notice, and the accounting of a forwarded message.
//!
//! The rule set is versioned. A link starts with a full snapshot (possibly in several chunks of
//! the same version), then carries deltas, each naming the version it applies to, so a node
//! holding a million rules receives O(changes) per change. [`ForwardTable`] applies updates and
//! refuses one that does not follow what it holds: a gap is a protocol error, the link is
//! dropped and the next one starts again from a snapshot. The types live here so that the rules
//! are tested without sockets.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One forwarding rule: mail for `old` goes to `new`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ForwardRule {
    /// The moved address (lower case).
    pub old: String,
    /// Where its mail goes now.
    pub new: String,
}

/// Settings every `in` node needs to forward: sent with each full snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardSettings {
    /// Domain of the SRS return paths (`SRS0=...@domain`); its MX must be the `in` nodes.
    /// Empty disables SRS rewriting: forwarded mail keeps its original envelope sender.
    pub srs_domain: String,
    /// From address of the change-of-address notices (`postmaster@` of the SRS domain when
    /// the coordinator's config names none).
    pub notice_from: String,
}

/// A change to the rule set, or (with `base` = `None`) a full snapshot or one chunk of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardUpdate {
    /// `None`: a snapshot starts (the table is emptied first); `Some(v)`: applies to a table at
    /// version `v` (a later chunk of a snapshot has `Some(version)` and the same `version`).
    pub base: Option<u64>,
    /// The version of the rule set once this update is applied.
    pub version: u64,
    /// Rules added or changed.
    pub set: Vec<ForwardRule>,
    /// Old addresses whose rule is removed.
    pub removed: Vec<String>,
    /// Settings, with a snapshot's first chunk.
    pub settings: Option<ForwardSettings>,
}

/// Why a [`ForwardUpdate`] cannot be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForwardTableError {
    /// A delta for another version than the one held (a gap or a replay).
    #[error("forward rule delta for version {base}, but the node holds version {held}")]
    Gap {
        /// The version the delta applies to.
        base: u64,
        /// The version the node holds.
        held: u64,
    },
    /// The update would move the version backwards.
    #[error("forward rule update goes back from version {held} to {version}")]
    Backwards {
        /// The version held.
        held: u64,
        /// The update's version.
        version: u64,
    },
    /// A delta arrived before any snapshot.
    #[error("forward rule delta before any snapshot")]
    NoSnapshot,
}

/// The rule set as a node holds it: lookups by old address and by domain, O(1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardTable {
    version: Option<u64>,
    rules: HashMap<String, String>,
    /// Rules per domain of an old address, to tell "unknown user" from "not our domain".
    domains: HashMap<String, u32>,
    settings: ForwardSettings,
}

impl ForwardTable {
    /// An empty table that has seen no snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies an update; on error the table is unchanged.
    pub fn apply(&mut self, update: ForwardUpdate) -> Result<(), ForwardTableError> {
        match (update.base, self.version) {
            (None, _) => {
                self.rules.clear();
                self.domains.clear();
            }
            (Some(_), None) => return Err(ForwardTableError::NoSnapshot),
            (Some(base), Some(held)) if base != held => {
                return Err(ForwardTableError::Gap { base, held })
            }
            (Some(_), Some(held)) if update.version < held => {
                return Err(ForwardTableError::Backwards {
                    held,
                    version: update.version,
                })
            }
            (Some(_), Some(_)) => {}
        }
        for old in update.removed {
            self.remove(&old.to_ascii_lowercase());
        }
        for rule in update.set {
            let old = rule.old.to_ascii_lowercase();
            self.remove(&old);
            *self.domains.entry(domain(&old).to_owned()).or_insert(0) += 1;
            self.rules.insert(old, rule.new);
        }
        if let Some(settings) = update.settings {
            self.settings = settings;
        }
        self.version = Some(update.version);
        Ok(())
    }

    fn remove(&mut self, old: &str) {
        if self.rules.remove(old).is_some() {
            let d = domain(old);
            if let Some(n) = self.domains.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    self.domains.remove(d);
                }
            }
        }
    }

    /// The new address of `old` (compared without regard to case), if it is forwarded.
    pub fn lookup(&self, old: &str) -> Option<&str> {
        if old.bytes().any(|b| b.is_ascii_uppercase()) {
            return self
                .rules
                .get(&old.to_ascii_lowercase())
                .map(String::as_str);
        }
        self.rules.get(old).map(String::as_str)
    }

    /// Whether some forwarded address is in `domain` (lower case).
    pub fn has_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
    }

    /// The version held (`None` before the first snapshot).
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The settings of the last snapshot.
    pub fn settings(&self) -> &ForwardSettings {
        &self.settings
    }
}

fn domain(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

/// Splits a full rule set into snapshot chunks of at most `chunk` rules: the first starts the
/// snapshot (`base: None`), the others continue it at the same version.
pub fn snapshot(
    version: u64,
    rules: Vec<ForwardRule>,
    settings: ForwardSettings,
    chunk: usize,
) -> Vec<ForwardUpdate> {
    let chunk = chunk.max(1);
    let mut out = Vec::with_capacity(rules.len() / chunk + 1);
    let mut rules = rules.into_iter().peekable();
    let mut first = true;
    while first || rules.peek().is_some() {
        let set: Vec<ForwardRule> = rules.by_ref().take(chunk).collect();
        out.push(ForwardUpdate {
            base: if first { None } else { Some(version) },
            version,
            set,
            removed: Vec::new(),
            settings: first.then(|| settings.clone()),
        });
        first = false;
    }
    out
}

/// A request to send one change-of-address notice: the coordinator grants each
/// (sender, recipient, day) key once, farm-wide.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeClaim {
    /// The node's name for this claim; claiming again with the same id (after a restart or a
    /// lost link) gets the same answer, so a granted notice is not lost nor sent twice.
    pub id: String,
    /// The original envelope sender, lower case (never empty: no notice goes to `<>`).
    pub sender: String,
    /// The old (forwarded) address, lower case.
    pub recipient: String,
    /// UTC day number (days since the Unix epoch).
    pub day: u32,
}

/// The coordinator's answer to a [`NoticeClaim`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoticeDecision {
    /// Send it: the key is committed to this claim.
    Granted,
    /// Another claim (on this or another node) already has the key today.
    AlreadySent,
    /// The sender is on the coordinator's no-notice list.
    NoNoticeList,
}

impl NoticeDecision {
    /// The counter name of a suppressed notice (`None` for a granted one).
    pub fn suppressed_reason(&self) -> Option<&'static str> {
        match self {
            NoticeDecision::Granted => None,
            NoticeDecision::AlreadySent => Some("already-sent"),
            NoticeDecision::NoNoticeList => Some("no-notice-list"),
        }
    }
}

/// The answer to one claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoticeGrant {
    /// The claim's id.
    pub id: String,
    /// What to do.
    pub decision: NoticeDecision,
}

/// One forwarded message's fate, for the coordinator's accounting log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardRecord {
    /// When it finished, ms since the Unix epoch.
    pub time_ms: u64,
    /// The original envelope sender (empty for the null sender).
    pub mail_from: String,
    /// The envelope sender used for the relay (the SRS address, or empty).
    pub relay_from: String,
    /// The old address.
    pub old: String,
    /// The new address.
    pub new: String,
    /// `delivered` or `failed`.
    pub outcome: String,
    /// The destination's reply.
    pub reply: String,
    /// The notice decision: `claimed`, or the reason none goes (`null-sender`, `auto-submitted`,
    /// `precedence`, `list-id`, ...; the coordinator's answer follows in the notice's own line).
    pub notice: String,
    /// The stored file the message came from.
    pub stored_as: String,
}

/// Days since the Unix epoch of a time in ms (UTC).
pub fn utc_day(time_ms: u64) -> u32 {
    u32::try_from(time_ms / 86_400_000).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(old: &str, new: &str) -> ForwardRule {
        ForwardRule {
            old: old.into(),
            new: new.into(),
        }
    }

    #[test]
    fn snapshot_then_deltas() {
        let mut t = ForwardTable::new();
        let delta = ForwardUpdate {
            base: Some(0),
            version: 1,
            ..Default::default()
        };
        assert_eq!(t.apply(delta.clone()), Err(ForwardTableError::NoSnapshot));
        let rules = (0..25)
            .map(|i| rule(&format!("u{i}@old.test"), &format!("u{i}@new.test")))
            .collect();
        for chunk in snapshot(7, rules, ForwardSettings::default(), 10) {
            t.apply(chunk).expect("snapshot chunk");
        }
        assert_eq!(t.len(), 25);
        assert_eq!(t.version(), Some(7));
        assert_eq!(t.lookup("U3@OLD.test"), Some("u3@new.test"));
        assert!(t.has_domain("old.test"));
        // A delta for another version is refused and changes nothing.
        let gap = ForwardUpdate {
            base: Some(6),
            version: 8,
            removed: vec!["u1@old.test".into()],
            ..Default::default()
        };
        let before = t.clone();
        assert_eq!(
            t.apply(gap),
            Err(ForwardTableError::Gap { base: 6, held: 7 })
        );
        assert_eq!(t, before);
        // A removal takes effect at once; the domain goes with its last rule.
        let remove_all = ForwardUpdate {
            base: Some(7),
            version: 8,
            removed: (0..25).map(|i| format!("u{i}@old.test")).collect(),
            set: vec![rule("x@other.test", "x@new.test")],
            settings: None,
        };
        t.apply(remove_all).expect("delta");
        assert_eq!(t.lookup("u3@old.test"), None);
        assert!(!t.has_domain("old.test"));
        assert!(t.has_domain("other.test"));
        // Changing a rule keeps one entry per address.
        let change = ForwardUpdate {
            base: Some(8),
            version: 9,
            set: vec![rule("x@other.test", "x@newer.test")],
            ..Default::default()
        };
        t.apply(change).expect("delta");
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup("x@other.test"), Some("x@newer.test"));
        // A new snapshot replaces everything.
        for chunk in snapshot(3, vec![], ForwardSettings::default(), 10) {
            t.apply(chunk).expect("empty snapshot");
        }
        assert!(t.is_empty());
        assert!(!t.has_domain("other.test"));
    }

    #[test]
    fn backwards_delta_is_refused() {
        let mut t = ForwardTable::new();
        for chunk in snapshot(5, vec![], ForwardSettings::default(), 10) {
            t.apply(chunk).expect("snapshot");
        }
        let back = ForwardUpdate {
            base: Some(5),
            version: 4,
            ..Default::default()
        };
        assert_eq!(
            t.apply(back),
            Err(ForwardTableError::Backwards {
                held: 5,
                version: 4
            })
        );
    }

    #[test]
    fn days_are_utc() {
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(86_399_999), 0);
        assert_eq!(utc_day(86_400_000), 1);
    }
}
