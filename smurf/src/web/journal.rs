//! The web node's durable record of unsubscribes. A one-click POST gets its 200 only once the
//! unsubscribe is in this journal and fsynced, so that a node killed mid-burst loses nothing it
//! answered; the entries then wait here until the coordinator acknowledges them, and are
//! offered again after a restart until it does.
//!
//! One writer thread owns the file. Requests queue to it and it commits them in groups (one
//! write and one `fdatasync` for everything that arrived while the previous group was being
//! synced), which is what makes thousands of durable POSTs per second possible on one disk.
//!
//! Files in the journal folder: `journal.log`, one line per entry
//! (`seq TAB U|R TAB at_ms TAB recipient_id TAB campaign TAB list`), and `acked`, the highest
//! sequence number the coordinator has acknowledged (replaced atomically). A torn last line
//! (the node died mid-write, before the fsync, so before any 200) is cut off at open. When every
//! entry is acknowledged and the log has grown past a few MiB, it is emptied.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use mailfarm_templates::UnsubscribeTarget;
use tokio::sync::{oneshot, watch};
use tracing::warn;

/// Most entries committed by one write + fsync.
const MAX_GROUP: usize = 8192;
/// Size past which a fully acknowledged log is emptied.
const COMPACT_BYTES: u64 = 4 << 20;

/// What an entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Action {
    /// The recipient leaves the list.
    Unsubscribe,
    /// The recipient undid the unsubscribe (within the undo window).
    Resubscribe,
}

/// One durable journal entry, as the integrator forwards it to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JournalEntry {
    /// Position in the journal, from 1, increasing; acknowledge up to it.
    pub seq: u64,
    /// Unsubscribe or undo.
    pub action: Action,
    /// Campaign the message came from.
    pub campaign_id: String,
    /// List the recipient leaves (`None` when the token did not name it: the mailto form).
    pub list_id: Option<String>,
    /// Recipient id within the campaign (the coordinator maps it to the address).
    pub recipient_id: u64,
    /// When it was recorded, ms since the Unix epoch.
    pub at_ms: u64,
}

/// The journal could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A journal file could not be read, written or synced.
    #[error("unsubscribe journal {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The writer thread is gone (it failed to start, or the journal is shutting down).
    #[error("unsubscribe journal writer stopped")]
    Stopped,
    /// A complete line of `journal.log` does not parse: the file was edited or damaged.
    #[error("unsubscribe journal {path}: line {line} is damaged")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
}

/// What [`UnsubscribeJournal::record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// A new entry was written and synced, with this sequence number.
    New(u64),
    /// The recipient's current state already was this action: nothing written (idempotent).
    Already,
}

/// Where a recipient stands, as far as this journal knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The last action recorded.
    pub action: Action,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}

type Key = (String, u64);

/// One queued append: what to write and where to answer.
type Append = (
    Action,
    UnsubscribeTarget,
    oneshot::Sender<Result<u64, String>>,
);

struct State {
    acked: u64,
    last_seq: u64,
    pending: Vec<JournalEntry>,
    standing: HashMap<Key, Standing>,
}

enum Request {
    Append {
        action: Action,
        target: UnsubscribeTarget,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    Ack {
        upto: u64,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// Handle on the journal; cheap to clone, shared by the HTTP handlers and the forwarder.
#[derive(Clone)]
pub struct UnsubscribeJournal {
    tx: mpsc::Sender<Request>,
    state: Arc<Mutex<State>>,
    durable: watch::Receiver<u64>,
    dir: PathBuf,
}

impl std::fmt::Debug for UnsubscribeJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsubscribeJournal")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl UnsubscribeJournal {
    /// Opens (creating if needed) the journal in `dir`, replays it, and starts its writer
    /// thread. Entries not yet acknowledged are in [`UnsubscribeJournal::pending`] at once.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let log_path = dir.join("journal.log");
        let acked_path = dir.join("acked");
        let acked = match std::fs::read_to_string(&acked_path) {
            Ok(text) => text.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err(&acked_path)(e)),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err(&log_path))?;
        let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            warn!(
                path = %log_path.display(),
                "cutting a torn last line ({} bytes) left by a crash",
                bytes.len() - whole
            );
            file.set_len(whole as u64).map_err(io_err(&log_path))?;
            file.sync_all().map_err(io_err(&log_path))?;
        }
        let mut state = State {
            acked,
            last_seq: acked,
            pending: Vec::new(),
            standing: HashMap::new(),
        };
        let text = String::from_utf8_lossy(&bytes[..whole]);
        for (index, line) in text.lines().enumerate() {
            let entry = parse_line(line).ok_or_else(|| JournalError::Damaged {
                path: log_path.clone(),
                line: index + 1,
            })?;
            state.apply(entry);
        }
        file.seek(SeekFrom::End(0)).map_err(io_err(&log_path))?;
        let (durable_tx, durable) = watch::channel(state.last_seq);
        let state = Arc::new(Mutex::new(state));
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            file,
            log_path,
            acked_path,
            dir: dir.to_owned(),
            state: state.clone(),
            durable: durable_tx,
        };
        std::thread::Builder::new()
            .name("unsub-journal".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(dir))?;
        Ok(UnsubscribeJournal {
            tx,
            state,
            durable,
            dir: dir.to_owned(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Records an action for a recipient and returns once it is on disk (fsynced). Idempotent:
    /// if the recipient's current standing already is `action`, nothing is written.
    pub async fn record(
        &self,
        action: Action,
        target: UnsubscribeTarget,
    ) -> Result<Recorded, JournalError> {
        let current = self.standing(&target.campaign_id, target.recipient_id);
        let already = match (current, action) {
            (Some(s), _) => s.action == action,
            // Never unsubscribed: nothing to undo.
            (None, Action::Resubscribe) => true,
            (None, Action::Unsubscribe) => false,
        };
        if already {
            return Ok(Recorded::Already);
        }
        let (reply, wait) = oneshot::channel();
        self.tx
            .send(Request::Append {
                action,
                target,
                reply,
            })
            .map_err(|_| JournalError::Stopped)?;
        match wait.await {
            Ok(Ok(seq)) => Ok(Recorded::New(seq)),
            Ok(Err(message)) => Err(JournalError::Io {
                path: self.dir.join("journal.log"),
                source: std::io::Error::other(message),
            }),
            Err(_) => Err(JournalError::Stopped),
        }
    }

    /// Where a recipient of a campaign stands, if the journal has anything on it.
    pub fn standing(&self, campaign_id: &str, recipient_id: u64) -> Option<Standing> {
        self.lock()
            .standing
            .get(&(campaign_id.to_owned(), recipient_id))
            .copied()
    }

    /// Durable entries the coordinator has not acknowledged yet, oldest first. Forward them,
    /// then call [`UnsubscribeJournal::acknowledge`] with the last `seq` it committed.
    pub fn pending(&self) -> Vec<JournalEntry> {
        self.lock().pending.clone()
    }

    /// Highest acknowledged sequence number.
    pub fn acknowledged(&self) -> u64 {
        self.lock().acked
    }

    /// Marks every entry up to `upto` as committed by the coordinator (durably: they are not
    /// offered again after a restart).
    pub async fn acknowledge(&self, upto: u64) -> Result<(), JournalError> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send(Request::Ack { upto, reply })
            .map_err(|_| JournalError::Stopped)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(JournalError::Io {
                path: self.dir.join("acked"),
                source: std::io::Error::other(message),
            }),
            Err(_) => Err(JournalError::Stopped),
        }
    }

    /// A receiver of the last durable sequence number: it changes whenever new entries are
    /// synced, so a forwarder can wait on `changed()` and then read
    /// [`UnsubscribeJournal::pending`].
    pub fn watch_durable(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }
}

impl State {
    fn apply(&mut self, entry: JournalEntry) {
        self.last_seq = self.last_seq.max(entry.seq);
        self.standing.insert(
            (entry.campaign_id.clone(), entry.recipient_id),
            Standing {
                action: entry.action,
                at_ms: entry.at_ms,
            },
        );
        if entry.seq > self.acked {
            self.pending.push(entry);
        }
    }
}

struct Writer {
    file: File,
    log_path: PathBuf,
    acked_path: PathBuf,
    dir: PathBuf,
    state: Arc<Mutex<State>>,
    durable: watch::Sender<u64>,
}

impl Writer {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn run(mut self, rx: mpsc::Receiver<Request>) {
        let mut line = String::with_capacity(128);
        while let Ok(first) = rx.recv() {
            let mut appends = Vec::new();
            let mut acks = Vec::new();
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Append {
                        action,
                        target,
                        reply,
                    } => appends.push((action, target, reply)),
                    Request::Ack { upto, reply } => acks.push((upto, reply)),
                }
                if appends.len() < MAX_GROUP {
                    next = rx.try_recv().ok();
                }
            }
            if !appends.is_empty() {
                self.commit(appends, &mut line);
            }
            for (upto, reply) in acks {
                let _ = reply.send(self.ack(upto).map_err(|e| e.to_string()));
            }
        }
    }

    fn commit(&mut self, appends: Vec<Append>, line: &mut String) {
        let first_seq = self.lock().last_seq + 1;
        let at_ms = now_ms();
        let mut buffer = Vec::with_capacity(appends.len() * 80);
        let mut entries = Vec::with_capacity(appends.len());
        for (i, (action, target, _)) in appends.iter().enumerate() {
            let entry = JournalEntry {
                seq: first_seq + i as u64,
                action: *action,
                campaign_id: target.campaign_id.clone(),
                list_id: target.list_id.clone(),
                recipient_id: target.recipient_id,
                at_ms,
            };
            line.clear();
            format_line(&entry, line);
            buffer.extend_from_slice(line.as_bytes());
            entries.push(entry);
        }
        let written = self
            .file
            .write_all(&buffer)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                let last = first_seq + appends.len() as u64 - 1;
                {
                    let mut state = self.lock();
                    for entry in entries {
                        state.apply(entry);
                    }
                }
                self.durable.send_replace(last);
                for (i, (_, _, reply)) in appends.into_iter().enumerate() {
                    let _ = reply.send(Ok(first_seq + i as u64));
                }
            }
            Err(e) => {
                warn!(path = %self.log_path.display(), "unsubscribe journal write failed: {e}");
                // What may have reached the file is cut off again, so that the file holds only
                // entries that were answered 200.
                if let Ok(meta) = self.file.metadata() {
                    let keep = meta.len().saturating_sub(buffer.len() as u64);
                    let _ = self.file.set_len(keep);
                }
                let message = e.to_string();
                for (_, _, reply) in appends {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }

    fn ack(&mut self, upto: u64) -> Result<(), JournalError> {
        let upto = upto.min(self.lock().last_seq);
        if upto <= self.lock().acked {
            return Ok(());
        }
        let tmp = self.dir.join("acked.tmp");
        let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(format!("{upto}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &self.acked_path).map_err(io_err(&self.acked_path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        let all_acked = {
            let mut state = self.lock();
            state.acked = upto;
            state.pending.retain(|e| e.seq > upto);
            state.pending.is_empty()
        };
        let size = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        if all_acked && size > COMPACT_BYTES {
            // Every entry is committed at the coordinator: the log can start afresh. The
            // standing map stays in memory (idempotency until restart).
            self.file
                .set_len(0)
                .and_then(|()| self.file.sync_all())
                .map_err(io_err(&self.log_path))?;
        }
        Ok(())
    }
}

fn format_line(entry: &JournalEntry, out: &mut String) {
    use std::fmt::Write as _;
    let action = match entry.action {
        Action::Unsubscribe => 'U',
        Action::Resubscribe => 'R',
    };
    let _ = writeln!(
        out,
        "{}\t{action}\t{}\t{}\t{}\t{}",
        entry.seq,
        entry.at_ms,
        entry.recipient_id,
        entry.campaign_id,
        entry.list_id.as_deref().unwrap_or("")
    );
}

fn parse_line(line: &str) -> Option<JournalEntry> {
    let mut fields = line.split('\t');
    let seq = fields.next()?.parse().ok()?;
    let action = match fields.next()? {
        "U" => Action::Unsubscribe,
        "R" => Action::Resubscribe,
        _ => return None,
    };
    let at_ms = fields.next()?.parse().ok()?;
    let recipient_id = fields.next()?.parse().ok()?;
    let campaign_id = fields.next()?.to_owned();
    let list = fields.next()?;
    if fields.next().is_some() || campaign_id.is_empty() {
        return None;
    }
    Some(JournalEntry {
        seq,
        action,
        campaign_id,
        list_id: (!list.is_empty()).then(|| list.to_owned()),
        recipient_id,
        at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(id: u64) -> UnsubscribeTarget {
        UnsubscribeTarget {
            campaign_id: "c1".into(),
            list_id: Some("weekly.acme.example".into()),
            recipient_id: id,
        }
    }

    #[tokio::test]
    async fn records_are_durable_idempotent_and_offered_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let journal = UnsubscribeJournal::open(dir.path()).unwrap();
        let mut tasks = Vec::new();
        for id in 0..200 {
            let j = journal.clone();
            tasks.push(tokio::spawn(async move {
                j.record(Action::Unsubscribe, target(id)).await
            }));
        }
        for task in tasks {
            assert!(matches!(task.await.unwrap(), Ok(Recorded::New(_))));
        }
        assert_eq!(
            journal
                .record(Action::Unsubscribe, target(5))
                .await
                .unwrap(),
            Recorded::Already
        );
        assert_eq!(
            journal
                .record(Action::Resubscribe, target(999))
                .await
                .unwrap(),
            Recorded::Already,
            "nothing to undo"
        );
        assert!(matches!(
            journal
                .record(Action::Resubscribe, target(5))
                .await
                .unwrap(),
            Recorded::New(201)
        ));
        assert_eq!(journal.pending().len(), 201);
        assert_eq!(*journal.watch_durable().borrow(), 201);
        journal.acknowledge(150).await.unwrap();
        assert_eq!(journal.pending().len(), 51);
        drop(journal);

        // A torn line from a crash is cut; the unacknowledged entries come back.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("journal.log"))
            .unwrap();
        f.write_all(b"202\tU\t17").unwrap();
        drop(f);
        let journal = UnsubscribeJournal::open(dir.path()).unwrap();
        let pending = journal.pending();
        assert_eq!(pending.len(), 51);
        assert_eq!(pending[0].seq, 151);
        assert_eq!(pending[50].action, Action::Resubscribe);
        assert_eq!(journal.acknowledged(), 150);
        assert_eq!(
            journal.standing("c1", 5).map(|s| s.action),
            Some(Action::Resubscribe)
        );
        assert_eq!(
            journal.standing("c1", 6).map(|s| s.action),
            Some(Action::Unsubscribe)
        );
        assert!(matches!(
            journal
                .record(Action::Unsubscribe, target(1000))
                .await
                .unwrap(),
            Recorded::New(202)
        ));
    }

    #[test]
    fn lines_round_trip_and_damage_is_refused() {
        let entry = JournalEntry {
            seq: 7,
            action: Action::Unsubscribe,
            campaign_id: "c-1".into(),
            list_id: None,
            recipient_id: u64::MAX,
            at_ms: 1,
        };
        let mut line = String::new();
        format_line(&entry, &mut line);
        assert_eq!(parse_line(line.trim_end_matches('\n')), Some(entry));
        assert_eq!(parse_line("7\tX\t1\t2\tc\tl"), None);
        assert_eq!(parse_line("7\tU\t1\t2\tc\tl\textra"), None);
        assert_eq!(parse_line("7\tU\t1\t2\t\tl"), None);
    }
}
