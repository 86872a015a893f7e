//! The forwarding service of an `in` node: works through `forward/new` (what the MX stored,
//! synced before its 250) and relays each message to its new address through the smurf's
//! outbound engine (MX lookup, shaping, pooled sessions), with an SRS envelope sender; keeps
//! the notice outbox; and tells the coordinator what it forwarded.
//!
//! Durability, in `forward/` next to the maildir folders:
//! - `new/NAME`: the message, deleted only once every recipient was delivered or failed for
//!   good; a restart resumes what is left.
//! - `progress/NAME`: one line per recipient done (`done N`), and `notices` once the notice
//!   decisions were written, each synced before it counts, so a restart neither relays a
//!   recipient twice nor decides its notice twice.
//! - `notices/ID`: a notice to claim and send (sender, old and new address, day, Message-ID).
//!   Claiming again with the same ID after a restart gets the same answer from the coordinator,
//!   so a granted notice is neither lost nor sent twice. Deleted once sent, refused or failed.
//!
//! Deferred attempts are retried here on a schedule ([`RETRY_SCHEDULE`]), up to
//! [`MAX_AGE`]; then the recipient fails.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mailfarm_protocol::{
    DeliveryTarget, ForwardRecord, NoticeClaim, NoticeGrant, Outcome, RecipientData,
    RecipientResult, ShapingUpdate, TemplateBundle,
};
use tokio::sync::{mpsc, watch, Notify};
use tracing::{debug, info, warn};

use super::group_sync;
use super::notice::{self, Notice};
use super::stored::Stored;
use super::{now_ms, ForwardCounters, SharedForward};
use crate::delivery::{CompiledCampaign, DeliveryEngine, DeliverySettings, Job, RawMessage};

mod pickup;

/// Waits between attempts of a deferred relay or notice.
pub const RETRY_SCHEDULE: [Duration; 6] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(1800),
    Duration::from_secs(3600),
];
/// A recipient still deferred after this long fails.
pub const MAX_AGE: Duration = Duration::from_secs(5 * 24 * 3600);
/// Most stored messages worked on at once (the rest wait on disk).
const MAX_ACTIVE: usize = 4096;
/// Most messages (or results) whose files are synced together: bounds the files held open.
const GROUP: usize = 256;
/// How often `new/` is scanned when nothing wakes the service.
const SCAN_INTERVAL: Duration = Duration::from_millis(500);

/// What the service sends the coordinator (through the link).
#[derive(Debug)]
pub enum ForwardOut {
    /// Notices to grant.
    Claims(Vec<NoticeClaim>),
    /// Forwarded messages that reached their end.
    Records(Vec<ForwardRecord>),
}

/// What the link and the service share; lives as long as the process.
#[derive(Debug, Default)]
pub struct ForwardHub {
    /// Rules and SRS key (the MX reads them too).
    pub state: SharedForward,
    /// Live counters.
    pub counters: ForwardCounters,
    out: Mutex<Option<mpsc::UnboundedSender<ForwardOut>>>,
    grants: Mutex<Option<mpsc::UnboundedSender<Vec<NoticeGrant>>>>,
    /// A new link: unanswered claims go again.
    relink: Notify,
    /// The MX stored a message for forwarding.
    wake: Notify,
    /// The coordinator's latest shaping file and this node's share: the relays obey the same
    /// per-site limits as campaign mail (without it the engine keeps the built-in limits).
    shaping: Mutex<Option<ShapingUpdate>>,
    /// New shaping to apply.
    reshaped: Notify,
}

impl ForwardHub {
    /// Where the service's messages to the coordinator go (the link's side).
    pub fn connect(&self, out: mpsc::UnboundedSender<ForwardOut>) {
        *lock(&self.out) = Some(out);
    }

    /// The coordinator answered claims.
    pub fn grants(&self, grants: Vec<NoticeGrant>) {
        if let Some(tx) = lock(&self.grants).as_ref() {
            let _ = tx.send(grants);
        }
    }

    /// A new link to the coordinator: claims not answered on the old one go again.
    pub fn relinked(&self) {
        self.relink.notify_one();
    }

    /// The coordinator sent shaping rules: the forwarding engine applies them too.
    pub fn shaping(&self, update: ShapingUpdate) {
        *lock(&self.shaping) = Some(update);
        self.reshaped.notify_one();
    }

    /// The MX stored a message in `forward/new`.
    pub fn stored(&self) {
        self.wake.notify_one();
    }

    fn send(&self, out: ForwardOut) {
        if let Some(tx) = lock(&self.out).as_ref() {
            let _ = tx.send(out);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the service knows of one stored message.
struct Active {
    stored: Stored,
    /// Per target: done, or when to try next (and since when it was deferred).
    progress: Vec<TargetState>,
    relay_from: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum TargetState {
    Due,
    Sending,
    Retry {
        at: Instant,
        tries: usize,
        since: Instant,
    },
    Done,
}

/// A notice waiting for its grant or its delivery.
struct PendingNotice {
    claim: NoticeClaim,
    new: String,
    message_id: Option<String>,
    claimed: bool,
    state: NoticeState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum NoticeState {
    Claiming,
    Due,
    Sending,
    Retry { at: Instant, tries: usize },
}

enum JobRef {
    Forward { name: String, target: usize },
    Notice { id: String },
}

/// Settings of the service.
#[derive(Clone, Debug)]
pub struct ForwarderConfig {
    /// `forward/` of the MX's mail store.
    pub dir: PathBuf,
    /// The node's hostname (trace lines).
    pub hostname: String,
    /// The outbound engine's settings.
    pub delivery: DeliverySettings,
}

/// The service's state.
struct Forwarder {
    config: ForwarderConfig,
    hub: Arc<ForwardHub>,
    engine: DeliveryEngine,
    generation: u64,
    campaign: Arc<CompiledCampaign>,
    results: mpsc::UnboundedSender<RecipientResult>,
    active: HashMap<String, Active>,
    notices: HashMap<String, PendingNotice>,
    jobs: HashMap<u64, JobRef>,
    next_id: u64,
}

/// Runs the service until `stop` turns true.
pub async fn run(config: ForwarderConfig, hub: Arc<ForwardHub>, mut stop: watch::Receiver<bool>) {
    let campaign = match routing_campaign() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            warn!("forwarding cannot start: {e}");
            return;
        }
    };
    for sub in ["new", "progress", "notices"] {
        if let Err(e) = fs::create_dir_all(config.dir.join(sub)) {
            warn!(
                "forwarding cannot start: {}: {e}",
                config.dir.join(sub).display()
            );
            return;
        }
    }
    let (grants_tx, mut grants_rx) = mpsc::unbounded_channel();
    *lock(&hub.grants) = Some(grants_tx);
    let (results, mut results_rx) = mpsc::unbounded_channel();
    let mut engine = DeliveryEngine::new(config.delivery.clone());
    if let Some(update) = lock(&hub.shaping).clone() {
        engine.apply_shaping(update);
    }
    let generation = engine.next_generation();
    let mut f = Forwarder {
        config,
        hub: hub.clone(),
        engine,
        generation,
        campaign,
        results,
        active: HashMap::new(),
        notices: HashMap::new(),
        jobs: HashMap::new(),
        next_id: 1,
    };
    f.load_notices();
    let mut tick = tokio::time::interval(SCAN_INTERVAL);
    loop {
        f.scan();
        f.submit_due();
        f.claim();
        tokio::select! {
            Some(result) = results_rx.recv() => {
                let mut results = vec![result];
                loop {
                    while results.len() < GROUP {
                        let Ok(result) = results_rx.try_recv() else { break };
                        results.push(result);
                    }
                    let full = results.len() == GROUP;
                    f.on_results(std::mem::take(&mut results));
                    if !full {
                        break;
                    }
                }
            }
            Some(grants) = grants_rx.recv() => f.on_grants(grants),
            () = hub.wake.notified() => {}
            () = hub.reshaped.notified() => {
                if let Some(update) = lock(&hub.shaping).clone() {
                    f.engine.apply_shaping(update);
                }
            }
            () = hub.relink.notified() => {
                for n in f.notices.values_mut() {
                    n.claimed = false;
                }
            }
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    *lock(&hub.grants) = None;
    f.engine.shutdown().await;
}

/// The campaign forward and notice jobs route with: MX delivery (or the smurf's relay
/// override), no template of its own (raw jobs are never rendered).
fn routing_campaign() -> Result<CompiledCampaign, mailfarm_templates::TemplateError> {
    let bundle = TemplateBundle {
        hash: mailfarm_protocol::ContentHash([0; 32]),
        campaign_id: "forward".into(),
        subject: "forward".into(),
        text: "forward".into(),
        html: None,
        from: "postmaster@forward.invalid".into(),
        reply_to: None,
        list_id: "forward.invalid".into(),
        bounce_domain: "forward.invalid".into(),
        list_unsubscribe: None,
        field_names: vec!["email".into()],
        email_field: 0,
        verp_key: vec![0; 32],
        delivery: DeliveryTarget {
            relay: None,
            connections: 4,
        },
        unsubscribe_base_url: None,
    };
    let template = mailfarm_templates::compile_bundle(&bundle)?;
    Ok(CompiledCampaign { bundle, template })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Forwarder {
    fn dir(&self, sub: &str) -> PathBuf {
        self.config.dir.join(sub)
    }

    /// Loads the notice outbox after a start.
    fn load_notices(&mut self) {
        let Ok(entries) = fs::read_dir(self.dir("notices")) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(id) = entry.file_name().into_string() else {
                continue;
            };
            if id.starts_with('.') {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Ok(text) = fs::read_to_string(entry.path()) else {
                continue;
            };
            let lines: Vec<&str> = text.lines().collect();
            let (Some(sender), Some(recipient), Some(new), Some(day)) = (
                lines.first(),
                lines.get(1),
                lines.get(2),
                lines.get(3).and_then(|d| d.parse().ok()),
            ) else {
                warn!(notice = %id, "unreadable notice file: removed");
                let _ = fs::remove_file(entry.path());
                continue;
            };
            let message_id = lines
                .get(4)
                .filter(|m| !m.is_empty())
                .map(|m| m.to_string());
            self.notices.insert(
                id.clone(),
                PendingNotice {
                    claim: NoticeClaim {
                        id,
                        sender: sender.to_string(),
                        recipient: recipient.to_string(),
                        day,
                    },
                    new: new.to_string(),
                    message_id,
                    claimed: false,
                    state: NoticeState::Claiming,
                },
            );
        }
        if !self.notices.is_empty() {
            info!(
                count = self.notices.len(),
                "notices left from an earlier run"
            );
        }
    }

    /// Sends the claims not yet sent on this link.
    fn claim(&mut self) {
        let claims: Vec<NoticeClaim> = self
            .notices
            .values_mut()
            .filter(|n| n.state == NoticeState::Claiming && !n.claimed)
            .map(|n| {
                n.claimed = true;
                n.claim.clone()
            })
            .collect();
        for chunk in claims.chunks(512) {
            self.hub.send(ForwardOut::Claims(chunk.to_vec()));
        }
    }

    fn on_grants(&mut self, grants: Vec<NoticeGrant>) {
        for grant in grants {
            let Some(n) = self.notices.get_mut(&grant.id) else {
                continue;
            };
            if n.state != NoticeState::Claiming {
                continue;
            }
            match grant.decision.suppressed_reason() {
                None => n.state = NoticeState::Due,
                Some(reason) => {
                    self.hub.counters.suppress(reason);
                    self.drop_notice(&grant.id);
                }
            }
        }
    }

    fn drop_notice(&mut self, id: &str) {
        self.notices.remove(id);
        if let Err(e) = fs::remove_file(self.dir("notices").join(id)) {
            if e.kind() != io::ErrorKind::NotFound {
                warn!(notice = %id, "removing a notice file: {e}");
            }
        }
    }

    fn submit(&mut self, job: JobRef, raw: RawMessage) {
        let id = self.next_id;
        self.next_id += 1;
        self.jobs.insert(id, job);
        self.engine.submit(Job {
            generation: self.generation,
            campaign: self.campaign.clone(),
            recipient: RecipientData {
                id,
                values: vec![raw.rcpt_to.clone()],
            },
            results: self.results.clone(),
            held: Default::default(),
            raw: Some(Arc::new(raw)),
        });
    }

    /// Hands due relays and notices to the engine.
    fn submit_due(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        for (name, active) in &mut self.active {
            for (index, state) in active.progress.iter_mut().enumerate() {
                let ready = match *state {
                    TargetState::Due => true,
                    TargetState::Retry { at, .. } => at <= now,
                    _ => false,
                };
                if ready {
                    let target = &active.stored.targets[index];
                    if target.new.is_empty() {
                        continue;
                    }
                    let mail_from = if target.srs_return {
                        String::new()
                    } else {
                        active.relay_from.clone()
                    };
                    due.push((
                        name.clone(),
                        index,
                        RawMessage {
                            mail_from,
                            rcpt_to: target.new.clone(),
                            data: active.stored.data.clone(),
                        },
                    ));
                    if let TargetState::Retry { tries, since, .. } = *state {
                        *state = TargetState::Retry {
                            at: now + MAX_AGE,
                            tries,
                            since,
                        };
                    } else {
                        *state = TargetState::Sending;
                    }
                }
            }
        }
        for (name, target, raw) in due {
            self.submit(JobRef::Forward { name, target }, raw);
        }
        let notice_from = self.hub.state.read().table.settings().notice_from.clone();
        let mut notices = Vec::new();
        for (id, n) in &mut self.notices {
            let ready = match n.state {
                NoticeState::Due => true,
                NoticeState::Retry { at, .. } => at <= now,
                _ => false,
            };
            if !ready {
                continue;
            }
            let from = if notice_from.is_empty() {
                format!("postmaster@{}", self.config.hostname)
            } else {
                notice_from.clone()
            };
            let data = Notice {
                from: &from,
                to: &n.claim.sender,
                old: &n.claim.recipient,
                new: &n.new,
                in_reply_to: n.message_id.as_deref(),
                id,
                now_secs: now_ms() / 1000,
            }
            .render();
            if let NoticeState::Retry { tries, .. } = n.state {
                n.state = NoticeState::Retry {
                    at: now + MAX_AGE,
                    tries,
                };
            } else {
                n.state = NoticeState::Sending;
            }
            notices.push((
                id.clone(),
                RawMessage {
                    mail_from: String::new(),
                    rcpt_to: n.claim.sender.clone(),
                    data,
                },
            ));
        }
        for (id, raw) in notices {
            self.submit(JobRef::Notice { id }, raw);
        }
    }

    /// Takes a batch of results. The `done` lines of the relays that reached their end are
    /// written, then synced together (group commit); each one counts, is reported and may
    /// delete its message only after its own sync.
    fn on_results(&mut self, results: Vec<RecipientResult>) {
        let mut ended = Vec::new();
        for result in results {
            let Some(job) = self.jobs.remove(&result.id) else {
                continue;
            };
            match job {
                JobRef::Forward { name, target } => {
                    if let Some(outcome) = self.forward_outcome(&name, target, &result) {
                        ended.push((name, target, outcome, result));
                    }
                }
                JobRef::Notice { id } => self.notice_result(&id, &result),
            }
        }
        if ended.is_empty() {
            return;
        }
        let mut files = Vec::with_capacity(ended.len());
        let mut written = Vec::with_capacity(ended.len());
        for (name, index, _, _) in &ended {
            let path = self.dir("progress").join(name);
            match group_sync::append(&path, &format!("done {index}\n")) {
                Ok(file) => {
                    files.push(file);
                    written.push(true);
                }
                Err(e) => {
                    warn!(file = %name, "recording forward progress: {e}");
                    written.push(false);
                }
            }
        }
        let mut synced = group_sync::sync_all(&files).into_iter();
        let mut records = Vec::with_capacity(ended.len());
        for ((name, index, outcome, result), written) in ended.into_iter().zip(written) {
            let recorded = written
                && match synced.next() {
                    Some(Ok(())) => true,
                    Some(Err(e)) => {
                        warn!(file = %name, "syncing forward progress: {e}");
                        false
                    }
                    None => false,
                };
            if let Some(record) = self.forward_done(&name, index, outcome, &result, recorded) {
                records.push(record);
            }
        }
        if !records.is_empty() {
            self.hub.send(ForwardOut::Records(records));
        }
    }

    /// Handles a deferral (schedules the retry: `None`), or says how the relay ended.
    fn forward_outcome(
        &mut self,
        name: &str,
        index: usize,
        result: &RecipientResult,
    ) -> Option<&'static str> {
        let active = self.active.get_mut(name)?;
        let now = Instant::now();
        let state = &mut active.progress[index];
        match (result.outcome, *state) {
            (Outcome::Deferred, TargetState::Retry { tries, since, .. })
                if now.duration_since(since) < MAX_AGE =>
            {
                let wait = RETRY_SCHEDULE[tries.min(RETRY_SCHEDULE.len() - 1)];
                debug!(file = %name, "forward deferred: retry in {wait:?}: {}", result.text);
                *state = TargetState::Retry {
                    at: now + wait,
                    tries: tries + 1,
                    since,
                };
                None
            }
            (Outcome::Deferred, TargetState::Sending) => {
                *state = TargetState::Retry {
                    at: now + RETRY_SCHEDULE[0],
                    tries: 1,
                    since: now,
                };
                None
            }
            (Outcome::Delivered, _) => Some("delivered"),
            _ => Some("failed"),
        }
    }

    /// A relay ended: once its `done` line is synced (`recorded`), marks it done, counts it and
    /// returns its record; otherwise tries it again later rather than lose it.
    fn forward_done(
        &mut self,
        name: &str,
        index: usize,
        outcome: &str,
        result: &RecipientResult,
        recorded: bool,
    ) -> Option<ForwardRecord> {
        let active = self.active.get_mut(name)?;
        let now = Instant::now();
        let state = &mut active.progress[index];
        if !recorded {
            *state = TargetState::Retry {
                at: now + RETRY_SCHEDULE[0],
                tries: 1,
                since: now,
            };
            return None;
        }
        *state = TargetState::Done;
        let counters = &self.hub.counters;
        if outcome == "delivered" {
            counters.delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            warn!(file = %name, to = %active.stored.targets[index].new, "forward failed: {}", result.text);
        }
        let target = &active.stored.targets[index];
        let notice = if target.srs_return {
            "srs-return".to_owned()
        } else {
            match notice::check(
                &active.stored.mail_from,
                &notice::headers(&active.stored.data),
            ) {
                Ok(()) => "claimed".to_owned(),
                Err(why) => why.reason().to_owned(),
            }
        };
        let record = ForwardRecord {
            time_ms: now_ms(),
            mail_from: active.stored.mail_from.clone(),
            relay_from: if target.srs_return {
                String::new()
            } else {
                active.relay_from.clone()
            },
            old: target.old.clone(),
            new: target.new.clone(),
            outcome: outcome.to_owned(),
            reply: format!("{} {}", result.code, result.text),
            notice,
            stored_as: format!("forward/new/{name}"),
        };
        self.finish_if_done(name);
        Some(record)
    }

    /// Deletes a message whose every target is done.
    fn finish_if_done(&mut self, name: &str) {
        let done = self
            .active
            .get(name)
            .is_some_and(|a| a.progress.iter().all(|s| *s == TargetState::Done));
        if !done {
            return;
        }
        self.active.remove(name);
        for sub in ["new", "progress"] {
            if let Err(e) = fs::remove_file(self.dir(sub).join(name)) {
                if e.kind() != io::ErrorKind::NotFound {
                    warn!(file = %name, "removing a forwarded message: {e}");
                }
            }
        }
    }

    fn notice_result(&mut self, id: &str, result: &RecipientResult) {
        let Some(n) = self.notices.get_mut(id) else {
            return;
        };
        match result.outcome {
            Outcome::Delivered => {
                self.hub
                    .counters
                    .notices_sent
                    .fetch_add(1, Ordering::Relaxed);
                self.drop_notice(id);
            }
            Outcome::Deferred => {
                let tries = match n.state {
                    NoticeState::Retry { tries, .. } => tries,
                    _ => 0,
                };
                if tries >= RETRY_SCHEDULE.len() {
                    self.hub.counters.suppress("failed");
                    self.drop_notice(id);
                } else {
                    n.state = NoticeState::Retry {
                        at: Instant::now() + RETRY_SCHEDULE[tries],
                        tries: tries + 1,
                    };
                }
            }
            Outcome::Failed => {
                debug!(notice = %id, "notice failed: {}", result.text);
                self.hub.counters.suppress("failed");
                self.drop_notice(id);
            }
        }
    }
}
