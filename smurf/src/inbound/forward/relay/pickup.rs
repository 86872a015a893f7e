//! Picking up what the MX stored in `forward/new`: the forwarding service reads a batch of
//! messages, writes their notice files and `notices` marks, syncs them together (group
//! commit), and only then works on them. Kept apart from the relaying in [`super`].

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;

use mailfarm_protocol::{utc_day, NoticeClaim};
use tracing::warn;

use super::super::group_sync;
use super::super::notice;
use super::super::now_ms;
use super::super::stored::{parse_stored, Stored};
use super::{
    sync_dir, Active, Forwarder, NoticeState, PendingNotice, TargetState, GROUP, MAX_ACTIVE,
};

/// Stored messages read in one scan, committed together.
#[derive(Default)]
struct PickBatch {
    picked: Vec<Picked>,
    /// Notice files written under a temporary name: (temporary, final, file to sync).
    notice_files: Vec<(PathBuf, PathBuf, Option<File>)>,
    notices: Vec<(String, PendingNotice)>,
    suppressed: Vec<&'static str>,
}

/// One stored message read in a scan.
struct Picked {
    name: String,
    /// Its `notices` mark is still to be written.
    mark: bool,
    active: Active,
}

impl Forwarder {
    /// Picks up stored messages not yet known. Their notice files and `notices` marks are
    /// written for the whole batch, then synced together (group commit): a message becomes
    /// active, and its notices claimable, only once its own files are synced.
    pub(super) fn scan(&mut self) {
        if self.active.len() >= MAX_ACTIVE {
            return;
        }
        let mut names: Vec<String> = match fs::read_dir(self.dir("new")) {
            Ok(entries) => entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.') && !self.active.contains_key(n))
                .collect(),
            Err(e) => {
                warn!("forward/new: {e}");
                return;
            }
        };
        names.sort();
        names.truncate(MAX_ACTIVE - self.active.len());
        for chunk in names.chunks(GROUP) {
            self.scan_batch(chunk);
        }
    }

    /// Picks up one batch of stored messages (see [`Self::scan`]).
    fn scan_batch(&mut self, names: &[String]) {
        let mut batch = PickBatch::default();
        for name in names {
            if let Err(e) = self.pick_up(name.clone(), &mut batch) {
                warn!("cannot read a stored forward message: {e}");
            }
        }
        if batch.picked.is_empty() {
            return;
        }
        if let Err(e) = self.commit_picks(&mut batch) {
            // Nothing of the batch is acted on: the next scan picks it up again.
            warn!("recording forward notice decisions: {e}");
            return;
        }
        for (id, pending) in batch.notices {
            self.notices.insert(id, pending);
        }
        for reason in batch.suppressed {
            self.hub.counters.suppress(reason);
        }
        for picked in batch.picked {
            let name = picked.name.clone();
            self.active.insert(picked.name, picked.active);
            self.finish_if_done(&name);
        }
    }

    /// Syncs a batch's notice files (then renames them in and syncs their folder once), then
    /// its `notices` marks.
    fn commit_picks(&self, batch: &mut PickBatch) -> io::Result<()> {
        if !batch.notice_files.is_empty() {
            let files: Vec<File> = batch
                .notice_files
                .iter_mut()
                .filter_map(|n| n.2.take())
                .collect();
            group_sync::sync_all(&files)
                .into_iter()
                .collect::<io::Result<()>>()?;
            for (tmp, path, _) in &batch.notice_files {
                fs::rename(tmp, path)?;
            }
        }
        if !batch.notices.is_empty() {
            sync_dir(&self.dir("notices"))?;
        }
        let marks = batch
            .picked
            .iter()
            .filter(|p| p.mark)
            .map(|p| group_sync::append(&self.dir("progress").join(&p.name), "notices\n"))
            .collect::<io::Result<Vec<File>>>()?;
        group_sync::sync_all(&marks).into_iter().collect()
    }

    fn pick_up(&self, name: String, batch: &mut PickBatch) -> io::Result<()> {
        let bytes = fs::read(self.dir("new").join(&name))
            .map_err(|e| io::Error::new(e.kind(), format!("{name}: {e}")))?;
        let stored = parse_stored(&bytes, &self.config.hostname, now_ms() / 1000);
        let progress_path = self.dir("progress").join(&name);
        let progress = match fs::read_to_string(&progress_path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io::Error::new(e.kind(), format!("{name}: {e}"))),
        };
        let done: Vec<usize> = progress
            .lines()
            .filter_map(|l| l.strip_prefix("done ")?.parse().ok())
            .collect();
        let decided = progress.lines().any(|l| l == "notices");
        let today = utc_day(now_ms());
        let srs = self.hub.state.read().srs.clone();
        let relay_from = match &srs {
            Some(srs) if !stored.mail_from.is_empty() => srs.forward(&stored.mail_from, today),
            _ => stored.mail_from.clone(),
        };
        if !decided {
            self.decide_notices(&name, &stored, today, batch)
                .map_err(|e| io::Error::new(e.kind(), format!("{name}: notice: {e}")))?;
        }
        let progress = (0..stored.targets.len())
            .map(|i| {
                if done.contains(&i) {
                    TargetState::Done
                } else {
                    TargetState::Due
                }
            })
            .collect();
        batch.picked.push(Picked {
            name,
            mark: !decided,
            active: Active {
                stored,
                progress,
                relay_from,
            },
        });
        Ok(())
    }

    /// Writes (unsynced, under a temporary name) the notice to claim for each target that may
    /// get one, or notes why not; [`Self::commit_picks`] syncs them.
    fn decide_notices(
        &self,
        name: &str,
        stored: &Stored,
        today: u32,
        batch: &mut PickBatch,
    ) -> io::Result<()> {
        let headers = notice::headers(&stored.data);
        let message_id = headers
            .iter()
            .find(|(n, _)| n == "message-id")
            .map(|(_, v)| v.clone());
        for (index, target) in stored.targets.iter().enumerate() {
            if target.srs_return || target.new.is_empty() {
                continue;
            }
            if let Err(why) = notice::check(&stored.mail_from, &headers) {
                batch.suppressed.push(why.reason());
                continue;
            }
            let id = format!("{name}.{index}");
            let claim = NoticeClaim {
                id: id.clone(),
                sender: stored.mail_from.to_ascii_lowercase(),
                recipient: target.old.to_ascii_lowercase(),
                day: today,
            };
            let path = self.dir("notices").join(&id);
            if !path.exists() {
                let text = format!(
                    "{}\n{}\n{}\n{}\n{}\n",
                    claim.sender,
                    claim.recipient,
                    target.new,
                    claim.day,
                    message_id.as_deref().unwrap_or("")
                );
                let tmp = self.dir("notices").join(format!(".{id}"));
                let mut file = File::create(&tmp)?;
                file.write_all(text.as_bytes())?;
                batch.notice_files.push((tmp, path, Some(file)));
            }
            batch.notices.push((
                id,
                PendingNotice {
                    claim,
                    new: target.new.clone(),
                    message_id: message_id.clone(),
                    claimed: false,
                    state: NoticeState::Claiming,
                },
            ));
        }
        Ok(())
    }
}
