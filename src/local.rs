//! `campaign launch --local N`: an embedded farm in one process, for newcomers, demos and
//! benchmarks. It is the real thing in miniature: a coordinator and N smurfs talking QUIC with
//! mutual TLS over loopback, with throwaway certificates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use mailfarm_coordinator::{load_campaign_dir, Coordinator, CoordinatorSettings};
use mailfarm_pki::{FarmFiles, Identity};
use mailfarm_smurf::inbound::capture::CaptureServer;
use mailfarm_smurf::{run_smurf, DeliverySettings, SmurfSettings};

use crate::cli::report_rejects;
use crate::progress::{print_summary, Follower};

/// Runs a campaign on an embedded farm of `smurfs` nodes.
pub async fn launch_local(
    dir: &Path,
    smurfs: u32,
    capture: Option<PathBuf>,
    relay: Option<String>,
) -> anyhow::Result<ExitCode> {
    if smurfs == 0 {
        anyhow::bail!("--local needs at least 1 smurf");
    }
    let submission = load_campaign_dir(dir)?;
    let farm_dir = tempfile::tempdir().context("creating a temporary farm folder")?;
    let names: Vec<String> = (1..=smurfs).map(|i| format!("local-{i}")).collect();
    mailfarm_pki::init_farm(farm_dir.path(), &names, &[]).context("creating local certificates")?;
    let coordinator = Coordinator::bind(CoordinatorSettings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        identity: Identity::load(&FarmFiles::in_dir(farm_dir.path(), "coordinator"))?,
        verp_key: mailfarm_pki::load_secret(&farm_dir.path().join("verp.key"))?,
        batch_size: 128,
    })?;
    let coordinator_addr = coordinator.local_addr()?;
    let handle = coordinator.handle();
    let (stop_coordinator, coordinator_stopped) = tokio::sync::oneshot::channel::<()>();
    let coordinator_task = tokio::spawn(coordinator.run(async {
        let _ = coordinator_stopped.await;
    }));

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
            eprintln!("capturing messages into {} (SMTP receiver on {addr})", out.display());
            capture_task = Some(tokio::spawn(server.run(async {
                let _ = capture_stopped.await;
            })));
            Some(addr.to_string())
        }
        (None, relay) => relay,
    };

    let (stop_smurfs, smurf_shutdown) = tokio::sync::watch::channel(false);
    let mut smurf_tasks = Vec::new();
    for name in &names {
        let mut delivery = DeliverySettings::new(format!("{name}.mailfarm.invalid"));
        delivery.relay_override = relay_override.clone();
        let settings = SmurfSettings {
            node: name.clone(),
            coordinator: coordinator_addr,
            identity: Identity::load(&FarmFiles::in_dir(farm_dir.path(), name))?,
            window: 512,
            delivery,
        };
        smurf_tasks.push(tokio::spawn(run_smurf(settings, smurf_shutdown.clone())));
    }

    let id = submission.id.clone();
    let launched = handle.launch(submission)?;
    let rejects: Vec<String> = launched.rejects.iter().map(ToString::to_string).collect();
    report_rejects(&rejects, launched.counters.rejected_rows);
    let mut follower = Follower::new(launched.counters.total);
    let counters = loop {
        let Some(counters) = handle.farm().counters(&id) else {
            anyhow::bail!("campaign {id} vanished");
        };
        follower.update(&counters);
        if counters.finished {
            break counters;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    follower.finish();
    print_summary(&counters, &handle.farm().top_reasons(&id, 5));

    let _ = stop_smurfs.send(true);
    for task in smurf_tasks {
        if let Ok(Err(e)) = task.await {
            tracing::warn!("smurf ended with an error: {e:#}");
        }
    }
    let _ = stop_coordinator.send(());
    let _ = coordinator_task.await;
    let _ = stop_capture.send(());
    if let Some(task) = capture_task {
        let _ = task.await;
    }
    Ok(ExitCode::SUCCESS)
}
