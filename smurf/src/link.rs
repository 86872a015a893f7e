//! The smurf's link to its coordinator: connect with mutual TLS, say hello, compile templates,
//! turn batches into delivery jobs, and stream results back. Reconnects with backoff when the
//! link drops; templates survive reconnects so they are not shipped again.

use std::net::SocketAddr;
use std::time::Duration;

use mailfarm_pki::wire::{write_frame, FrameReader, WireError};
use mailfarm_pki::{Identity, COORDINATOR_NAME};
use mailfarm_protocol::{
    CoordinatorMessage, HelloReply, NodeRole, NodeStatus, Outcome, RecipientResult, SmurfLink,
    SmurfLinkEvent, SmurfLoad, SmurfMessage,
};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::delivery::{DeliveryEngine, DeliverySettings, Job};
use crate::error::{LinkError, SmurfError};
use crate::inbound::forward::relay::ForwardOut;
use crate::roles::RoleServices;
use crate::switch::{RoleSwitch, SwitchOut};
use crate::template_cache::TemplateCache;

/// Largest frame the coordinator may send (a template bundle is the biggest).
const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Most results per frame.
const RESULTS_PER_FRAME: usize = 512;
/// How long a result may wait for others to share its frame. Each frame costs a wake-up and
/// a QUIC packet on both sides and a hand-off to the coordinator's committer; at campaign
/// speed a few milliseconds gather tens of results per frame. Credit flows back on receipt,
/// so the window (hundreds of recipients) hides the wait.
const RESULTS_LINGER: Duration = Duration::from_millis(20);
/// How often the smurf reports its load (and its inbound counters, shown second by second).
const LOAD_INTERVAL: Duration = Duration::from_secs(1);
/// How long a shutting-down smurf waits for in-flight messages.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything a smurf needs to run.
pub struct SmurfSettings {
    /// Node name, as in its certificate.
    pub node: String,
    /// Coordinator QUIC address.
    pub coordinator: SocketAddr,
    /// Certificates and key.
    pub identity: Identity,
    /// Most recipients in flight on this smurf (default 512).
    pub window: u32,
    /// Sending engine settings.
    pub delivery: DeliverySettings,
    /// Folder for state that should survive a restart (the template cache); memory only when
    /// `None`.
    pub state_dir: Option<std::path::PathBuf>,
    /// The role to join with when the coordinator has none stored for this node (default: `out`).
    pub initial_role: Option<NodeRole>,
    /// What the roles other than `out` need from the config.
    pub roles: RoleServices,
}

/// Runs a smurf until `shutdown` flips to true: connects, serves, reconnects with backoff.
pub async fn run_smurf(
    settings: SmurfSettings,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), SmurfError> {
    let client_config = mailfarm_pki::client_config(&settings.identity)
        .map_err(|e| SmurfError::Tls(e.to_string()))?;
    let bind = if settings.coordinator.is_ipv6() {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
    };
    let mut endpoint = quinn::Endpoint::client(bind).map_err(SmurfError::Socket)?;
    endpoint.set_default_client_config(client_config);
    let mut engine = DeliveryEngine::new(settings.delivery.clone());
    let mut templates =
        TemplateCache::open(settings.state_dir.as_ref().map(|d| d.join("templates")))
            .map_err(SmurfError::TemplateCache)?;
    let mut backoff = Duration::from_millis(200);
    let mut carry = Carry::default();
    let mut switch = RoleSwitch::new(
        settings
            .roles
            .clone()
            .with_delivery(settings.delivery.clone()),
    );
    let mut link = SmurfLink::new(settings.window, templates.held());
    while !*shutdown.borrow() {
        let (results_tx, results_rx) = mpsc::unbounded_channel::<RecipientResult>();
        let mut link_results = LinkResults {
            tx: results_tx,
            rx: results_rx,
            established: false,
            unsent: Vec::new(),
        };
        let outcome = serve_once(
            &endpoint,
            &settings,
            (&mut engine, &mut templates, &mut switch, &mut link),
            &mut shutdown,
            &mut link_results,
            &mut carry,
        )
        .await;
        let established = link_results.established;
        carry.orphans.push(link_results.rx);
        carry.unsent.append(&mut link_results.unsent);
        // Whatever the link's fate, queued jobs from it must not be sent now: the coordinator
        // takes its recipients back when the link drops.
        engine.next_generation();
        match outcome {
            Ok(()) if *shutdown.borrow() => break,
            Ok(()) => {
                info!(node = %settings.node, "coordinator closed the link; reconnecting");
            }
            Err(e) if e.is_refusal() => warn!(node = %settings.node, "{e}"),
            Err(e) => warn!(node = %settings.node, "link to coordinator failed: {e}"),
        }
        if established {
            // A working link ended (e.g. the coordinator restarted): come back promptly.
            backoff = Duration::from_millis(100);
        }
        let jitter = Duration::from_millis(rand::random::<u64>() % 100);
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = shutdown.changed() => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    switch.shutdown().await;
    engine.shutdown().await;
    endpoint.close(0u32.into(), b"smurf stopped");
    endpoint.wait_idle().await;
    Ok(())
}

/// The result channel of one link.
struct LinkResults {
    tx: mpsc::UnboundedSender<RecipientResult>,
    rx: mpsc::UnboundedReceiver<RecipientResult>,
    /// Whether the link got as far as the coordinator's welcome.
    established: bool,
    /// Results taken from the channel and waiting (at most [`RESULTS_LINGER`]) for their
    /// frame; kept here, not in the link's loop, so a link that drops meanwhile loses none.
    unsent: Vec<RecipientResult>,
}

/// What one link hands to the next.
#[derive(Default)]
struct Carry {
    /// Result channels of ended links: messages in flight when a link dropped still report
    /// here, and the next link hands those results to the coordinator as late results.
    orphans: Vec<mpsc::UnboundedReceiver<RecipientResult>>,
    /// Results an ended link had taken from its channel but not yet framed.
    unsent: Vec<RecipientResult>,
}

/// Takes what the channels of ended links hold, dropping channels that are closed and empty.
fn drain_orphans(
    orphans: &mut Vec<mpsc::UnboundedReceiver<RecipientResult>>,
) -> Vec<RecipientResult> {
    let mut late = Vec::new();
    orphans.retain_mut(|rx| loop {
        match rx.try_recv() {
            Ok(result) => late.push(result),
            Err(mpsc::error::TryRecvError::Empty) => break true,
            Err(mpsc::error::TryRecvError::Disconnected) => break false,
        }
    });
    late
}

async fn serve_once(
    endpoint: &quinn::Endpoint,
    settings: &SmurfSettings,
    (engine, templates, switch, link): (
        &mut DeliveryEngine,
        &mut TemplateCache,
        &mut RoleSwitch,
        &mut SmurfLink,
    ),
    shutdown: &mut watch::Receiver<bool>,
    link_results: &mut LinkResults,
    carry: &mut Carry,
) -> Result<(), LinkError> {
    let Carry { orphans, unsent } = carry;
    let connect_error = |reason: String| LinkError::Connect {
        addr: settings.coordinator,
        reason,
    };
    let connection = endpoint
        .connect(settings.coordinator, COORDINATOR_NAME)
        .map_err(|e| connect_error(e.to_string()))?
        .await
        .map_err(|e| connect_error(e.to_string()))?;
    let (mut send, recv) = connection.open_bi().await?;
    link.reset();
    write_frame(
        &mut send,
        &link.hello(
            &settings.node,
            settings.initial_role,
            env!("CARGO_PKG_VERSION"),
        ),
    )
    .await?;
    let mut reader = FrameReader::new(recv, MAX_FRAME);
    match reader.next::<HelloReply>().await {
        Ok(Some((reply, _))) => link.on_hello_reply(reply)?,
        Ok(None) => return Err(LinkError::ClosedAtHello),
        Err(WireError::Read(e)) => return Err(LinkError::DroppedAtHello(e.to_string())),
        Err(e) => return Err(e.into()),
    }
    info!(node = %settings.node, coordinator = %settings.coordinator, "joined the farm");
    link_results.established = true;
    let generation = engine.next_generation();
    let results_tx = link_results.tx.clone();
    let results_rx = &mut link_results.rx;
    let pending = &mut link_results.unsent;
    // Fires RESULTS_LINGER after the first result of a frame; armed only while one waits.
    let results_due = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(results_due);
    let mut results_armed = false;
    let mut late_tick = tokio::time::interval(Duration::from_millis(100));
    // Whatever an earlier link left unacknowledged goes first, as late results.
    let held = link.held_results();
    if held > 0 {
        info!(
            count = held,
            "resending unacknowledged results of an earlier link"
        );
    }
    for message in link.resend_unacknowledged(RESULTS_PER_FRAME) {
        write_frame(&mut send, &message).await?;
    }
    let mut draining = false;
    let drain_deadline = tokio::time::sleep(Duration::from_secs(u64::MAX / 4));
    tokio::pin!(drain_deadline);
    let mut load_tick = tokio::time::interval(LOAD_INTERVAL);
    let throttle_signal = engine.throttle_signal();
    let mut cpu = crate::load::CpuMeter::new();
    let mut reported: Option<NodeStatus> = None;
    let mut returned_tick = tokio::time::interval(Duration::from_millis(250));
    switch.new_link();
    loop {
        switch.settle(link.owed()).await;
        let status = switch.status(link.owed());
        if reported.as_ref() != Some(&status) {
            write_frame(&mut send, &SmurfMessage::Status(status.clone())).await?;
            reported = Some(status);
        }
        if draining && link.owed() == 0 {
            write_frame(&mut send, &SmurfMessage::Goodbye).await?;
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
            connection.close(0u32.into(), b"smurf shutting down");
            return Ok(());
        }
        tokio::select! {
            message = reader.next::<CoordinatorMessage>(), if !draining => {
                let Some((message, _)) = message? else { return Ok(()) };
                match link.on_message(message)? {
                    SmurfLinkEvent::Template(bundle) => {
                        let hash = bundle.hash;
                        let campaign = bundle.campaign_id.clone();
                        match templates.insert(*bundle) {
                            Ok(_) => {
                                info!(%campaign, template = %hash, "template received");
                            }
                            Err(e) => {
                                warn!(%campaign, "template does not compile: {e}");
                                write_frame(&mut send, &SmurfMessage::TemplateRejected {
                                    hash, reason: e.to_string() }).await?;
                            }
                        }
                    }
                    SmurfLinkEvent::Batch(batch) if !switch.takes_batches() => {
                        // Leased before the coordinator knew of the switch or drain: give back.
                        let ids: Vec<u64> = batch.recipients.iter().map(|r| r.id).collect();
                        hand_back(link, &mut send, ids).await?;
                    }
                    SmurfLinkEvent::Batch(batch) => {
                        let Some(campaign) = templates.get(&batch.template) else {
                            let failed: Vec<RecipientResult> = batch.recipients.iter().map(|r| RecipientResult {
                                id: r.id, outcome: Outcome::Failed, code: 0, enhanced: None,
                                text: "template did not compile on this smurf".into(), rendered_bytes: 0,
                                remote: String::new(), duration_ms: 0,
                            }).collect();
                            write_frame(&mut send, &link.results(failed)).await?;
                            continue;
                        };
                        for recipient in batch.recipients {
                            engine.submit(Job {
                                generation,
                                campaign: campaign.clone(),
                                recipient,
                                results: results_tx.clone(),
                                held: Default::default(),
                                raw: None,
                            });
                        }
                    }
                    SmurfLinkEvent::Forget(hash) => {
                        templates.remove(&hash);
                    }
                    SmurfLinkEvent::Shaping(update) => {
                        switch.forward_shaping(update.clone());
                        engine.apply_shaping(update);
                    }
                    SmurfLinkEvent::Assign(assignment) => {
                        if switch.on_assign(assignment) {
                            hand_back(link, &mut send, engine.hand_back()).await?;
                        }
                    }
                    SmurfLinkEvent::InboundPolicy(policy) => switch.set_policy(policy),
                    SmurfLinkEvent::BounceWork(jobs) => {
                        let policy = switch.policy();
                        let verdicts = tokio::task::spawn_blocking(move || {
                            jobs.iter().map(|job| crate::bounce::verdict(job, &policy)).collect()
                        })
                        .await
                        .map_err(|e| LinkError::Task(format!("bounce analysis task failed: {e}")))?;
                        write_frame(&mut send, &SmurfMessage::BounceVerdicts(verdicts)).await?;
                    }
                    SmurfLinkEvent::ReturnedStored(names) => switch.returned_stored(&names),
                    SmurfLinkEvent::UnsubscribesStored(upto) => switch.unsubscribes_stored(upto).await,
                    SmurfLinkEvent::FarmView(view) => switch.show(&view),
                    SmurfLinkEvent::ResultsCommitted => {}
                    SmurfLinkEvent::SiteRates(rates) => engine.apply_site_rates(rates),
                    SmurfLinkEvent::ForwardRules(update) => {
                        switch.forward_rules(update).map_err(mailfarm_protocol::ProtocolError::from)?;
                    }
                    SmurfLinkEvent::NoticeGrants(grants) => switch.notice_grants(grants),
                }
            }
            Some(first) = results_rx.recv() => {
                pending.push(first);
                while pending.len() < RESULTS_PER_FRAME {
                    match results_rx.try_recv() {
                        Ok(r) => pending.push(r),
                        Err(_) => break,
                    }
                }
                if pending.len() >= RESULTS_PER_FRAME || draining {
                    results_armed = false;
                    write_frame(&mut send, &link.results(std::mem::take(pending))).await?;
                } else if !results_armed {
                    results_armed = true;
                    results_due.as_mut().reset(tokio::time::Instant::now() + RESULTS_LINGER);
                }
            }
            () = &mut results_due, if results_armed => {
                results_armed = false;
                write_frame(&mut send, &link.results(std::mem::take(pending))).await?;
            }
            _ = shutdown.changed(), if !draining => {
                if *shutdown.borrow() {
                    hand_back(link, &mut send, engine.hand_back()).await?;
                    info!(node = %settings.node, owed = link.owed(), "shutting down: queued recipients handed back, finishing in-flight messages");
                    draining = true;
                    drain_deadline.as_mut().reset(tokio::time::Instant::now() + DRAIN_TIMEOUT);
                }
            }
            _ = late_tick.tick(), if !orphans.is_empty() || !unsent.is_empty() => {
                let mut late = std::mem::take(unsent);
                late.append(&mut drain_orphans(orphans));
                if !late.is_empty() {
                    info!(count = late.len(), "reporting results of an earlier link");
                }
                for message in link.late_results(late, RESULTS_PER_FRAME) {
                    write_frame(&mut send, &message).await?;
                }
            }
            _ = returned_tick.tick() => {
                let mails = switch.next_returned();
                if !mails.is_empty() {
                    write_frame(&mut send, &SmurfMessage::Returned(mails)).await?;
                }
                let unsubscribes = switch.next_unsubscribes();
                if !unsubscribes.is_empty() {
                    write_frame(&mut send, &SmurfMessage::Unsubscribes(unsubscribes)).await?;
                }
            }
            out = switch.next_out() => match out {
                SwitchOut::Records(records) => {
                    if !records.is_empty() {
                        write_frame(&mut send, &SmurfMessage::InboundReceived(records)).await?;
                    }
                }
                SwitchOut::Forward(ForwardOut::Claims(claims)) => {
                    write_frame(&mut send, &SmurfMessage::NoticeClaims(claims)).await?;
                }
                SwitchOut::Forward(ForwardOut::Records(records)) => {
                    write_frame(&mut send, &SmurfMessage::Forwarded(records)).await?;
                }
            },
            _ = load_tick.tick() => {
                let stats = engine.stats();
                let load = SmurfLoad {
                    queued: stats.queued,
                    sending: stats.sending,
                    cpu_percent: cpu.percent(),
                    bog_sites: stats.bog_sites,
                    bog_queued: stats.bog_queued,
                    inbound: switch.inbound_counters(),
                };
                write_frame(&mut send, &SmurfMessage::Load(load)).await?;
                let sites = engine.throttle_reports();
                if !sites.is_empty() {
                    write_frame(&mut send, &SmurfMessage::SiteThrottles(sites)).await?;
                }
            }
            () = throttle_signal.notified() => {
                let sites = engine.throttle_reports();
                if sites.iter().any(|s| s.cut) {
                    write_frame(&mut send, &SmurfMessage::SiteThrottles(sites)).await?;
                }
            }
            () = &mut drain_deadline => {
                warn!(owed = link.owed(), "drain timed out; the coordinator will requeue the rest");
                connection.close(0u32.into(), b"smurf shutting down");
                return Ok(());
            }
        }
    }
}

/// Gives recipients back to the coordinator unattempted; it leases them again at once.
async fn hand_back(
    link: &mut SmurfLink,
    send: &mut quinn::SendStream,
    ids: Vec<u64>,
) -> Result<(), LinkError> {
    if ids.is_empty() {
        return Ok(());
    }
    info!(
        count = ids.len(),
        "handing back recipients not yet attempted"
    );
    link.handed_back(ids.len());
    write_frame(send, &SmurfMessage::HandBack(ids)).await?;
    Ok(())
}
