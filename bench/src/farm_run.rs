//! The mailfarm side of the comparison: an embedded farm (a coordinator and K smurfs in this
//! process, real QUIC with mutual TLS over loopback) delivering the campaign into the sink;
//! and the rule every bench uses to declare a campaign stuck ([`Progress`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mailfarm::embedded::{EmbeddedFarm, EmbeddedOptions};
use mailfarm_protocol::{CampaignCounters, CampaignSubmission};

use crate::sys;

/// How often counters are read while the campaign runs.
const POLL: Duration = Duration::from_millis(100);
/// How long the smurfs get to join the coordinator before the campaign is launched.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
/// A campaign whose results stop moving for this long is declared stuck.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A campaign's progress while a bench follows it: stuck once its counters (attempts,
/// delivered, failed) stop moving for a minute.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Attempts + delivered + failed at the last change (`u64::MAX`: not seen yet).
    done: u64,
    /// When they last changed (or following began).
    since: Instant,
}

impl Progress {
    /// Starts following now.
    pub fn new() -> Self {
        Self {
            done: u64::MAX,
            since: Instant::now(),
        }
    }

    /// Notes campaign `id`'s counters (None: not seen this time); fails once they have not
    /// moved for a minute.
    pub fn check(&mut self, id: &str, counters: Option<&CampaignCounters>) -> anyhow::Result<()> {
        if let Some(c) = counters {
            let done = c.attempts + c.delivered + c.failed;
            if done != self.done {
                (self.done, self.since) = (done, Instant::now());
                return Ok(());
            }
        }
        if self.since.elapsed() > STALL_TIMEOUT {
            let counts = counters.map_or_else(String::new, |c| {
                format!(" ({} of {} delivered)", c.delivered, c.total)
            });
            bail!("campaign {id} made no progress for {STALL_TIMEOUT:?}{counts}");
        }
        Ok(())
    }
}

/// Farm shape.
#[derive(Clone, Debug)]
pub struct FarmShape {
    /// Number of smurfs.
    pub smurfs: u32,
    /// Credit window of each smurf (None: the embedded default).
    pub window: Option<u32>,
    /// Coordinator batch size (None: the embedded default).
    pub batch_size: Option<usize>,
    /// Where the coordinator keeps its state.
    pub state: StateStore,
}

/// Where the coordinator keeps its state.
#[derive(Clone, Debug)]
pub enum StateStore {
    /// In memory: no state folder, nothing written to disk.
    Memory,
    /// A state folder (`state.redb`, rejects reports, accounting log).
    Folder {
        /// The folder.
        dir: PathBuf,
        /// Commit every state change to disk (fsync) before acknowledging it.
        durable: bool,
    },
}

/// Where the smurfs deliver.
#[derive(Clone, Debug)]
pub enum Routing {
    /// Every campaign to this relay (`host:port`), whatever the campaign says.
    Relay(String),
    /// By MX lookup: the campaign's own relay setting decides (None: MX routing).
    Mx {
        /// Name server the smurfs ask.
        nameserver: SocketAddr,
        /// Port of every MX host.
        smtp_port: u16,
        /// The coordinator's shaping file text.
        shaping: String,
    },
}

/// What one mailfarm run measured.
pub struct FarmRun {
    /// Final campaign counters.
    pub counters: CampaignCounters,
    /// Time spent in the launch call (template compile, streaming CSV ingest); sending
    /// already runs meanwhile.
    pub ingest: Duration,
    /// The coordinator's campaign clock: from its creation in the launch call (before ingest)
    /// until the last result.
    pub wall: Duration,
    /// CPU time of this whole process (coordinator, smurfs, rendering) over `wall`.
    pub cpu: Duration,
    /// Resident set size right before the launch.
    pub rss_before_bytes: u64,
    /// Peak resident set size of this process (`VmHWM`) during the run (reset when it
    /// started, when the kernel allows).
    pub peak_rss_bytes: u64,
    /// Window and batch size actually used.
    pub window: u32,
    /// Coordinator batch size actually used.
    pub batch_size: usize,
    /// When the launch call started.
    pub launched: Instant,
    /// CPU time of this process when the launch call started.
    pub launch_cpu: Duration,
}

/// Runs `submission` with the recipients of `csv` on an embedded farm of `shape`, delivering
/// as `routing` says. The peak RSS is reset first (when the kernel allows), so runs in one process
/// each report their own peak.
pub fn run(
    shape: &FarmShape,
    routing: Routing,
    submission: CampaignSubmission,
    csv: Vec<u8>,
) -> anyhow::Result<FarmRun> {
    sys::reset_peak_rss();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(run_async(shape, routing, submission, csv));
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

/// The body of [`run`], inside a runtime (the peak RSS is not reset).
pub async fn run_async(
    shape: &FarmShape,
    routing: Routing,
    submission: CampaignSubmission,
    csv: Vec<u8>,
) -> anyhow::Result<FarmRun> {
    let (farm, window, batch_size) = start(shape, routing).await?;
    let outcome = drive(&farm, shape.smurfs, submission, csv).await;
    farm.shutdown().await;
    let (counters, ingest, wall, cpu, rss_before_bytes, (launched, launch_cpu)) = outcome?;
    Ok(FarmRun {
        counters,
        ingest,
        wall,
        cpu,
        rss_before_bytes,
        peak_rss_bytes: sys::self_status_bytes("VmHWM:")?,
        window,
        batch_size,
        launched,
        launch_cpu,
    })
}

/// Starts an embedded farm of `shape` delivering as `routing` says; returns it with the
/// window and batch size it uses.
pub async fn start(
    shape: &FarmShape,
    routing: Routing,
) -> anyhow::Result<(EmbeddedFarm, u32, usize)> {
    let mut options = EmbeddedOptions::new(shape.smurfs);
    match routing {
        Routing::Relay(relay) => options.relay_override = Some(relay),
        Routing::Mx {
            nameserver,
            smtp_port,
            shaping,
        } => {
            options.nameserver = Some(nameserver);
            options.smtp_port = smtp_port;
            options.shaping = shaping;
        }
    }
    if let Some(window) = shape.window {
        options.window = window;
    }
    if let Some(batch_size) = shape.batch_size {
        options.batch_size = batch_size;
    }
    match &shape.state {
        StateStore::Memory => options.state_dir = None,
        StateStore::Folder { dir, durable } => {
            options.state_dir = Some(dir.clone());
            options.durable = *durable;
        }
    }
    let (window, batch_size) = (options.window, options.batch_size);
    let farm = EmbeddedFarm::start(options)
        .await
        .context("starting the embedded farm")?;
    Ok((farm, window, batch_size))
}

/// Waits until `smurfs` smurfs have joined the coordinator.
pub async fn wait_joined(farm: &EmbeddedFarm, smurfs: u32) -> anyhow::Result<()> {
    let handle = farm.handle();
    let joined_by = Instant::now() + JOIN_TIMEOUT;
    while handle.farm().smurfs().len() < smurfs as usize {
        if Instant::now() > joined_by {
            bail!(
                "only {} of {smurfs} smurfs joined the coordinator within {JOIN_TIMEOUT:?}",
                handle.farm().smurfs().len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Counters, ingest time, wall time, CPU time, RSS before launch, and the launch instant with
/// the process CPU time then.
type Measured = (
    CampaignCounters,
    Duration,
    Duration,
    Duration,
    u64,
    (Instant, Duration),
);

/// Waits for every smurf to join, launches the campaign and follows it to the end.
async fn drive(
    farm: &EmbeddedFarm,
    smurfs: u32,
    submission: CampaignSubmission,
    csv: Vec<u8>,
) -> anyhow::Result<Measured> {
    let handle = farm.handle();
    wait_joined(farm, smurfs).await?;
    let rss_before_bytes = sys::self_status_bytes("VmRSS:")?;
    let id = submission.id.clone();
    let cpu_before = sys::usage(libc::RUSAGE_SELF)?.cpu;
    let started = Instant::now();
    let launched = handle
        .launch(submission, std::io::Cursor::new(csv))
        .await
        .context("launching the campaign")?;
    let ingest = started.elapsed();
    if launched.counters.rejected_rows > 0 {
        bail!(
            "{} recipient rows were rejected at ingest (first: {})",
            launched.counters.rejected_rows,
            launched
                .rejects
                .first()
                .map(ToString::to_string)
                .unwrap_or_default()
        );
    }
    let mut progress = Progress::new();
    let counters = loop {
        let counters = handle
            .farm()
            .counters(&id)
            .with_context(|| format!("campaign {id} vanished"))?;
        if counters.finished {
            break counters;
        }
        progress.check(&id, Some(&counters))?;
        tokio::time::sleep(POLL).await;
    };
    let cpu = sys::usage(libc::RUSAGE_SELF)?
        .cpu
        .saturating_sub(cpu_before);
    let wall = Duration::from_millis(counters.elapsed_ms).max(ingest);
    Ok((
        counters,
        ingest,
        wall,
        cpu,
        rss_before_bytes,
        (started, cpu_before),
    ))
}
