//! The inbound MX's durable mail store: one maildir per kind of mail
//! (`bounces/`, `local/`, `forward/`), each with `tmp/`, `new/` and `cur/`.
//!
//! A message is written to `tmp/`, its data synced, renamed into `new/`, and
//! `new/` itself synced, all before the SMTP 250: after a crash, a message that
//! got its 250 is in `new/` exactly once, and what is left in `tmp/` never got
//! one (it is removed at the next start). Directory syncs are group-committed:
//! one thread per maildir syncs `new/` once for every message renamed into it
//! since its last sync, so many concurrent sessions share one sync.
//!
//! The integrator hands `new/` messages on (bounces to the coordinator) and
//! then [`MailStore::acknowledge`]s them, which moves them to `cur/`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

/// The kinds of mail, one maildir each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MailKind {
    /// Mail to a valid VERP return path: for bounce processing (`bounces/`).
    Bounce,
    /// Mail to a local address, kept for the operator (`local/`).
    Local,
    /// Mail to a forwarded address (`forward/`).
    Forward,
}

impl MailKind {
    /// Every kind.
    pub const ALL: [MailKind; 3] = [MailKind::Bounce, MailKind::Local, MailKind::Forward];

    /// The maildir's folder name.
    pub fn folder(self) -> &'static str {
        match self {
            MailKind::Bounce => "bounces",
            MailKind::Local => "local",
            MailKind::Forward => "forward",
        }
    }

    fn index(self) -> usize {
        match self {
            MailKind::Bounce => 0,
            MailKind::Local => 1,
            MailKind::Forward => 2,
        }
    }
}

/// One maildir and its group-commit thread.
#[derive(Debug)]
struct Maildir {
    root: PathBuf,
    /// Requests to sync `new/`, answered once the sync is done.
    sync: mpsc::Sender<oneshot::Sender<io::Result<()>>>,
}

/// The store (see the module docs). Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct MailStore {
    root: PathBuf,
    dirs: [Maildir; 3],
    seq: AtomicU64,
}

impl MailStore {
    /// Opens (creating if needed) the store under `root`, and removes what a
    /// crash left in the `tmp/` folders.
    pub fn open(root: &Path) -> io::Result<Self> {
        let open = |kind: MailKind| -> io::Result<Maildir> {
            let dir = root.join(kind.folder());
            for sub in ["tmp", "new", "cur"] {
                fs::create_dir_all(dir.join(sub))?;
            }
            for entry in fs::read_dir(dir.join("tmp"))? {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    fs::remove_file(entry.path())?;
                }
            }
            sync_dir(&dir)?;
            let new = File::open(dir.join("new"))?;
            let (tx, rx) = mpsc::channel::<oneshot::Sender<io::Result<()>>>();
            std::thread::Builder::new()
                .name(format!("mx-sync-{}", kind.folder()))
                .spawn(move || group_commit(new, rx))?;
            Ok(Maildir {
                root: dir,
                sync: tx,
            })
        };
        fs::create_dir_all(root)?;
        let dirs = [
            open(MailKind::Bounce)?,
            open(MailKind::Local)?,
            open(MailKind::Forward)?,
        ];
        sync_dir(root)?;
        if let Some(parent) = root.parent() {
            sync_dir(parent)?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            dirs,
            seq: AtomicU64::new(0),
        })
    }

    /// The store's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stores one message durably; returns its file name in `new/`. Resolves
    /// only once the file and the directory entry are on disk.
    pub async fn store(&self, kind: MailKind, parts: Vec<Arc<[u8]>>) -> io::Result<String> {
        let dir = &self.dirs[kind.index()];
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let name = format!("{micros:017}.P{}Q{seq}.mx", std::process::id());
        let tmp = dir.root.join("tmp").join(&name);
        let new = dir.root.join("new").join(&name);
        let written = tokio::task::spawn_blocking(move || -> io::Result<()> {
            let result = (|| {
                let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
                for part in &parts {
                    file.write_all(part)?;
                }
                file.sync_data()?;
                fs::rename(&tmp, &new)
            })();
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result
        })
        .await
        .map_err(io::Error::other)?;
        written?;
        let (tx, rx) = oneshot::channel();
        dir.sync
            .send(tx)
            .map_err(|_| io::Error::other("store sync thread gone"))?;
        rx.await
            .map_err(|_| io::Error::other("store sync thread gone"))??;
        Ok(name)
    }

    /// Removes a stored message (used when a message could not be stored
    /// whole and gets no 250).
    pub fn discard(&self, kind: MailKind, name: &str) -> io::Result<()> {
        fs::remove_file(self.dirs[kind.index()].root.join("new").join(name))
    }

    /// The messages of `kind` waiting in `new/`, oldest first (names sort by
    /// arrival time).
    pub fn pending(&self, kind: MailKind) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(self.dirs[kind.index()].root.join("new"))? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                if !name.starts_with('.') {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Where a message waiting in `new/` is.
    pub fn path(&self, kind: MailKind, name: &str) -> PathBuf {
        self.dirs[kind.index()].root.join("new").join(name)
    }

    /// Marks a message handed on (e.g. the coordinator acknowledged a
    /// bounce): moves it from `new/` to `cur/`, durably. A name with a path
    /// separator is refused.
    pub fn acknowledge(&self, kind: MailKind, name: &str) -> io::Result<()> {
        if name.is_empty() || name.contains(['/', '\0']) || name.starts_with('.') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a message name: {name:?}"),
            ));
        }
        let root = &self.dirs[kind.index()].root;
        fs::rename(root.join("new").join(name), root.join("cur").join(name))?;
        sync_dir(&root.join("cur"))?;
        sync_dir(&root.join("new"))
    }
}

/// Syncs a directory (its entries).
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The group-commit loop of one `new/` folder: wait for a request, take every
/// request queued meanwhile, sync once, answer them all.
fn group_commit(dir: File, requests: mpsc::Receiver<oneshot::Sender<io::Result<()>>>) {
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        batch.extend(requests.try_iter());
        let result = dir.sync_all();
        for waiter in batch {
            let answer = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            let _ = waiter.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn store_list_acknowledge_and_tmp_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let store = MailStore::open(dir.path()).unwrap();
        let a = store
            .store(MailKind::Bounce, vec![Arc::from(&b"one"[..])])
            .await
            .unwrap();
        let b = store
            .store(
                MailKind::Bounce,
                vec![Arc::from(&b"tw"[..]), Arc::from(&b"o"[..])],
            )
            .await
            .unwrap();
        assert!(a < b);
        assert_eq!(
            store.pending(MailKind::Bounce).unwrap(),
            [a.clone(), b.clone()]
        );
        assert_eq!(fs::read(store.path(MailKind::Bounce, &b)).unwrap(), b"two");
        assert!(store.pending(MailKind::Local).unwrap().is_empty());
        store.acknowledge(MailKind::Bounce, &a).unwrap();
        assert_eq!(store.pending(MailKind::Bounce).unwrap(), [b]);
        assert!(dir.path().join("bounces/cur").join(&a).exists());
        assert!(store.acknowledge(MailKind::Bounce, "../x").is_err());
        drop(store);
        fs::write(dir.path().join("local/tmp/partial"), b"x").unwrap();
        let _store = MailStore::open(dir.path()).unwrap();
        assert!(!dir.path().join("local/tmp/partial").exists());
    }
}
