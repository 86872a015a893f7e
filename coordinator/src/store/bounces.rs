//! The durable bounce queue: returned mail from `in` nodes waits here until a `bounce` node's
//! verdict is applied. Applying a verdict (suppressing addresses, counting) and removing the
//! message happen in one transaction, so a verdict counts once even if it arrives twice.

use mailfarm_protocol::ReturnedMail;

use redb::ReadableTableMetadata;

use super::*;

/// Queued returned messages: sequence -> postcard of [`ReturnedMail`].
pub(super) const BOUNCE_QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("bounce_queue");
/// Bounce counters: (campaign id, counter name) -> count.
pub(super) const BOUNCE_COUNTS: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("bounce_counts");

/// What applying one verdict changes.
#[derive(Debug, Default)]
pub struct VerdictEffects {
    /// Counters to add one to: (campaign id, counter name).
    pub counts: Vec<(String, String)>,
    /// Addresses to suppress, with the reason.
    pub suppress: Vec<(String, String)>,
}

impl Store {
    /// Queues returned messages durably; returns their sequence numbers.
    pub fn enqueue_returned(&self, mails: &[ReturnedMail]) -> Result<Vec<u64>, StoreError> {
        let txn = self.write()?;
        let mut seqs = Vec::with_capacity(mails.len());
        {
            let mut meta = txn.open_table(META).map_err(dberr)?;
            let mut next = meta
                .get("next_bounce")
                .map_err(dberr)?
                .map_or(0, |v| v.value());
            let mut queue = txn.open_table(BOUNCE_QUEUE).map_err(dberr)?;
            for mail in mails {
                queue
                    .insert(next, postcard::to_allocvec(mail)?.as_slice())
                    .map_err(dberr)?;
                seqs.push(next);
                next += 1;
            }
            meta.insert("next_bounce", next).map_err(dberr)?;
        }
        txn.commit().map_err(dberr)?;
        Ok(seqs)
    }

    /// Up to `limit` queued messages with a sequence of at least `from`, in order.
    pub fn returned_from(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, ReturnedMail)>, StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let queue = txn.open_table(BOUNCE_QUEUE).map_err(dberr)?;
        let mut out = Vec::new();
        for entry in queue.range(from..).map_err(dberr)?.take(limit) {
            let (seq, raw) = entry.map_err(dberr)?;
            out.push((seq.value(), postcard::from_bytes(raw.value())?));
        }
        Ok(out)
    }

    /// Messages waiting in the queue.
    pub fn returned_depth(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let queue = txn.open_table(BOUNCE_QUEUE).map_err(dberr)?;
        queue.len().map_err(dberr)
    }

    /// Applies a verdict on message `seq` and removes it, in one transaction. Returns false
    /// (and changes nothing) when the message is no longer queued: the verdict was applied.
    pub fn apply_verdict(&self, seq: u64, effects: &VerdictEffects) -> Result<bool, StoreError> {
        let txn = self.write()?;
        {
            let mut queue = txn.open_table(BOUNCE_QUEUE).map_err(dberr)?;
            if queue.remove(seq).map_err(dberr)?.is_none() {
                return Ok(false);
            }
        }
        write_effects(&txn, effects)?;
        txn.commit().map_err(dberr)?;
        Ok(true)
    }

    /// Records bounces that came without a queued message (permanent refusals during
    /// delivery): counters and suppression, in one transaction.
    pub fn record_bounces(&self, effects: &VerdictEffects) -> Result<(), StoreError> {
        let txn = self.write()?;
        write_effects(&txn, effects)?;
        txn.commit().map_err(dberr)
    }

    /// The bounce counters of a campaign, by name.
    pub fn bounce_counts(&self, campaign: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let counts = txn.open_table(BOUNCE_COUNTS).map_err(dberr)?;
        let mut out = Vec::new();
        for entry in counts.range((campaign, "")..).map_err(dberr)? {
            let (key, value) = entry.map_err(dberr)?;
            let (c, name) = key.value();
            if c != campaign {
                break;
            }
            out.push((name.to_owned(), value.value()));
        }
        Ok(out)
    }
}

/// Adds the counters and suppressions of `effects` within `txn`.
fn write_effects(txn: &redb::WriteTransaction, effects: &VerdictEffects) -> Result<(), StoreError> {
    let mut counts = txn.open_table(BOUNCE_COUNTS).map_err(dberr)?;
    for (campaign, counter) in &effects.counts {
        let key = (campaign.as_str(), counter.as_str());
        let now = counts.get(key).map_err(dberr)?.map_or(0, |v| v.value());
        counts.insert(key, now + 1).map_err(dberr)?;
    }
    let mut suppression = txn.open_table(SUPPRESSION).map_err(dberr)?;
    for (address, reason) in &effects.suppress {
        suppression
            .insert(address.to_lowercase().as_str(), reason.as_bytes())
            .map_err(dberr)?;
    }
    Ok(())
}
