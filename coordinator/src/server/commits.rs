//! Group commit of results frames. Every smurf link hands its results frames to one committer
//! thread instead of committing each frame itself: while a transaction is being committed
//! (and fsynced), and for the rest of [`MIN_COMMIT_SPACING`] after it started, the frames
//! that arrive from every link queue up, and the next transaction takes them all, so many
//! frames share one fsync. A link acknowledges a frame
//! (`ResultsCommitted`) only when the transaction holding it is durable, and in the order it
//! sent the frames, so the smurf's "oldest unacknowledged first" bookkeeping still holds.
//!
//! Why a thread: a commit blocks on the disk; the links keep reading frames and leasing work
//! meanwhile, which is where the gain is (before, a link stopped for every fsync).

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use mailfarm_protocol::RecipientResult;
use tokio::sync::{mpsc, oneshot};

use super::Shared;
use crate::farm::ResultsFrame;

/// Most frames one transaction takes; the rest go into the next one.
const MAX_FRAMES_PER_COMMIT: usize = 256;
/// Shortest time from one commit's start to the next: a frame that arrives sooner waits for
/// the rest of it, gathering the frames that follow. An idle farm's first frame commits at
/// once; a busy one commits about this often, whatever the number of smurfs, and each commit
/// (a few page writes and an fsync, half a millisecond of kernel time on a virtual disk)
/// carries tens of results instead of a few.
const MIN_COMMIT_SPACING: std::time::Duration = std::time::Duration::from_millis(25);

/// What a link learns of its frame: attempts recorded, or why the store failed.
type Done = Result<usize, String>;

/// A frame and where to say it is durable.
struct Request {
    frame: ResultsFrame,
    done: oneshot::Sender<Done>,
}

/// The links' side of the committer thread.
pub(super) struct Committer {
    tx: mpsc::UnboundedSender<Request>,
}

impl Committer {
    /// A committer whose thread is started by [`Committer::start`] once `Shared` exists.
    pub(super) fn new() -> (Self, CommitterThread) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, CommitterThread { rx })
    }

    /// Queues a frame for the next transaction; the receiver fires once it is durable.
    fn submit(&self, frame: ResultsFrame) -> oneshot::Receiver<Done> {
        let (done, rx) = oneshot::channel();
        // A closed channel drops `done`: the receiver then reports the committer gone.
        let _ = self.tx.send(Request { frame, done });
        rx
    }
}

/// The receiving end, to be moved into the committer thread.
pub(super) struct CommitterThread {
    rx: mpsc::UnboundedReceiver<Request>,
}

impl CommitterThread {
    /// Starts the thread. It holds `shared` weakly, so the coordinator's state (and its
    /// database file) is released when the coordinator is dropped; the thread ends when the
    /// last [`Committer`] is gone.
    pub(super) fn start(self, shared: Weak<Shared>) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("results-commit".into())
            .spawn(move || run(self.rx, shared))
            .map(drop)
    }
}

/// Takes every queued frame (up to [`MAX_FRAMES_PER_COMMIT`]), commits them in one transaction,
/// writes the accounting log, then tells each link; again until the links are gone.
fn run(mut rx: mpsc::UnboundedReceiver<Request>, shared: Weak<Shared>) {
    let mut last_start: Option<std::time::Instant> = None;
    while let Some(first) = rx.blocking_recv() {
        if let Some(wait) = last_start.and_then(|t| MIN_COMMIT_SPACING.checked_sub(t.elapsed())) {
            std::thread::sleep(wait);
        }
        last_start = Some(std::time::Instant::now());
        let mut group = vec![first];
        while group.len() < MAX_FRAMES_PER_COMMIT {
            match rx.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        commit(&shared, group);
    }
}

fn commit(shared: &Arc<Shared>, group: Vec<Request>) {
    let (frames, waiting): (Vec<ResultsFrame>, Vec<_>) =
        group.into_iter().map(|r| (r.frame, r.done)).unzip();
    match shared.farm.apply_frames(&frames) {
        Ok(per_frame) => {
            for attempts in &per_frame {
                super::role_link::write_accounting(shared, attempts);
            }
            for (done, attempts) in waiting.into_iter().zip(per_frame) {
                let _ = done.send(Ok(attempts.len()));
            }
        }
        Err(e) => {
            let reason = format!("recording results: {e}");
            for done in waiting {
                let _ = done.send(Err(reason.clone()));
            }
        }
    }
}

/// One link's frames handed to the committer and not yet acknowledged, oldest first.
#[derive(Default)]
pub(super) struct PendingCommits {
    queue: VecDeque<oneshot::Receiver<Done>>,
}

impl PendingCommits {
    /// Hands a frame of live results to the committer.
    pub(super) fn live(
        &mut self,
        shared: &Shared,
        node: &str,
        results: Vec<RecipientResult>,
        frame_bytes: u64,
    ) {
        self.push(shared, node, results, frame_bytes, false);
    }

    /// Hands a frame of results from an earlier link to the committer.
    pub(super) fn late(&mut self, shared: &Shared, node: &str, results: Vec<RecipientResult>) {
        self.push(shared, node, results, 0, true);
    }

    fn push(
        &mut self,
        shared: &Shared,
        node: &str,
        results: Vec<RecipientResult>,
        frame_bytes: u64,
        late: bool,
    ) {
        let frame = ResultsFrame {
            node: node.to_owned(),
            results,
            frame_bytes,
            late,
        };
        self.queue.push_back(shared.commits.submit(frame));
    }

    /// Whether no frame waits for its commit.
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Waits until the oldest frame is durable and returns how many attempts it recorded;
    /// never returns while none waits. Cancel-safe: the frame stays queued until its commit is
    /// seen.
    pub(super) async fn next(&mut self) -> anyhow::Result<usize> {
        let Some(oldest) = self.queue.front_mut() else {
            return std::future::pending().await;
        };
        let done = oldest.await;
        self.queue.pop_front();
        match done {
            Ok(Ok(attempts)) => Ok(attempts),
            Ok(Err(reason)) => Err(anyhow::anyhow!(reason)),
            Err(_) => Err(anyhow::anyhow!("the results committer stopped")),
        }
    }
}
