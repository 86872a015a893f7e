//! Command-line surface: argument parsing and the commands that talk to a running farm.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use mailfarm_coordinator::{load_campaign_dir, Coordinator, CoordinatorConfig, OperatorClient};
use mailfarm_pki::{FarmFiles, Identity};
use mailfarm_protocol::{CampaignCounters, OperatorRequest, OperatorResponse};
use mailfarm_smurf::{run_smurf, SmurfConfig};

use crate::progress::{print_summary, Follower};

/// mailfarm: a bulk mail engine. A coordinator ships each campaign's template once to a farm of
/// sender nodes ("smurfs") and then streams only per-recipient data to them over mutually
/// authenticated QUIC; every smurf renders and sends each message itself.
#[derive(Parser, Debug)]
#[command(name = "mailfarm", version, propagate_version = true)]
#[command(
    after_help = "First run: mailfarm campaign launch examples/newsletter --local 2 --capture outbox\n\
    (an embedded farm of 2 smurfs; messages land as .eml files in ./outbox)"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Manage the farm's certificate authority and node certificates.
    #[command(subcommand)]
    Farm(FarmCommand),
    /// Run the coordinator daemon.
    Coordinator {
        /// Config file (see `farm init`, which writes one).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a sender node (smurf) daemon.
    Smurf {
        /// Config file (see `farm init`, which writes one per smurf).
        #[arg(long, short)]
        config: PathBuf,
        /// Coordinator address, overriding the config file.
        #[arg(long)]
        coordinator: Option<SocketAddr>,
    },
    /// Launch and follow campaigns.
    #[command(subcommand)]
    Campaign(CampaignCommand),
}

#[derive(Subcommand, Debug)]
enum FarmCommand {
    /// Create a farm CA, certificates for the coordinator, each smurf and an operator, a VERP
    /// signing key, and ready-to-use config files. Never overwrites an existing key: re-run
    /// with a larger --smurfs to add nodes.
    Init {
        /// Folder for the farm's files (created if missing).
        dir: PathBuf,
        /// Number of smurf certificates (smurf-1 ... smurf-N).
        #[arg(long, default_value_t = 2)]
        smurfs: u32,
        /// Operator certificate name.
        #[arg(long, default_value = "operator")]
        operator: String,
        /// QUIC address written into the generated configs.
        #[arg(long, default_value = "127.0.0.1:4433")]
        listen: SocketAddr,
    },
}

/// How the CLI reaches a running coordinator.
#[derive(Args, Debug, Clone)]
struct Remote {
    /// Coordinator QUIC address.
    #[arg(long, default_value = "127.0.0.1:4433", env = "MAILFARM_COORDINATOR")]
    coordinator: SocketAddr,
    /// Farm folder holding ca.pem and the operator certificate.
    #[arg(long, default_value = "farm", env = "MAILFARM_FARM")]
    farm: PathBuf,
    /// Operator certificate name.
    #[arg(long, default_value = "operator")]
    operator: String,
}

#[derive(Subcommand, Debug)]
enum CampaignCommand {
    /// Launch the campaign in a folder (campaign.toml, body.txt.hbs, optional body.html.hbs,
    /// recipients.csv) and follow it to the end.
    Launch {
        /// The campaign folder.
        dir: PathBuf,
        /// Run an embedded coordinator and N in-process smurfs instead of using a running farm.
        #[arg(long, value_name = "N")]
        local: Option<u32>,
        /// With --local: deliver to an in-process SMTP receiver that writes each message as a
        /// .eml file in this folder, instead of the campaign's relay.
        #[arg(long, value_name = "DIR", requires = "local")]
        capture: Option<PathBuf>,
        /// With --local: deliver to this relay (host:port) instead of the campaign's.
        #[arg(
            long,
            value_name = "HOST:PORT",
            requires = "local",
            conflicts_with = "capture"
        )]
        relay: Option<String>,
        /// Return right after the launch instead of following progress (remote farm only).
        #[arg(long, conflicts_with = "local")]
        detach: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a campaign's counters.
    Status {
        /// Campaign id.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// List every campaign on the coordinator.
    List {
        #[command(flatten)]
        remote: Remote,
    },
}

impl Cli {
    /// Whether the command is a long-running daemon (logs at info by default).
    pub fn is_daemon(&self) -> bool {
        matches!(
            self.command,
            Command::Coordinator { .. } | Command::Smurf { .. }
        )
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Farm(FarmCommand::Init {
            dir,
            smurfs,
            operator,
            listen,
        }) => farm_init(&dir, smurfs, &operator, listen),
        Command::Coordinator { config } => run_coordinator(&config).await,
        Command::Smurf {
            config,
            coordinator,
        } => run_smurf_daemon(&config, coordinator).await,
        Command::Campaign(CampaignCommand::Launch {
            dir,
            local: Some(smurfs),
            capture,
            relay,
            ..
        }) => crate::local::launch_local(&dir, smurfs, capture, relay).await,
        Command::Campaign(CampaignCommand::Launch {
            dir,
            local: None,
            detach,
            remote,
            ..
        }) => launch_remote(&dir, detach, &remote).await,
        Command::Campaign(CampaignCommand::Status { id, remote }) => {
            let mut client = connect(&remote).await?;
            let response = client
                .request(&OperatorRequest::Status { campaign_id: id })
                .await?;
            client.close().await;
            print_counters(response)
        }
        Command::Campaign(CampaignCommand::List { remote }) => {
            let mut client = connect(&remote).await?;
            let response = client.request(&OperatorRequest::List).await?;
            client.close().await;
            print_counters(response)
        }
    }
}

fn farm_init(
    dir: &Path,
    smurfs: u32,
    operator: &str,
    listen: SocketAddr,
) -> anyhow::Result<ExitCode> {
    let names: Vec<String> = (1..=smurfs).map(|i| format!("smurf-{i}")).collect();
    let report = mailfarm_pki::init_farm(dir, &names, &[operator.to_owned()])
        .with_context(|| format!("initialising the farm in {}", dir.display()))?;
    let mut configs = vec![(
        dir.join("coordinator.toml"),
        format!(
            "# mailfarm coordinator\nlisten = \"{listen}\"\nfarm_dir = \".\"\nbatch_size = 128\n"
        ),
    )];
    for name in &names {
        configs.push((
            dir.join(format!("{name}.toml")),
            format!(
                "# mailfarm smurf\nnode = \"{name}\"\ncoordinator = \"{listen}\"\nfarm_dir = \".\"\n\
                 window = 512\nstate_dir = \"state/{name}\"\n# helo_name = \"{name}.example.net\"\n"
            ),
        ));
    }
    for (path, text) in configs {
        if path.exists() {
            println!("kept     {}", path.display());
        } else {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            println!("created  {}", path.display());
        }
    }
    for path in &report.created {
        println!("created  {}", path.display());
    }
    for path in &report.kept {
        println!("kept     {}", path.display());
    }
    println!(
        "\nNext: mailfarm coordinator --config {0}/coordinator.toml\n      mailfarm smurf --config {0}/smurf-1.toml\n      mailfarm campaign launch CAMPAIGN_DIR --farm {0}",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn run_coordinator(config: &Path) -> anyhow::Result<ExitCode> {
    let config = CoordinatorConfig::load(config)?;
    let coordinator = Coordinator::bind(config.settings()?)?;
    // Machine-readable readiness line (the bound port matters when listen uses port 0).
    println!(
        "mailfarm coordinator listening on {}",
        coordinator.local_addr()?
    );
    coordinator.run(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn run_smurf_daemon(
    config: &Path,
    coordinator: Option<SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let config = SmurfConfig::load(config)?;
    let mut settings = config.settings()?;
    if let Some(addr) = coordinator {
        settings.coordinator = addr;
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    run_smurf(settings, rx).await?;
    Ok(ExitCode::SUCCESS)
}

async fn connect(remote: &Remote) -> anyhow::Result<OperatorClient> {
    let identity = Identity::load(&FarmFiles::in_dir(&remote.farm, &remote.operator))
        .with_context(|| {
            format!(
                "loading the operator certificate {:?} from {} (use --farm)",
                remote.operator,
                remote.farm.display()
            )
        })?;
    OperatorClient::connect(remote.coordinator, &identity, &remote.operator).await
}

async fn launch_remote(dir: &Path, detach: bool, remote: &Remote) -> anyhow::Result<ExitCode> {
    let submission = load_campaign_dir(dir)?;
    let id = submission.id.clone();
    let mut client = connect(remote).await?;
    let response = client
        .request(&OperatorRequest::Launch(Box::new(submission)))
        .await?;
    let counters = match response {
        OperatorResponse::Launched { counters, rejects } => {
            report_rejects(&rejects, counters.rejected_rows);
            counters
        }
        OperatorResponse::Error { message } => bail!("launch refused: {message}"),
        other => bail!("unexpected answer from the coordinator: {other:?}"),
    };
    println!("launched campaign {id}: {} recipients", counters.total);
    if detach {
        client.close().await;
        return Ok(ExitCode::SUCCESS);
    }
    let mut follower = Follower::new(counters.total);
    let last = loop {
        let response = client
            .request(&OperatorRequest::Status {
                campaign_id: id.clone(),
            })
            .await?;
        let OperatorResponse::Status(mut list) = response else {
            bail!("unexpected answer from the coordinator: {response:?}");
        };
        let Some(counters) = list.pop() else {
            bail!("campaign {id} vanished from the coordinator");
        };
        follower.update(&counters);
        if counters.finished {
            break counters;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    follower.finish();
    client.close().await;
    print_summary(&last, &[]);
    Ok(ExitCode::SUCCESS)
}

/// Prints the first rejected rows of an ingest.
pub fn report_rejects(rejects: &[String], total: u64) {
    if total == 0 {
        return;
    }
    eprintln!("{total} recipient rows set aside:");
    for line in rejects.iter().take(20) {
        eprintln!("  {line}");
    }
    if total > 20 {
        eprintln!("  ... and {} more", total - 20);
    }
}

fn print_counters(response: OperatorResponse) -> anyhow::Result<ExitCode> {
    match response {
        OperatorResponse::Status(list) => {
            if list.is_empty() {
                println!("no campaigns");
            }
            for c in &list {
                print_status_line(c);
            }
            Ok(ExitCode::SUCCESS)
        }
        OperatorResponse::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from the coordinator: {other:?}"),
    }
}

fn print_status_line(c: &CampaignCounters) {
    println!(
        "{id}: {state}  total {total}  queued {queued}  in-flight {in_flight}  delivered {delivered}  \
         deferred {deferred}  failed {failed}  rejected-rows {rejected}  elapsed {secs:.1}s  \
         template-shipments {shipments}  wire-bytes {wire}  rendered-bytes {rendered}",
        id = c.id,
        state = if c.finished { "finished" } else { "running" },
        total = c.total,
        queued = c.queued,
        in_flight = c.in_flight,
        delivered = c.delivered,
        deferred = c.deferred,
        failed = c.failed,
        rejected = c.rejected_rows,
        secs = c.elapsed_ms as f64 / 1000.0,
        shipments = c.template_shipments,
        wire = c.wire_bytes + c.template_bytes,
        rendered = c.rendered_bytes,
    );
}
