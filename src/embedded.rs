//! An embedded farm: a coordinator and N smurfs in one process, talking real QUIC with mutual
//! TLS over loopback, with throwaway certificates. Used by `campaign launch --local`, by the
//! benchmarks and by tests.

use std::net::SocketAddr;

use anyhow::Context;
use mailfarm_coordinator::{Coordinator, CoordinatorHandle, CoordinatorSettings};
use mailfarm_pki::{FarmFiles, Identity};
use mailfarm_smurf::outbound::mx::ResolverSettings;
use mailfarm_smurf::{run_smurf, DeliverySettings, SmurfSettings};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Options of an embedded farm.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Number of smurfs (at least 1).
    pub smurfs: u32,
    /// Deliver every campaign here instead of its own relay.
    pub relay_override: Option<String>,
    /// Window of each smurf (default 512).
    pub window: u32,
    /// Batch size of the coordinator (default 128).
    pub batch_size: usize,
    /// Coordinator state folder (default none: state in memory).
    pub state_dir: Option<std::path::PathBuf>,
    /// Commit state changes to disk before acknowledging them (default true; only matters
    /// with a state folder).
    pub durable: bool,
    /// The coordinator's traffic shaping file text (TOML; default empty: smurf defaults).
    pub shaping: String,
    /// Port the smurfs connect to on MX hosts (default 25).
    pub smtp_port: u16,
    /// Name server (ip:port) the smurfs ask for MX routes (default none: the system's).
    pub nameserver: Option<SocketAddr>,
}

impl EmbeddedOptions {
    /// `smurfs` smurfs with default settings.
    pub fn new(smurfs: u32) -> Self {
        Self {
            smurfs,
            relay_override: None,
            window: 512,
            batch_size: 128,
            state_dir: None,
            durable: true,
            shaping: String::new(),
            smtp_port: 25,
            nameserver: None,
        }
    }
}

/// A running embedded farm.
pub struct EmbeddedFarm {
    handle: CoordinatorHandle,
    addr: SocketAddr,
    _farm_dir: tempfile::TempDir,
    stop_coordinator: oneshot::Sender<()>,
    coordinator_task: JoinHandle<Result<(), mailfarm_coordinator::CoordinatorError>>,
    stop_smurfs: watch::Sender<bool>,
    smurf_tasks: Vec<JoinHandle<Result<(), mailfarm_smurf::SmurfError>>>,
}

impl EmbeddedFarm {
    /// Creates certificates, starts the coordinator on a free loopback port and the smurfs.
    pub async fn start(options: EmbeddedOptions) -> anyhow::Result<Self> {
        if options.smurfs == 0 {
            anyhow::bail!("an embedded farm needs at least 1 smurf");
        }
        let farm_dir = tempfile::tempdir().context("creating a temporary farm folder")?;
        let names: Vec<String> = (1..=options.smurfs).map(|i| format!("local-{i}")).collect();
        mailfarm_pki::init_farm(farm_dir.path(), &names, &[])
            .context("creating local certificates")?;
        let mut settings = CoordinatorSettings::new(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Identity::load(&FarmFiles::in_dir(farm_dir.path(), "coordinator"))?,
            mailfarm_pki::load_secret(&farm_dir.path().join("verp.key"))?,
        );
        settings.batch_size = options.batch_size;
        settings.state_dir = options.state_dir.clone();
        settings.durable = options.durable;
        settings.shaping = options.shaping.clone();
        let coordinator = Coordinator::bind(settings).await?;
        let addr = coordinator.local_addr()?;
        let handle = coordinator.handle();
        let (stop_coordinator, stopped) = oneshot::channel::<()>();
        let coordinator_task = tokio::spawn(coordinator.run(async {
            let _ = stopped.await;
        }));
        let (stop_smurfs, smurf_shutdown) = watch::channel(false);
        let mut smurf_tasks = Vec::new();
        for name in &names {
            let mut delivery = DeliverySettings::new(format!("{name}.mailfarm.invalid"));
            delivery.relay_override = options.relay_override.clone();
            delivery.smtp_port = options.smtp_port;
            if let Some(nameserver) = options.nameserver {
                delivery.resolver = ResolverSettings::with_nameserver(nameserver);
            }
            let settings = SmurfSettings {
                node: name.clone(),
                coordinator: addr,
                identity: Identity::load(&FarmFiles::in_dir(farm_dir.path(), name))?,
                window: options.window,
                delivery,
                state_dir: None,
                initial_role: None,
                roles: mailfarm_smurf::RoleServices::default(),
            };
            smurf_tasks.push(tokio::spawn(run_smurf(settings, smurf_shutdown.clone())));
        }
        Ok(Self {
            handle,
            addr,
            _farm_dir: farm_dir,
            stop_coordinator,
            coordinator_task,
            stop_smurfs,
            smurf_tasks,
        })
    }

    /// In-process handle on the coordinator.
    pub fn handle(&self) -> &CoordinatorHandle {
        &self.handle
    }

    /// The coordinator's QUIC address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the smurfs (they finish in-flight messages), then the coordinator.
    pub async fn shutdown(self) {
        let _ = self.stop_smurfs.send(true);
        for task in self.smurf_tasks {
            if let Ok(Err(e)) = task.await {
                tracing::warn!("smurf ended with an error: {e:#}");
            }
        }
        let _ = self.stop_coordinator.send(());
        let _ = self.coordinator_task.await;
    }
}
