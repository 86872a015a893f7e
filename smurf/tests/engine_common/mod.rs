//! Shared pieces of the `engine_*` tests: a campaign, fault sinks on 127.0.0.x addresses that
//! share one port (MX hosts are all reached on `DeliverySettings::smtp_port`), an engine wired
//! to the test DNS, and result collection.
#![allow(dead_code)] // each test binary uses its own part

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mailfarm_protocol::{
    ContentHash, DeliveryTarget, RecipientData, RecipientResult, ShapingUpdate, TemplateBundle,
};
use mailfarm_smurf::delivery::{CompiledCampaign, DeliveryEngine, DeliverySettings, Job};
use mailfarm_smurf::inbound::fault_sink::{FaultPlan, FaultSink, SinkStats};
use mailfarm_smurf::outbound::mx::ResolverSettings;
use mailfarm_smurf::outbound::smtp::Timeouts;
use mailfarm_smurf::template_cache::TemplateCache;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// A campaign delivering to `relay`, or to the MX hosts when `None`.
pub fn campaign(relay: Option<String>, connections: u16) -> Arc<CompiledCampaign> {
    let bundle = TemplateBundle {
        hash: ContentHash([7; 32]),
        campaign_id: "engine-test".into(),
        subject: "Hello {{name}}".into(),
        text: "Hi {{name}}, this is a test.\n".into(),
        from: "News <news@sender.test>".into(),
        list_id: "news.sender.test".into(),
        bounce_domain: "bounce.sender.test".into(),
        field_names: vec!["email".into(), "name".into()],
        verp_key: vec![42; 32],
        delivery: DeliveryTarget { relay, connections },
        ..mailfarm_protocol::fixtures::bundle()
    };

    TemplateCache::open(None)
        .expect("memory cache")
        .insert(bundle)
        .expect("the test template compiles")
}

/// A running fault sink.
pub struct Sink {
    pub addr: SocketAddr,
    pub stats: Arc<SinkStats>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Sink {
    /// Binds `ip:port` with `plan` and serves it.
    pub async fn start(ip: &str, port: u16, plan: FaultPlan) -> Sink {
        let ip: IpAddr = ip.parse().expect("test IP");
        let sink = FaultSink::bind(SocketAddr::new(ip, port), plan)
            .await
            .unwrap_or_else(|e| panic!("binding a fault sink on {ip}:{port}: {e}"));
        let addr = sink.local_addr();
        let stats = sink.stats();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(sink.run(async {
            let _ = rx.await;
        }));
        Sink {
            addr,
            stats,
            stop,
            task,
        }
    }

    /// Stops serving and waits until the port is closed.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("sink did not stop")
            .expect("sink task")
            .expect("sink run");
    }

    /// Envelope recipients of the accepted messages.
    pub fn accepted(&self) -> Vec<String> {
        self.stats
            .messages_snapshot()
            .into_iter()
            .map(|(_, rcpt)| rcpt)
            .collect()
    }
}

/// A port free on every one of `ips` right now (sinks then bind it on each).
pub fn common_port(ips: &[&str]) -> u16 {
    'search: for _ in 0..100 {
        let first = std::net::TcpListener::bind((ips[0], 0)).expect("binding a port");
        let port = first.local_addr().expect("local address").port();
        for ip in &ips[1..] {
            if std::net::TcpListener::bind((*ip, port)).is_err() {
                continue 'search;
            }
        }
        return port;
    }
    panic!("no port free on all of {ips:?}");
}

/// Engine settings for tests: short timeouts, MX hosts on `port`, DNS at `nameserver`.
pub fn settings(port: u16, nameserver: SocketAddr) -> DeliverySettings {
    let mut s = DeliverySettings::new("engine.test");
    s.smtp_port = port;
    s.resolver = ResolverSettings {
        timeout: Duration::from_secs(2),
        attempts: 1,
        ..ResolverSettings::with_nameserver(nameserver)
    };
    s.timeouts = Timeouts::uniform(Duration::from_secs(5));
    s.connect_timeout = Duration::from_secs(2);
    s.idle_timeout = Duration::from_secs(2);
    s
}

/// An engine with `shaping` applied at `share` = numerator / denominator.
pub fn engine(settings: DeliverySettings, shaping: &str, share: (u32, u32)) -> DeliveryEngine {
    let mut engine = DeliveryEngine::new(settings);
    engine.apply_shaping(ShapingUpdate {
        toml: shaping.to_owned(),
        share_numerator: share.0,
        share_denominator: share.1,
    });
    engine
}

/// Submits `emails` (ids from `first_id`) in the engine's current generation.
pub fn submit(
    engine: &mut DeliveryEngine,
    generation: u64,
    campaign: &Arc<CompiledCampaign>,
    first_id: u64,
    emails: &[String],
    results: &mpsc::UnboundedSender<RecipientResult>,
) {
    for (i, email) in emails.iter().enumerate() {
        engine.submit(Job {
            generation,
            campaign: campaign.clone(),
            recipient: RecipientData {
                id: first_id + i as u64,
                values: vec![email.clone(), format!("user {i}")],
            },
            results: results.clone(),
            held: Default::default(),
            raw: None,
        });
    }
}

/// `count` addresses in `domain`.
pub fn emails(domain: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("rcpt{i}@{domain}")).collect()
}

/// Waits for `count` results (panics after `limit`); each id must come once.
pub async fn collect(
    rx: &mut mpsc::UnboundedReceiver<RecipientResult>,
    count: usize,
    limit: Duration,
) -> HashMap<u64, RecipientResult> {
    let mut got = HashMap::new();
    let deadline = tokio::time::Instant::now() + limit;
    while got.len() < count {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(r)) => {
                let id = r.id;
                if let Some(old) = got.insert(id, r) {
                    panic!("two results for recipient {id}: {old:?} and {:?}", got[&id]);
                }
            }
            Ok(None) => panic!("result channel closed"),
            Err(_) => panic!("only {} of {count} results within {limit:?}", got.len()),
        }
    }
    got
}
