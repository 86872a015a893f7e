//! Returned mail on its way from an `in` node to the coordinator's bounce queue.
//!
//! The inbound server stores every message for a VERP return path durably in a folder before
//! it answers 250. This outbox sends those files to the coordinator and deletes each one only
//! when the coordinator says it has stored it, so a crash of either side loses nothing: what
//! was not acknowledged is sent again on the next link. It keeps working after the node leaves
//! the `in` role, until the folder is empty.

use std::collections::HashSet;
use std::path::PathBuf;

use mailfarm_protocol::{ReturnedMail, MAX_RETURNED_BYTES};
use tracing::warn;

/// Most bytes of returned mail per frame.
const FRAME_BUDGET: usize = 2 << 20;

/// The folder of stored returned mail and what of it is on its way.
#[derive(Debug, Default)]
pub struct ReturnedOutbox {
    dir: Option<PathBuf>,
    sent: HashSet<String>,
}

impl ReturnedOutbox {
    /// An outbox reading `dir` (none: nothing to send).
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            sent: HashSet::new(),
        }
    }

    /// Forgets what was sent on an ended link: it goes again.
    pub fn reset(&mut self) {
        self.sent.clear();
    }

    /// Stored messages not yet sent on this link, oldest name first, within a frame's budget.
    pub fn next_batch(&mut self) -> Vec<ReturnedMail> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.') && !self.sent.contains(name))
            .collect();
        names.sort();
        let mut batch = Vec::new();
        let mut bytes = 0;
        for name in names {
            if bytes >= FRAME_BUDGET {
                break;
            }
            let path = dir.join(&name);
            let mut raw = match std::fs::read(&path) {
                Ok(raw) => raw,
                Err(e) => {
                    warn!(path = %path.display(), "cannot read stored returned mail: {e}");
                    continue;
                }
            };
            raw.truncate(MAX_RETURNED_BYTES);
            let received_ms = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64);
            bytes += raw.len();
            self.sent.insert(name.clone());
            batch.push(ReturnedMail {
                name,
                received_ms,
                raw,
            });
        }
        batch
    }

    /// The coordinator stored these: delete the local copies.
    pub fn stored(&mut self, names: &[String]) {
        let Some(dir) = &self.dir else { return };
        for name in names {
            // Names come from the coordinator: never let one leave the folder.
            if name.contains('/') || name.contains("..") || name.starts_with('.') {
                warn!(name, "ignoring a suspicious returned-mail name");
                continue;
            }
            if let Err(e) = std::fs::remove_file(dir.join(name)) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(name, "cannot delete forwarded returned mail: {e}");
                }
            }
            self.sent.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_go_once_per_link_and_are_deleted_only_when_stored() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("b"), b"second").unwrap();
        std::fs::write(tmp.path().join("a"), b"first").unwrap();
        std::fs::write(tmp.path().join(".tmp"), b"partial").unwrap();
        let mut outbox = ReturnedOutbox::new(Some(tmp.path().to_owned()));
        let batch = outbox.next_batch();
        let names: Vec<&str> = batch.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(batch[0].raw, b"first");
        assert!(outbox.next_batch().is_empty(), "not twice on one link");
        outbox.stored(&["a".into(), "../escape".into()]);
        assert!(!tmp.path().join("a").exists());
        assert!(tmp.path().join("b").exists(), "b was never acknowledged");
        outbox.reset();
        let again: Vec<String> = outbox.next_batch().into_iter().map(|m| m.name).collect();
        assert_eq!(
            again,
            ["b"],
            "unacknowledged mail goes again on the next link"
        );
    }
}
