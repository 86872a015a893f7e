//! Forwarding state: the rule set (old address -> new address, with the set's version) and the
//! change-of-address notices granted (one per sender, old address and UTC day, farm-wide).
//! A grant is committed before it is answered, so two `in` nodes cannot both send a notice and
//! a coordinator restart does not forget one.

use mailfarm_protocol::{ForwardRule, NoticeClaim, NoticeDecision, NoticeGrant};

use super::*;

/// Old address -> new address.
pub(super) const FORWARD_RULES: TableDefinition<&str, &str> = TableDefinition::new("forward_rules");
/// (UTC day, sender, old address) -> id of the claim that got the notice.
pub(super) const NOTICE_CLAIMS: TableDefinition<(u32, &str, &str), &str> =
    TableDefinition::new("notice_claims");

/// Key of the rule set's version in the meta table.
const FORWARD_VERSION: &str = "forward_version";

impl Store {
    /// The rule set's version (0 before any change).
    pub fn forward_version(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let meta = txn.open_table(META).map_err(dberr)?;
        Ok(meta
            .get(FORWARD_VERSION)
            .map_err(dberr)?
            .map_or(0, |v| v.value()))
    }

    /// Sets rules and removes others in one transaction; returns the new version. A change
    /// that changes nothing keeps the version.
    pub fn forward_change(
        &self,
        set: &[ForwardRule],
        removed: &[String],
    ) -> Result<(u64, bool), StoreError> {
        let txn = self.write()?;
        let (version, changed) = {
            let mut rules = txn.open_table(FORWARD_RULES).map_err(dberr)?;
            let mut changed = false;
            for old in removed {
                changed |= rules.remove(old.as_str()).map_err(dberr)?.is_some();
            }
            for rule in set {
                let before = rules
                    .insert(rule.old.as_str(), rule.new.as_str())
                    .map_err(dberr)?
                    .map(|v| v.value().to_owned());
                changed |= before.as_deref() != Some(rule.new.as_str());
            }
            let mut meta = txn.open_table(META).map_err(dberr)?;
            let mut version = meta
                .get(FORWARD_VERSION)
                .map_err(dberr)?
                .map_or(0, |v| v.value());
            if changed {
                version += 1;
                meta.insert(FORWARD_VERSION, version).map_err(dberr)?;
            }
            (version, changed)
        };
        txn.commit().map_err(dberr)?;
        Ok((version, changed))
    }

    /// The new address of `old`, if it is forwarded.
    pub fn forward_rule(&self, old: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let rules = txn.open_table(FORWARD_RULES).map_err(dberr)?;
        Ok(rules.get(old).map_err(dberr)?.map(|v| v.value().to_owned()))
    }

    /// Every rule by old address, and the version they make up (read together).
    pub fn forward_rules(&self) -> Result<(u64, Vec<ForwardRule>), StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let meta = txn.open_table(META).map_err(dberr)?;
        let version = meta
            .get(FORWARD_VERSION)
            .map_err(dberr)?
            .map_or(0, |v| v.value());
        let rules = txn.open_table(FORWARD_RULES).map_err(dberr)?;
        let mut out = Vec::new();
        for entry in rules.iter().map_err(dberr)? {
            let (old, new) = entry.map_err(dberr)?;
            out.push(ForwardRule {
                old: old.value().to_owned(),
                new: new.value().to_owned(),
            });
        }
        Ok((version, out))
    }

    /// Decides notice claims in one committed transaction: the first claim of a (day, sender,
    /// old address) key gets it; the same claim id asking again gets it again; any other claim
    /// of that key does not. `no_notice` tells senders that never get one. Keys of days before
    /// `prune_before` are removed in the same transaction.
    pub fn claim_notices(
        &self,
        claims: &[NoticeClaim],
        no_notice: impl Fn(&str) -> bool,
        prune_before: u32,
    ) -> Result<Vec<NoticeGrant>, StoreError> {
        let txn = self.write()?;
        let mut out = Vec::with_capacity(claims.len());
        {
            let mut table = txn.open_table(NOTICE_CLAIMS).map_err(dberr)?;
            table
                .retain_in((0u32, "", "")..(prune_before, "", ""), |_, _| false)
                .map_err(dberr)?;
            for claim in claims {
                let decision = if no_notice(&claim.sender) {
                    NoticeDecision::NoNoticeList
                } else {
                    let key = (claim.day, claim.sender.as_str(), claim.recipient.as_str());
                    let holder = table.get(key).map_err(dberr)?.map(|v| v.value().to_owned());
                    match holder {
                        Some(id) if id == claim.id => NoticeDecision::Granted,
                        Some(_) => NoticeDecision::AlreadySent,
                        None => {
                            table.insert(key, claim.id.as_str()).map_err(dberr)?;
                            NoticeDecision::Granted
                        }
                    }
                };
                out.push(NoticeGrant {
                    id: claim.id.clone(),
                    decision,
                });
            }
        }
        txn.commit().map_err(dberr)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(id: &str, sender: &str, day: u32) -> NoticeClaim {
        NoticeClaim {
            id: id.into(),
            sender: sender.into(),
            recipient: "old@x.test".into(),
            day,
        }
    }

    #[test]
    fn rules_version_moves_only_on_change() {
        let store = Store::open(None, false).unwrap();
        let rule = ForwardRule {
            old: "a@x.test".into(),
            new: "a@y.test".into(),
        };
        assert_eq!(
            store
                .forward_change(std::slice::from_ref(&rule), &[])
                .unwrap(),
            (1, true)
        );
        assert_eq!(
            store
                .forward_change(std::slice::from_ref(&rule), &[])
                .unwrap(),
            (1, false)
        );
        assert_eq!(store.forward_rules().unwrap(), (1, vec![rule]));
        assert_eq!(
            store.forward_change(&[], &["a@x.test".into()]).unwrap(),
            (2, true)
        );
        assert_eq!(store.forward_rule("a@x.test").unwrap(), None);
    }

    #[test]
    fn one_notice_per_key_and_day() {
        let store = Store::open(None, false).unwrap();
        let never = |_: &str| false;
        let first = store
            .claim_notices(
                &[claim("n1", "s@a.test", 10), claim("n2", "s@a.test", 10)],
                never,
                0,
            )
            .unwrap();
        assert_eq!(first[0].decision, NoticeDecision::Granted);
        assert_eq!(first[1].decision, NoticeDecision::AlreadySent);
        // The same claim again (a node restarted): granted again, nobody else.
        let again = store
            .claim_notices(
                &[claim("n1", "s@a.test", 10), claim("n3", "s@a.test", 10)],
                never,
                0,
            )
            .unwrap();
        assert_eq!(again[0].decision, NoticeDecision::Granted);
        assert_eq!(again[1].decision, NoticeDecision::AlreadySent);
        // The next day is a new key; pruning drops old days.
        let next = store
            .claim_notices(&[claim("n4", "s@a.test", 11)], never, 11)
            .unwrap();
        assert_eq!(next[0].decision, NoticeDecision::Granted);
        let listed = store
            .claim_notices(&[claim("n5", "x@a.test", 11)], |s| s == "x@a.test", 11)
            .unwrap();
        assert_eq!(listed[0].decision, NoticeDecision::NoNoticeList);
    }
}
