//! The coordinator's durable state, in an embedded redb database (one file, no server).
//!
//! Why redb: pure Rust (no C toolchain, nothing to install), ACID transactions with
//! crash-safe commits (copy-on-write B-trees, checksummed), and typed tables; our access pattern
//! is key-value (recipient id -> record), so SQL would add cost without use. See
//! docs/coordinator.md.
//!
//! Recipients are keyed by their id (`campaign_seq << 32 | row`), so a campaign's recipients are
//! contiguous and scanned in order. "In flight" is never written: a recipient stays `Pending`
//! until its result is committed, so after a crash everything that was in flight is simply sent
//! again (bounded by the smurfs' windows) and nothing is lost.

use std::path::Path;

use mailfarm_protocol::{NodeRole, TemplateBundle};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

mod bounces;
mod forward;

pub use bounces::VerdictEffects;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const CAMPAIGNS: TableDefinition<u32, &[u8]> = TableDefinition::new("campaigns");
const RECIPIENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("recipients");
const RETRIES: TableDefinition<(u64, u64), ()> = TableDefinition::new("retries");
const DEDUPE: TableDefinition<(u32, &str), ()> = TableDefinition::new("dedupe");
const SUPPRESSION: TableDefinition<&str, &[u8]> = TableDefinition::new("suppression");
/// Node name -> its assigned role (postcard of `NodeRole`).
const NODE_ROLES: TableDefinition<&str, &[u8]> = TableDefinition::new("node_roles");

/// Page cache of the database.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Errors of the store. All of them mean the coordinator cannot record state safely.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (I/O, corruption, already open by another process).
    #[error("state database: {0}")]
    Db(#[from] redb::Error),
    /// A record could not be encoded or decoded.
    #[error("state record: {0}")]
    Record(#[from] postcard::Error),
}

fn dberr<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into())
}

/// Lifecycle of a campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CampaignStatus {
    /// Sending (possibly while its CSV is still being ingested).
    Running,
    /// Paused by an operator: nothing new is leased.
    Paused,
    /// Cancelled: pending recipients were skipped.
    Cancelled,
    /// Every recipient reached a final state.
    Finished,
}

/// A campaign as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CampaignRecord {
    /// Sequence number (upper half of recipient ids).
    pub seq: u32,
    /// The template bundle.
    pub bundle: TemplateBundle,
    /// Lifecycle status.
    pub status: CampaignStatus,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Do not send before this time (ms since the epoch).
    pub start_at_ms: Option<u64>,
    /// Per-campaign rate cap across the farm.
    pub rate_cap: Option<mailfarm_protocol::Rate>,
    /// Whether the whole CSV has been ingested.
    pub ingest_complete: bool,
    /// Rows accepted.
    pub total: u64,
    /// Rows rejected at ingest.
    pub rejected_rows: u64,
    /// Rows skipped because the address is suppressed.
    pub suppressed: u64,
    /// When it finished (ms since the epoch).
    pub finished_ms: Option<u64>,
}

/// State of a recipient as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredState {
    /// To be sent (or in flight: that is not stored).
    Pending,
    /// Accepted by the receiving server.
    Delivered,
    /// Temporarily refused; retry at the given time (ms since the epoch).
    Deferred {
        /// When to retry.
        retry_at_ms: u64,
    },
    /// Permanently failed.
    Failed,
    /// Skipped (campaign cancelled).
    Skipped,
}

/// A recipient as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecipientRecord {
    /// Field values.
    pub values: Vec<String>,
    /// State.
    pub state: StoredState,
    /// Delivery attempts so far.
    pub attempts: u16,
    /// Time of the first attempt (ms since the epoch), 0 before any.
    pub first_attempt_ms: u64,
    /// Last reply code (0: none or local).
    pub last_code: u16,
    /// Last reply text or local reason.
    pub last_text: String,
}

/// Recipient counts by stored state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Pending.
    pub pending: u64,
    /// Delivered.
    pub delivered: u64,
    /// Deferred, awaiting retry.
    pub deferred: u64,
    /// Failed.
    pub failed: u64,
    /// Skipped.
    pub skipped: u64,
    /// Delivery attempts recorded, over all recipients.
    pub attempts: u64,
}

/// What happens to a row offered at ingest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowVerdict {
    /// Stored as pending.
    Accepted,
    /// Same address as an earlier row.
    Duplicate,
    /// The address is on the suppression list.
    Suppressed,
}

/// A pending recipient: its id and field values.
pub type PendingRecipient = (u64, Vec<String>);

/// The durable store.
pub struct Store {
    db: Database,
    durability: Durability,
}

/// Splits a recipient id into campaign sequence and row.
pub fn split_id(id: u64) -> (u32, u32) {
    ((id >> 32) as u32, (id & 0xffff_ffff) as u32)
}

/// Builds a recipient id.
pub fn make_id(seq: u32, row: u32) -> u64 {
    (u64::from(seq) << 32) | u64::from(row)
}

impl Store {
    /// Opens (or creates) the database file. With `durable == false` the state lives in memory
    /// only (benchmark baseline, throwaway local farms).
    pub fn open(path: Option<&Path>, durable: bool) -> Result<Self, StoreError> {
        let mut builder = Database::builder();
        // Bounded page cache: the store, not memory, holds the recipients.
        builder.set_cache_size(CACHE_BYTES);
        let db = match (path, durable) {
            (Some(path), true) => builder.create(path).map_err(dberr)?,
            _ => builder
                .create_with_backend(redb::backends::InMemoryBackend::new())
                .map_err(dberr)?,
        };
        let store = Self {
            db,
            durability: if durable {
                Durability::Immediate
            } else {
                Durability::None
            },
        };
        let txn = store.write()?;
        txn.open_table(META).map_err(dberr)?;
        txn.open_table(CAMPAIGNS).map_err(dberr)?;
        txn.open_table(RECIPIENTS).map_err(dberr)?;
        txn.open_table(RETRIES).map_err(dberr)?;
        txn.open_table(DEDUPE).map_err(dberr)?;
        txn.open_table(SUPPRESSION).map_err(dberr)?;
        txn.open_table(NODE_ROLES).map_err(dberr)?;
        txn.open_table(bounces::BOUNCE_QUEUE).map_err(dberr)?;
        txn.open_table(bounces::BOUNCE_COUNTS).map_err(dberr)?;
        txn.open_table(forward::FORWARD_RULES).map_err(dberr)?;
        txn.open_table(forward::NOTICE_CLAIMS).map_err(dberr)?;
        txn.commit().map_err(dberr)?;
        Ok(store)
    }

    fn write(&self) -> Result<redb::WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(dberr)?;
        txn.set_durability(self.durability).map_err(dberr)?;
        Ok(txn)
    }

    /// Stores a new campaign, assigning its sequence number.
    pub fn create_campaign(
        &self,
        mut record: CampaignRecord,
    ) -> Result<CampaignRecord, StoreError> {
        let txn = self.write()?;
        {
            let mut meta = txn.open_table(META).map_err(dberr)?;
            let seq = meta
                .get("next_campaign")
                .map_err(dberr)?
                .map_or(0, |v| v.value());
            meta.insert("next_campaign", seq + 1).map_err(dberr)?;
            record.seq = u32::try_from(seq).map_err(|_| {
                StoreError::Db(redb::Error::Corrupted("campaign sequence overflow".into()))
            })?;
            let mut campaigns = txn.open_table(CAMPAIGNS).map_err(dberr)?;
            campaigns
                .insert(record.seq, postcard::to_allocvec(&record)?.as_slice())
                .map_err(dberr)?;
        }
        txn.commit().map_err(dberr)?;
        Ok(record)
    }

    /// Rewrites a campaign record.
    pub fn update_campaign(&self, record: &CampaignRecord) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut campaigns = txn.open_table(CAMPAIGNS).map_err(dberr)?;
            campaigns
                .insert(record.seq, postcard::to_allocvec(record)?.as_slice())
                .map_err(dberr)?;
        }
        txn.commit().map_err(dberr)
    }

    /// Every stored campaign, in creation order.
    pub fn campaigns(&self) -> Result<Vec<CampaignRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let table = txn.open_table(CAMPAIGNS).map_err(dberr)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(dberr)? {
            let (_, value) = entry.map_err(dberr)?;
            out.push(postcard::from_bytes(value.value())?);
        }
        Ok(out)
    }

    /// Stores a batch of ingested rows in one transaction: each row is checked against the
    /// suppression list and earlier rows (by lower-cased address), then stored as pending.
    pub fn ingest_rows(
        &self,
        seq: u32,
        rows: &[(u32, String, Vec<String>)],
    ) -> Result<Vec<RowVerdict>, StoreError> {
        let txn = self.write()?;
        let mut verdicts = Vec::with_capacity(rows.len());
        {
            let suppression = txn.open_table(SUPPRESSION).map_err(dberr)?;
            let mut dedupe = txn.open_table(DEDUPE).map_err(dberr)?;
            let mut recipients = txn.open_table(RECIPIENTS).map_err(dberr)?;
            for (row, email, values) in rows {
                let key = email.to_lowercase();
                if suppression.get(key.as_str()).map_err(dberr)?.is_some() {
                    verdicts.push(RowVerdict::Suppressed);
                    continue;
                }
                if dedupe
                    .insert((seq, key.as_str()), ())
                    .map_err(dberr)?
                    .is_some()
                {
                    verdicts.push(RowVerdict::Duplicate);
                    continue;
                }
                let record = RecipientRecord {
                    values: values.clone(),
                    state: StoredState::Pending,
                    attempts: 0,
                    first_attempt_ms: 0,
                    last_code: 0,
                    last_text: String::new(),
                };
                recipients
                    .insert(
                        make_id(seq, *row),
                        postcard::to_allocvec(&record)?.as_slice(),
                    )
                    .map_err(dberr)?;
                verdicts.push(RowVerdict::Accepted);
            }
        }
        txn.commit().map_err(dberr)?;
        Ok(verdicts)
    }

    /// Drops the de-duplication index of a fully ingested campaign.
    pub fn drop_dedupe(&self, seq: u32) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut dedupe = txn.open_table(DEDUPE).map_err(dberr)?;
            dedupe
                .retain_in((seq, "")..(seq + 1, ""), |_, _| false)
                .map_err(dberr)?;
        }
        txn.commit().map_err(dberr)
    }

    /// Up to `limit` pending recipients of campaign `seq` with row >= `from_row`, in row order,
    /// and the row to continue from (None when the campaign's rows are exhausted).
    pub fn scan_pending(
        &self,
        seq: u32,
        from_row: u32,
        limit: usize,
    ) -> Result<(Vec<PendingRecipient>, Option<u32>), StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let table = txn.open_table(RECIPIENTS).map_err(dberr)?;
        let mut out = Vec::new();
        let end = make_id(seq, u32::MAX);
        for entry in table.range(make_id(seq, from_row)..=end).map_err(dberr)? {
            let (key, value) = entry.map_err(dberr)?;
            let id = key.value();
            if out.len() >= limit {
                return Ok((out, Some(split_id(id).1)));
            }
            let record: RecipientRecord = postcard::from_bytes(value.value())?;
            if record.state == StoredState::Pending {
                out.push((id, record.values));
            }
        }
        Ok((out, None))
    }

    /// Counts a campaign's recipients by state.
    pub fn count_states(&self, seq: u32) -> Result<StateCounts, StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let table = txn.open_table(RECIPIENTS).map_err(dberr)?;
        let mut counts = StateCounts::default();
        for entry in table
            .range(make_id(seq, 0)..=make_id(seq, u32::MAX))
            .map_err(dberr)?
        {
            let (_, value) = entry.map_err(dberr)?;
            let record: RecipientRecord = postcard::from_bytes(value.value())?;
            counts.attempts += u64::from(record.attempts);
            match record.state {
                StoredState::Pending => counts.pending += 1,
                StoredState::Delivered => counts.delivered += 1,
                StoredState::Deferred { .. } => counts.deferred += 1,
                StoredState::Failed => counts.failed += 1,
                StoredState::Skipped => counts.skipped += 1,
            }
        }
        Ok(counts)
    }

    /// When the earliest waiting retry is due (ms since the epoch), if any retry is waiting.
    pub fn next_retry_at(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let table = txn.open_table(RETRIES).map_err(dberr)?;
        let first = table.first().map_err(dberr)?.map(|(key, _)| key.value().0);
        Ok(first)
    }

    /// Reads one recipient.
    pub fn recipient(&self, id: u64) -> Result<Option<RecipientRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let table = txn.open_table(RECIPIENTS).map_err(dberr)?;
        match table.get(id).map_err(dberr)? {
            Some(value) => Ok(Some(postcard::from_bytes(value.value())?)),
            None => Ok(None),
        }
    }

    /// Applies the outcome of attempts in one transaction. `update` gets each pending record and
    /// changes it; the retry index follows the new state. Returns the new states (None for ids
    /// that were not pending: late or duplicate results).
    pub fn apply<F>(
        &self,
        ids: &[u64],
        mut update: F,
    ) -> Result<Vec<Option<StoredState>>, StoreError>
    where
        F: FnMut(usize, &mut RecipientRecord),
    {
        let txn = self.write()?;
        let mut out = Vec::with_capacity(ids.len());
        {
            let mut recipients = txn.open_table(RECIPIENTS).map_err(dberr)?;
            let mut retries = txn.open_table(RETRIES).map_err(dberr)?;
            for (i, &id) in ids.iter().enumerate() {
                let record = match recipients.get(id).map_err(dberr)? {
                    Some(v) => postcard::from_bytes::<RecipientRecord>(v.value())?,
                    None => {
                        out.push(None);
                        continue;
                    }
                };
                if record.state != StoredState::Pending {
                    out.push(None);
                    continue;
                }
                let mut record = record;
                update(i, &mut record);
                if let StoredState::Deferred { retry_at_ms } = record.state {
                    retries.insert((retry_at_ms, id), ()).map_err(dberr)?;
                }
                recipients
                    .insert(id, postcard::to_allocvec(&record)?.as_slice())
                    .map_err(dberr)?;
                out.push(Some(record.state));
            }
        }
        txn.commit().map_err(dberr)?;
        Ok(out)
    }

    /// Makes deferred recipients whose retry time has come pending again; returns them with
    /// their values.
    pub fn take_due_retries(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<PendingRecipient>, StoreError> {
        let txn = self.write()?;
        let mut out = Vec::new();
        {
            let mut retries = txn.open_table(RETRIES).map_err(dberr)?;
            let mut recipients = txn.open_table(RECIPIENTS).map_err(dberr)?;
            let mut due = Vec::new();
            for entry in retries.range((0, 0)..=(now_ms, u64::MAX)).map_err(dberr)? {
                let (key, _) = entry.map_err(dberr)?;
                due.push(key.value());
                if due.len() >= limit {
                    break;
                }
            }
            for key in due {
                retries.remove(key).map_err(dberr)?;
                let id = key.1;
                let Some(value) = recipients
                    .get(id)
                    .map_err(dberr)?
                    .map(|v| v.value().to_vec())
                else {
                    continue;
                };
                let mut record: RecipientRecord = postcard::from_bytes(&value)?;
                if !matches!(record.state, StoredState::Deferred { .. }) {
                    continue;
                }
                record.state = StoredState::Pending;
                recipients
                    .insert(id, postcard::to_allocvec(&record)?.as_slice())
                    .map_err(dberr)?;
                out.push((id, record.values));
            }
        }
        txn.commit().map_err(dberr)?;
        Ok(out)
    }

    /// Cancels a campaign's unsent recipients: pending and deferred become skipped, except the
    /// ids in `keep` (in flight: they finish normally). Returns how many were skipped.
    pub fn skip_unsent(
        &self,
        seq: u32,
        keep: &std::collections::HashSet<u64>,
    ) -> Result<u64, StoreError> {
        let txn = self.write()?;
        let mut skipped = 0;
        {
            let mut recipients = txn.open_table(RECIPIENTS).map_err(dberr)?;
            let mut retries = txn.open_table(RETRIES).map_err(dberr)?;
            let mut to_skip = Vec::new();
            for entry in recipients
                .range(make_id(seq, 0)..=make_id(seq, u32::MAX))
                .map_err(dberr)?
            {
                let (key, value) = entry.map_err(dberr)?;
                let id = key.value();
                if keep.contains(&id) {
                    continue;
                }
                let mut record: RecipientRecord = postcard::from_bytes(value.value())?;
                let retry_key = match record.state {
                    StoredState::Pending => None,
                    StoredState::Deferred { retry_at_ms } => Some((retry_at_ms, id)),
                    _ => continue,
                };
                record.state = StoredState::Skipped;
                to_skip.push((id, retry_key, postcard::to_allocvec(&record)?));
            }
            for (id, retry_key, bytes) in to_skip {
                if let Some(key) = retry_key {
                    retries.remove(key).map_err(dberr)?;
                }
                recipients.insert(id, bytes.as_slice()).map_err(dberr)?;
                skipped += 1;
            }
        }
        txn.commit().map_err(dberr)?;
        Ok(skipped)
    }

    /// Adds an address to the suppression list.
    pub fn suppress(&self, address: &str, reason: &str) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut table = txn.open_table(SUPPRESSION).map_err(dberr)?;
            table
                .insert(address.to_lowercase().as_str(), reason.as_bytes())
                .map_err(dberr)?;
        }
        txn.commit().map_err(dberr)
    }

    /// Takes an address off the suppression list (an unsubscribe undone).
    pub fn unsuppress(&self, address: &str) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut table = txn.open_table(SUPPRESSION).map_err(dberr)?;
            table
                .remove(address.to_lowercase().as_str())
                .map_err(dberr)?;
        }
        txn.commit().map_err(dberr)
    }

    /// Every suppressed address (lower case).
    pub fn suppressed_addresses(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let table = txn.open_table(SUPPRESSION).map_err(dberr)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(dberr)? {
            let (address, _) = entry.map_err(dberr)?;
            out.push(address.value().to_owned());
        }
        Ok(out)
    }

    /// Marks pending recipients skipped (their address was suppressed while the campaign ran);
    /// returns how many were still pending.
    pub fn skip_recipients(&self, ids: &[u64]) -> Result<u64, StoreError> {
        let txn = self.write()?;
        let mut skipped = 0;
        {
            let mut recipients = txn.open_table(RECIPIENTS).map_err(dberr)?;
            for &id in ids {
                let Some(value) = recipients.get(id).map_err(dberr)? else {
                    continue;
                };
                let mut record: RecipientRecord = postcard::from_bytes(value.value())?;
                drop(value);
                if record.state != StoredState::Pending {
                    continue;
                }
                record.state = StoredState::Skipped;
                recipients
                    .insert(id, postcard::to_allocvec(&record)?.as_slice())
                    .map_err(dberr)?;
                skipped += 1;
            }
        }
        txn.commit().map_err(dberr)?;
        Ok(skipped)
    }

    /// Records a node's assigned role, durably.
    pub fn set_node_role(&self, node: &str, role: NodeRole) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut table = txn.open_table(NODE_ROLES).map_err(dberr)?;
            table
                .insert(node, postcard::to_allocvec(&role)?.as_slice())
                .map_err(dberr)?;
        }
        txn.commit().map_err(dberr)
    }

    /// Every node with a recorded role, by name.
    pub fn node_roles(&self) -> Result<Vec<(String, NodeRole)>, StoreError> {
        let txn = self.db.begin_read().map_err(dberr)?;
        let table = txn.open_table(NODE_ROLES).map_err(dberr)?;
        let mut roles = Vec::new();
        for entry in table.iter().map_err(dberr)? {
            let (name, role) = entry.map_err(dberr)?;
            roles.push((name.value().to_owned(), postcard::from_bytes(role.value())?));
        }
        Ok(roles)
    }
}
