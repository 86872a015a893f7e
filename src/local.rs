//! `campaign launch --local N`: a campaign on an embedded farm, optionally delivering into an
//! in-process capture receiver so a newcomer can open the messages as files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use mailfarm::embedded::{EmbeddedFarm, EmbeddedOptions};
use mailfarm_coordinator::farm::now_ms;
use mailfarm_coordinator::{load_campaign_dir, CoordinatorHandle};
use mailfarm_protocol::CampaignSubmission;
use mailfarm_smurf::inbound::capture::CaptureServer;

use crate::progress::{print_launched, print_summary, Follower, Standing};

/// How often the note on a campaign that only waits for retries is repeated unchanged.
const WAITING_NOTE_EVERY: Duration = Duration::from_secs(30);

/// Runs a campaign on an embedded farm of `smurfs` nodes; with `json`, what it prints on stdout
/// is JSON events (see [`crate::progress`]).
pub async fn launch_local(
    dir: &Path,
    smurfs: u32,
    capture: Option<PathBuf>,
    relay: Option<String>,
    start_at_ms: Option<u64>,
    rate: Option<mailfarm_protocol::Rate>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (mut submission, csv_path) = load_campaign_dir(dir)?;
    submission.start_at_ms = start_at_ms;
    submission.rate_cap = rate;
    let csv = std::fs::File::open(&csv_path)
        .with_context(|| format!("opening {}", csv_path.display()))?;
    let (stop_capture, capture_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut capture_task = None;
    let relay_override = match (capture, relay) {
        (Some(out), _) => {
            std::fs::create_dir_all(&out)
                .with_context(|| format!("creating the capture folder {}", out.display()))?;
            let server = CaptureServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), out.clone())
                .await
                .context("starting the capture SMTP receiver")?;
            let addr = server.local_addr();
            eprintln!(
                "capturing messages into {} (SMTP receiver on {addr})",
                out.display()
            );
            capture_task = Some(tokio::spawn(server.run(async {
                let _ = capture_stopped.await;
            })));
            Some(addr.to_string())
        }
        (None, relay) => relay,
    };
    let mut options = EmbeddedOptions::new(smurfs);
    options.relay_override = relay_override;
    let farm = EmbeddedFarm::start(options).await?;
    let handle = farm.handle().clone();
    // Whatever happens, the smurfs are stopped before the coordinator: a failed launch prints
    // its error and nothing else (no smurf retrying against a closing endpoint).
    let outcome = follow(&handle, submission, csv, json).await;
    farm.shutdown().await;
    let _ = stop_capture.send(());
    if let Some(task) = capture_task {
        let _ = task.await;
    }
    outcome
}

/// Launches the campaign on the embedded coordinator and follows it to the end.
async fn follow(
    handle: &CoordinatorHandle,
    submission: CampaignSubmission,
    csv: std::fs::File,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let id = submission.id.clone();
    let launched = handle
        .launch(submission, std::io::BufReader::new(csv))
        .await?;
    let rejects: Vec<String> = launched.rejects.iter().map(ToString::to_string).collect();
    let rejects_file = launched
        .rejects_file
        .as_ref()
        .map(|p| p.display().to_string());
    print_launched(
        &launched.counters,
        &rejects,
        rejects_file.as_deref(),
        json,
        false,
    )?;
    let mut follower = Follower::new(launched.counters.total, json);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    // The last waiting note: (deferred, next retry) and when it was printed.
    let mut noted: Option<((u64, Option<u64>), Instant)> = None;
    let counters = loop {
        let Some(counters) = handle.farm().counters(&id) else {
            anyhow::bail!("campaign {id} vanished");
        };
        follower.update(&counters)?;
        if counters.finished {
            break counters;
        }
        let next_retry = || handle.farm().next_retry_at();
        if counters.deferred > 0 && counters.in_flight == 0 && counters.queued == 0 {
            let key = (counters.deferred, next_retry());
            if noted.is_none_or(|(k, at)| k != key || at.elapsed() >= WAITING_NOTE_EVERY) {
                let reasons = handle.farm().top_reasons(&id, 3);
                let standing = Standing {
                    counters: &counters,
                    reasons: &reasons,
                    next_retry_ms: key.1,
                    now_ms: now_ms(),
                };
                follower.waiting(&standing)?;
                noted = Some((key, Instant::now()));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = &mut interrupted => {
                let reasons = handle.farm().top_reasons(&id, 5);
                let standing = Standing {
                    counters: &counters,
                    reasons: &reasons,
                    next_retry_ms: next_retry(),
                    now_ms: now_ms(),
                };
                follower.interrupted(&standing)?;
                return Ok(ExitCode::from(130));
            }
        }
    };
    follower.finish();
    print_summary(&counters, Some(&handle.farm().top_reasons(&id, 5)), json)?;
    Ok(ExitCode::SUCCESS)
}
