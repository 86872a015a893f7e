//! Command-line surface: argument parsing and the commands that talk to a running farm.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use mailfarm_coordinator::{Coordinator, CoordinatorConfig};
use mailfarm_protocol::{NodeRole, OperatorRequest};
use mailfarm_smurf::{run_smurf, SmurfConfig};

/// `mailfarm --version`: the version, then which library makes this build's RSA DKIM
/// signatures (an operator checking a release build should not have to guess).
const LONG_VERSION: &str = if cfg!(feature = "openssl-dkim") {
    concat!(
        env!("CARGO_PKG_VERSION"),
        "\nDKIM RSA signatures: OpenSSL (built with the openssl-dkim feature)"
    )
} else {
    concat!(
        env!("CARGO_PKG_VERSION"),
        "\nDKIM RSA signatures: ring (build with --features openssl-dkim for OpenSSL's, about twice as fast)"
    )
};

/// mailfarm: a bulk mail engine. A coordinator ships each campaign's template once to a farm of
/// sender nodes ("smurfs") and then streams only per-recipient data to them over mutually
/// authenticated QUIC; every smurf renders and sends each message itself.
#[derive(Parser, Debug)]
#[command(name = "mailfarm", version, long_version = LONG_VERSION, propagate_version = true)]
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
    /// Set up and run the farm: certificates and configs (init), nodes and their roles
    /// (nodes, assign, drain, undrain), live counters (watch), throttled sites (sites), and
    /// addresses never to be sent to again (suppress).
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
    /// Forward mail of moved addresses to their new address, with a change-of-address notice
    /// to the sender (at most one per sender and address per day): add, remove, list, import.
    /// Rules reach every `in` node at once. See docs/forwarding.md.
    #[command(subcommand)]
    Forward(crate::forward_cmd::ForwardCommand),
    /// Run a fault-injecting SMTP sink, to try a farm against misbehaving servers.
    Sink(crate::sink::SinkArgs),
    /// Look into bounce messages (see `bounce inspect --help`).
    #[command(subcommand)]
    Bounce(crate::bounce_inspect::BounceCommand),
    /// Write the man pages (one per command and subcommand) into a folder, e.g.
    /// `mailfarm man --out /usr/local/share/man/man1` to install them for `man mailfarm`.
    Man {
        /// Folder for the pages (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
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
    /// List the farm's nodes: role (out, in, bounce, web), state (starting, active, draining,
    /// idle), load, version, and the address each serves in its role.
    Nodes {
        /// Print JSON (one array of nodes) for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Move a running node to another role without restarting it: out (send campaigns), in
    /// (inbound SMTP for bounces, postmaster and replies), bounce (bounce processing) or web
    /// (unsubscribe pages, dashboard). Leaving `out`, the node hands back the recipients it has
    /// queued (other `out` nodes send them at once) and finishes the messages it is sending.
    /// The assignment is durable: the node gets it back after any restart.
    ///
    /// Example, after a campaign's burst: `mailfarm farm assign smurf-2 in`, later
    /// `mailfarm farm assign smurf-2 out`.
    Assign {
        /// Node name (e.g. smurf-2).
        node: String,
        /// The new role: out, in, bounce or web.
        role: NodeRole,
        /// Allow taking away the last `out` node while a campaign is sending (it then stops).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Watch the whole farm live, every second: nodes with role and state, inbound mail
    /// (received, kept, to bounce processing, refused by reason) and campaign totals.
    Watch {
        /// Print one JSON object per second instead of a table.
        #[arg(long)]
        json: bool,
        /// Stop after this many updates (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List the sites that throttled the farm: configured and learnt rate and connections
    /// (farm-wide), throttling replies, the last one.
    Sites {
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop giving work to a smurf; it finishes what it holds, then `farm nodes` shows it idle
    /// and it can be stopped, upgraded and started again with nothing lost.
    Drain {
        /// Node name (e.g. smurf-1).
        node: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Give work to a drained smurf again.
    Undrain {
        /// Node name.
        node: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Add an address to the suppression list: later campaigns skip it (and count it).
    Suppress {
        /// The address.
        address: String,
        /// Why, for reports.
        #[arg(long, default_value = "operator request")]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// How the CLI reaches a running coordinator.
#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// Coordinator QUIC address.
    #[arg(long, default_value = "127.0.0.1:4433", env = "MAILFARM_COORDINATOR")]
    pub coordinator: SocketAddr,
    /// Farm folder holding ca.pem and the operator certificate.
    #[arg(long, default_value = "farm", env = "MAILFARM_FARM")]
    pub farm: PathBuf,
    /// Operator certificate name.
    #[arg(long, default_value = "operator")]
    pub operator: String,
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
        /// Do not send before this time (UTC, e.g. 2026-11-27T08:00:00Z).
        #[arg(long, value_name = "TIME", conflicts_with = "start_in")]
        start_at: Option<String>,
        /// Do not send before this delay has passed (e.g. 30s, 10m, 2h).
        #[arg(long, value_name = "DURATION")]
        start_in: Option<String>,
        /// Most messages per period for this campaign across the farm (e.g. 100/s, 20000/h).
        #[arg(long, value_name = "RATE")]
        rate: Option<mailfarm_protocol::Rate>,
        /// Return right after the launch instead of following progress (remote farm only).
        #[arg(long, conflicts_with = "local")]
        detach: bool,
        /// Print JSON for scripts: one object per line on stdout, each the campaign's counters
        /// (as `campaign status --json` shows them) with an "event" field: "launched" (with
        /// "rejects", the first rows set aside), "progress" every second (with "done"),
        /// "waiting" and "interrupted" (--local, with "next_retry_ms" and "reasons"), and last
        /// "summary" (with "rate_per_second", the bytes per recipient and, with --local, the
        /// most frequent non-delivery "reasons" as [{"reason", "count"}]). With --detach, only
        /// "launched". Errors stay on stderr, exit codes are unchanged.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a campaign's counters.
    Status {
        /// Campaign id.
        id: String,
        /// Print JSON (an array with the campaign's counters) for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Follow a campaign live: counters and rates, every second, until it ends.
    Watch {
        /// Campaign id.
        id: String,
        /// Print JSON for scripts: one object per second on stdout, the campaign's counters as
        /// `campaign status --json` shows them, plus "delivered_per_second" and
        /// "attempts_per_second" (since the previous line), "bog_queued" (messages waiting in
        /// bogged sites, farm-wide) and "throttled_sites" (sites with a learnt rate or
        /// connection count, as `farm sites --json` shows them). The last line has
        /// "finished": true.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// List every campaign on the coordinator.
    List {
        /// Print JSON (an array of campaign counters) for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop sending a campaign (in-flight messages finish); `resume` continues it.
    Pause {
        /// Campaign id.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Continue a paused campaign.
    Resume {
        /// Campaign id.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Cancel a campaign: unsent recipients are skipped (in-flight messages finish).
    Cancel {
        /// Campaign id.
        id: String,
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
    use crate::remote;
    match cli.command {
        Command::Farm(FarmCommand::Init {
            dir,
            smurfs,
            operator,
            listen,
        }) => farm_init(&dir, smurfs, &operator, listen),
        Command::Farm(FarmCommand::Nodes { json, remote }) => {
            remote::simple(&remote, OperatorRequest::Nodes, json).await
        }
        Command::Farm(FarmCommand::Assign {
            node,
            role,
            force,
            remote,
        }) => {
            remote::simple(
                &remote,
                OperatorRequest::Assign { node, role, force },
                false,
            )
            .await
        }
        Command::Farm(FarmCommand::Watch {
            json,
            count,
            remote,
        }) => crate::farm_cmd::watch(&remote, json, count).await,
        Command::Farm(FarmCommand::Sites { json, remote }) => remote::sites(&remote, json).await,
        Command::Farm(FarmCommand::Drain { node, remote }) => {
            remote::simple(&remote, OperatorRequest::Drain { node }, false).await
        }
        Command::Farm(FarmCommand::Undrain { node, remote }) => {
            remote::simple(&remote, OperatorRequest::Undrain { node }, false).await
        }
        Command::Farm(FarmCommand::Suppress {
            address,
            reason,
            remote,
        }) => {
            remote::simple(
                &remote,
                OperatorRequest::Suppress { address, reason },
                false,
            )
            .await
        }
        Command::Forward(command) => crate::forward_cmd::run(command).await,
        Command::Coordinator { config } => run_coordinator(&config).await,
        Command::Sink(args) => crate::sink::run(args, shutdown_signal()).await,
        Command::Bounce(command) => crate::bounce_inspect::run(command),
        Command::Man { out } => crate::man::write_pages(&out),
        Command::Smurf {
            config,
            coordinator,
        } => run_smurf_daemon(&config, coordinator).await,
        Command::Campaign(CampaignCommand::Launch {
            dir,
            local,
            capture,
            relay,
            start_at,
            start_in,
            rate,
            detach,
            json,
            remote,
        }) => {
            let start_at_ms = remote::start_time(start_at.as_deref(), start_in.as_deref())?;
            match local {
                Some(smurfs) => {
                    crate::local::launch_local(
                        &dir,
                        smurfs,
                        capture,
                        relay,
                        start_at_ms,
                        rate,
                        json,
                    )
                    .await
                }
                None => remote::launch(&dir, detach, &remote, start_at_ms, rate, json).await,
            }
        }
        Command::Campaign(CampaignCommand::Status { id, json, remote }) => {
            remote::simple(&remote, OperatorRequest::Status { campaign_id: id }, json).await
        }
        Command::Campaign(CampaignCommand::List { json, remote }) => {
            remote::simple(&remote, OperatorRequest::List, json).await
        }
        Command::Campaign(CampaignCommand::Watch { id, json, remote }) => {
            remote::watch(&id, &remote, json).await
        }
        Command::Campaign(CampaignCommand::Pause { id, remote }) => {
            remote::simple(&remote, OperatorRequest::Pause { campaign_id: id }, false).await
        }
        Command::Campaign(CampaignCommand::Resume { id, remote }) => {
            remote::simple(&remote, OperatorRequest::Resume { campaign_id: id }, false).await
        }
        Command::Campaign(CampaignCommand::Cancel { id, remote }) => {
            remote::simple(&remote, OperatorRequest::Cancel { campaign_id: id }, false).await
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
            "# mailfarm coordinator\nlisten = \"{listen}\"\nfarm_dir = \".\"\n\
             state_dir = \"state/coordinator\"\nbatch_size = 128\n\
             # metrics_listen = \"127.0.0.1:9464\"\n\
             # retry_schedule = [\"5m\", \"10m\", \"30m\", \"1h\", \"2h\", \"4h\"]\n\
             # retry_max_age = \"3d\"\n"
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
    if let Some(secret) = &report.dashboard_secret {
        println!(
            "\nDashboard secret (shown once; only its argon2 hash is kept in {}):\n  {secret}",
            dir.join(mailfarm_pki::dashboard::DASHBOARD_HASH_FILE)
                .display()
        );
    }
    let helo = mailfarm_smurf::helo::default_helo_name("smurf-N");
    println!("\nsmurfs without helo_name greet receivers with EHLO {helo}");
    if let Some(problem) = mailfarm_smurf::helo::helo_name_problem(&helo) {
        eprintln!(
            "warning: EHLO {helo} will not do for direct MX delivery ({problem}): set helo_name \
             in each smurf's config to that host's public DNS name (relay delivery is unaffected)"
        );
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
    // The whole shaping file is checked here, every error listed with its line: a bad file
    // keeps the coordinator from starting instead of being refused by each smurf later.
    let config = CoordinatorConfig::load_checked(config, |text| {
        mailfarm_smurf::outbound::shaping::Shaping::parse(text)
            .map(drop)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    })?;
    let coordinator = Coordinator::bind(config.settings()?).await?;
    // Machine-readable readiness lines (the bound ports matter when listening on port 0).
    if let Some(addr) = coordinator.metrics_addr() {
        println!("mailfarm metrics on http://{addr}/metrics");
    }
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
    let helo = &settings.delivery.helo_name;
    if let Some(problem) = mailfarm_smurf::helo::helo_name_problem(helo) {
        tracing::warn!(
            "EHLO name {helo:?} will not do for direct MX delivery ({problem}): set helo_name in \
             the smurf's config to this host's public DNS name (relay delivery is unaffected)"
        );
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = tx.send(true);
    });
    run_smurf(settings, rx).await?;
    Ok(ExitCode::SUCCESS)
}
