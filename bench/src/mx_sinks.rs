//! The receivers of the `mx` benchmark: in-process fault sinks with well-behaved plans (accept
//! everything, store nothing, count everything), several of them on one port at different
//! loopback addresses, and a watcher that notes the moment a group of them has accepted a
//! given number of messages.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mailfarm_smurf::inbound::fault_sink::{FaultPlan, FaultSink, SinkStats};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::sys;

/// Tries to find one port free on every address.
const PORT_TRIES: usize = 20;
/// How often the watcher reads the sinks' counters.
const WATCH_POLL: Duration = Duration::from_millis(2);
/// How long the watcher may lag behind the end of a campaign.
const WATCH_PATIENCE: Duration = Duration::from_secs(5);

/// A fault sink serving in a task of the current runtime.
pub struct RunningSink {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its live counters.
    pub stats: Arc<SinkStats>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl RunningSink {
    /// Starts serving `sink`.
    fn serve(sink: FaultSink) -> Self {
        let addr = sink.local_addr();
        let stats = sink.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(sink.run(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stats,
            stop,
            task,
        }
    }

    /// A well-behaved sink on `addr` (port 0: any free port).
    pub async fn start(addr: SocketAddr) -> anyhow::Result<Self> {
        let sink = FaultSink::bind(addr, FaultPlan::default())
            .await
            .with_context(|| format!("binding a fault sink on {addr}"))?;
        Ok(Self::serve(sink))
    }

    /// Messages accepted so far.
    pub fn accepted(&self) -> u64 {
        self.stats
            .accepted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Most sessions it had open at once.
    pub fn peak_sessions(&self) -> u64 {
        self.stats
            .peak_connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops it (open sessions get a short grace period).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Err(e)) => tracing::warn!("fault sink {} ended with an error: {e}", self.addr),
            Err(e) => tracing::warn!("fault sink {} task failed: {e}", self.addr),
            Ok(Ok(())) => {}
        }
    }
}

/// Well-behaved sinks on every address of `ips`, all on one port (free on all of them).
pub async fn start_on_common_port(ips: &[Ipv4Addr]) -> anyhow::Result<(u16, Vec<RunningSink>)> {
    let Some((&first, rest)) = ips.split_first() else {
        bail!("no sink address");
    };
    let mut last_error = None;
    'tries: for _ in 0..PORT_TRIES {
        let plan = FaultPlan::default();
        let lead = FaultSink::bind(SocketAddr::from((first, 0)), plan.clone())
            .await
            .with_context(|| format!("binding a fault sink on {first}"))?;
        let port = lead.local_addr().port();
        let mut sinks = vec![lead];
        for &ip in rest {
            match FaultSink::bind(SocketAddr::from((ip, port)), plan.clone()).await {
                Ok(sink) => sinks.push(sink),
                Err(e) => {
                    last_error = Some(format!("{ip}:{port}: {e}"));
                    continue 'tries;
                }
            }
        }
        return Ok((port, sinks.into_iter().map(RunningSink::serve).collect()));
    }
    bail!(
        "no port free on all of {ips:?} after {PORT_TRIES} tries (last: {})",
        last_error.unwrap_or_default()
    )
}

/// The moment a group of sinks reached its target, and this process's CPU time then.
pub type Reached = Option<(Instant, Duration)>;

/// Watches `stats` until together they have accepted `target` messages (counted from now).
pub fn watch(stats: Vec<Arc<SinkStats>>, target: u64) -> JoinHandle<Reached> {
    let total = move || -> u64 {
        stats
            .iter()
            .map(|s| s.accepted.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    };
    let base = total();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(WATCH_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            if total() >= base + target {
                let cpu = sys::usage(libc::RUSAGE_SELF).map(|u| u.cpu).ok()?;
                return Some((Instant::now(), cpu));
            }
            tick.tick().await;
        }
    })
}

/// What a [`watch`] saw: waits for it briefly once the campaign is over; None when its
/// target was never reached.
pub async fn reached(watcher: JoinHandle<Reached>) -> Reached {
    let abort = watcher.abort_handle();
    match tokio::time::timeout(WATCH_PATIENCE, watcher).await {
        Ok(Ok(reached)) => reached,
        Ok(Err(_)) => None,
        Err(_) => {
            abort.abort();
            None
        }
    }
}
