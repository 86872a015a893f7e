//! Forwarding on the coordinator: the operator's rule changes (checked whole, stored, then
//! pushed to every node as a versioned delta), the snapshot a new link starts with, and the
//! farm-wide grant of change-of-address notices.
//!
//! Recent deltas are kept in memory so that a link that fell behind by a few changes gets just
//! those; one that fell further behind (or a new link) gets a snapshot in chunks.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use mailfarm_protocol::{
    forward_snapshot, utc_day, ForwardRule, ForwardSettings, ForwardUpdate, NoticeClaim,
    NoticeGrant,
};
use tokio::sync::watch;

use crate::store::{Store, StoreError};

/// Deltas kept for links that fell behind.
const KEPT_DELTAS: usize = 1024;
/// Rules per snapshot chunk (a chunk stays far below the frame limit).
const SNAPSHOT_CHUNK: usize = 20_000;
/// Days of notice keys kept (today and yesterday: a claim may straddle midnight).
const NOTICE_DAYS_KEPT: u32 = 2;

/// The coordinator's forwarding settings (config `[forward]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardConfig {
    /// Domain of the SRS return paths; its MX must be the `in` nodes (empty: no SRS).
    pub srs_domain: String,
    /// From address of the notices (default `postmaster@<srs_domain>`).
    pub notice_from: Option<String>,
    /// Senders that never get a notice: addresses, or `@domain` for a whole domain.
    pub no_notice: Vec<String>,
}

impl ForwardConfig {
    /// The settings the nodes get.
    pub fn settings(&self) -> ForwardSettings {
        ForwardSettings {
            srs_domain: self.srs_domain.to_ascii_lowercase(),
            notice_from: self
                .notice_from
                .clone()
                .unwrap_or_else(|| format!("postmaster@{}", self.srs_domain.to_ascii_lowercase())),
        }
    }
}

/// The rule set's live side (see the module docs).
pub struct Forwarding {
    config: ForwardConfig,
    no_notice: NoNotice,
    deltas: Mutex<VecDeque<ForwardUpdate>>,
    version: watch::Sender<u64>,
}

/// The no-notice list, for O(1) checks.
#[derive(Debug, Default)]
struct NoNotice {
    addresses: std::collections::HashSet<String>,
    domains: std::collections::HashSet<String>,
}

impl NoNotice {
    fn new(entries: &[String]) -> Self {
        let mut list = Self::default();
        for entry in entries {
            let entry = entry.trim().to_ascii_lowercase();
            match entry.strip_prefix('@') {
                Some(domain) => list.domains.insert(domain.to_owned()),
                None => list.addresses.insert(entry),
            };
        }
        list
    }

    fn contains(&self, sender: &str) -> bool {
        let sender = sender.to_ascii_lowercase();
        self.addresses.contains(&sender)
            || sender
                .rsplit_once('@')
                .is_some_and(|(_, d)| self.domains.contains(d))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An old or new address as the rules hold it, or why it cannot be one.
fn checked(address: &str) -> Result<String, String> {
    mailfarm_templates::address::normalize_recipient(address.trim())
        .map(|a| a.to_ascii_lowercase())
        .map_err(|e| format!("{:?}: {e}", address.trim()))
}

impl Forwarding {
    /// The live side of the rule set stored in `store`.
    pub fn open(store: &Store, config: ForwardConfig) -> Result<Self, StoreError> {
        let version = store.forward_version()?;
        Ok(Self {
            no_notice: NoNotice::new(&config.no_notice),
            config,
            deltas: Mutex::new(VecDeque::new()),
            version: watch::Sender::new(version),
        })
    }

    /// Changes when the rule set does (its version).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Checks every rule (line numbers for the report) and stores them all, or none: returns
    /// what was done, or every problem found.
    pub fn set(
        &self,
        store: &Store,
        rules: Vec<(u64, ForwardRule)>,
    ) -> Result<String, Vec<String>> {
        let mut problems = Vec::new();
        let mut seen: HashMap<String, (u64, String)> = HashMap::new();
        let mut clean = Vec::with_capacity(rules.len());
        for (line, rule) in rules {
            let at = if line == 0 {
                String::new()
            } else {
                format!("line {line}: ")
            };
            let (old, new) = match (checked(&rule.old), checked(&rule.new)) {
                (Ok(old), Ok(new)) => (old, new),
                (Err(e), _) => {
                    problems.push(format!("{at}old address {e}"));
                    continue;
                }
                (_, Err(e)) => {
                    problems.push(format!("{at}new address {e}"));
                    continue;
                }
            };
            if old == new {
                problems.push(format!("{at}{old} would forward to itself"));
                continue;
            }
            if let Some((first, target)) = seen.get(&old) {
                if *target != new {
                    problems.push(format!(
                        "{at}{old} is already forwarded to {target} on line {first}"
                    ));
                }
                continue;
            }
            seen.insert(old.clone(), (line, new.clone()));
            clean.push(ForwardRule { old, new });
        }
        // A chain (a -> b, b -> c) would forward twice: refuse it within the set.
        for rule in &clean {
            if let Some((line, _)) = seen.get(&rule.new) {
                problems.push(format!(
                    "line {line}: {} is itself a moved address (forward to its final address)",
                    rule.new
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let count = clean.len();
        match self.change(store, clean, Vec::new()) {
            Ok(Some(version)) => Ok(format!("{count} rule(s) set; rule set version {version}")),
            Ok(None) => Ok(format!("{count} rule(s) already in force; nothing changed")),
            Err(e) => Err(vec![e.to_string()]),
        }
    }

    /// Removes the rule of `old`.
    pub fn remove(&self, store: &Store, old: &str) -> Result<String, String> {
        let old = checked(old).map_err(|e| format!("old address {e}"))?;
        if store
            .forward_rule(&old)
            .map_err(|e| e.to_string())?
            .is_none()
        {
            return Err(format!(
                "{old} is not forwarded (see `mailfarm forward list`)"
            ));
        }
        match self.change(store, Vec::new(), vec![old.clone()]) {
            Ok(Some(version)) => Ok(format!(
                "{old} no longer forwarded; rule set version {version}: the in nodes refuse it now"
            )),
            Ok(None) => Ok(format!("{old} was not forwarded")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Stores a change and publishes it as a delta; `None` when nothing changed.
    fn change(
        &self,
        store: &Store,
        set: Vec<ForwardRule>,
        removed: Vec<String>,
    ) -> Result<Option<u64>, StoreError> {
        let mut deltas = lock(&self.deltas);
        let (version, changed) = store.forward_change(&set, &removed)?;
        if !changed {
            return Ok(None);
        }
        deltas.push_back(ForwardUpdate {
            base: Some(version - 1),
            version,
            set,
            removed,
            settings: None,
        });
        while deltas.len() > KEPT_DELTAS {
            deltas.pop_front();
        }
        drop(deltas);
        self.version.send_replace(version);
        Ok(Some(version))
    }

    /// What a link that told the node `told` (`None`: nothing yet) must send now: nothing, the
    /// deltas since, or a snapshot. Returns the updates and the version they reach.
    pub fn updates_since(
        &self,
        store: &Store,
        told: Option<u64>,
    ) -> Result<(Vec<ForwardUpdate>, u64), StoreError> {
        if let Some(told) = told {
            let deltas = lock(&self.deltas);
            let latest = deltas.back().map_or(*self.version.borrow(), |d| d.version);
            if told == latest {
                return Ok((Vec::new(), told));
            }
            if let Some(start) = deltas.iter().position(|d| d.base == Some(told)) {
                let out: Vec<ForwardUpdate> = deltas.iter().skip(start).cloned().collect();
                return Ok((out, latest));
            }
        }
        let (version, rules) = store.forward_rules()?;
        Ok((
            forward_snapshot(version, rules, self.config.settings(), SNAPSHOT_CHUNK),
            version,
        ))
    }

    /// Decides notice claims (committed before this returns).
    pub fn claim(
        &self,
        store: &Store,
        claims: &[NoticeClaim],
        now_ms: u64,
    ) -> Result<Vec<NoticeGrant>, StoreError> {
        let prune = utc_day(now_ms).saturating_sub(NOTICE_DAYS_KEPT - 1);
        store.claim_notices(claims, |s| self.no_notice.contains(s), prune)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(line: u64, old: &str, new: &str) -> (u64, ForwardRule) {
        (
            line,
            ForwardRule {
                old: old.into(),
                new: new.into(),
            },
        )
    }

    #[test]
    fn bad_rows_are_all_reported_and_nothing_is_applied() {
        let store = Store::open(None, false).unwrap();
        let f = Forwarding::open(&store, ForwardConfig::default()).unwrap();
        let problems = f
            .set(
                &store,
                vec![
                    rule(2, "a@x.test", "a@y.test"),
                    rule(3, "not an address", "b@y.test"),
                    rule(4, "c@x.test", "c@x.test"),
                    rule(5, "a@x.test", "other@y.test"),
                ],
            )
            .unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("line 3: "), "{problems:?}");
        assert!(problems[2].contains("line 2"), "{problems:?}");
        assert_eq!(store.forward_rules().unwrap(), (0, vec![]));
    }

    #[test]
    fn links_get_deltas_or_a_snapshot() {
        let store = Store::open(None, false).unwrap();
        let f = Forwarding::open(&store, ForwardConfig::default()).unwrap();
        let (first, v0) = f.updates_since(&store, None).unwrap();
        assert_eq!((first.len(), v0), (1, 0));
        f.set(&store, vec![rule(0, "A@x.test", "a@y.test")])
            .unwrap();
        f.remove(&store, "a@x.test").unwrap();
        let (deltas, v) = f.updates_since(&store, Some(0)).unwrap();
        assert_eq!(v, 2);
        assert_eq!(deltas.len(), 2);
        assert_eq!(deltas[0].set[0].old, "a@x.test");
        assert_eq!(deltas[1].removed, vec!["a@x.test".to_owned()]);
        assert!(f.updates_since(&store, Some(2)).unwrap().0.is_empty());
        // A version the deltas do not cover: a snapshot.
        let (snap, _) = f.updates_since(&store, Some(77)).unwrap();
        assert_eq!(snap[0].base, None);
        assert!(f.remove(&store, "a@x.test").is_err());
    }

    #[test]
    fn no_notice_list_takes_addresses_and_domains() {
        let list = NoNotice::new(&["Boss@a.test".into(), "@b.test".into()]);
        assert!(list.contains("boss@A.test"));
        assert!(list.contains("anyone@b.test"));
        assert!(!list.contains("other@a.test"));
    }
}
