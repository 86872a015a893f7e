//! The coordinator daemon's network side: accepts QUIC connections, tells smurfs from
//! operators by their hello and certificate, feeds smurfs work and answers operators.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mailfarm_pki::wire::{write_frame, FrameReader, WireError};
use mailfarm_pki::{operator_dns_name, peer_has_name, smurf_dns_name, Identity};
use mailfarm_protocol::{
    CoordinatorLink, CoordinatorMessage, Hello, HelloReply, OperatorRequest, OperatorResponse,
    Role, SmurfMessage, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};
use tracing::{debug, info, warn};

use crate::farm::Farm;
use crate::launch::{launch, Launched};

/// Largest frame a smurf may send: a results batch is far smaller.
const SMURF_MAX_FRAME: usize = 4 * 1024 * 1024;
/// Time a client has to open its stream and say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of a coordinator.
pub struct CoordinatorSettings {
    /// QUIC listen address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Certificates and key.
    pub identity: Identity,
    /// Key that signs VERP return paths.
    pub verp_key: Vec<u8>,
    /// Most recipients per batch frame (default 128).
    pub batch_size: usize,
}

/// A running coordinator.
pub struct Coordinator {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
}

struct Shared {
    farm: Farm,
    verp_key: Vec<u8>,
    batch_size: usize,
}

/// A cheap handle for launching campaigns and reading counters in-process.
#[derive(Clone)]
pub struct CoordinatorHandle {
    shared: Arc<Shared>,
}

impl CoordinatorHandle {
    /// Checks, ingests and queues a campaign.
    pub fn launch(
        &self,
        submission: mailfarm_protocol::CampaignSubmission,
    ) -> Result<Launched, crate::LaunchError> {
        launch(&self.shared.farm, submission, &self.shared.verp_key)
    }

    /// The farm state.
    pub fn farm(&self) -> &Farm {
        &self.shared.farm
    }
}

impl Coordinator {
    /// Binds the QUIC endpoint.
    pub fn bind(settings: CoordinatorSettings) -> anyhow::Result<Self> {
        let server_config = mailfarm_pki::server_config(&settings.identity)
            .context("building the coordinator's TLS configuration")?;
        let endpoint = quinn::Endpoint::server(server_config, settings.listen)
            .with_context(|| format!("binding QUIC on {}", settings.listen))?;
        Ok(Self {
            endpoint,
            shared: Arc::new(Shared {
                farm: Farm::new(),
                verp_key: settings.verp_key,
                batch_size: settings.batch_size.max(1),
            }),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// A handle for in-process use.
    pub fn handle(&self) -> CoordinatorHandle {
        CoordinatorHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves until `shutdown` resolves, then closes every link and waits for the endpoint.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let shared = self.shared.clone();
                    tokio::spawn(async move {
                        let remote = incoming.remote_address();
                        if let Err(e) = serve_connection(incoming, shared).await {
                            info!(%remote, "link closed: {e:#}");
                        }
                    });
                }
                () = &mut shutdown => break,
            }
        }
        info!("coordinator shutting down");
        self.endpoint
            .close(0u32.into(), b"coordinator shutting down");
        self.endpoint.wait_idle().await;
        Ok(())
    }
}

async fn serve_connection(incoming: quinn::Incoming, shared: Arc<Shared>) -> anyhow::Result<()> {
    let connection = incoming.await.context("QUIC/TLS handshake")?;
    let (mut send, recv) = tokio::time::timeout(HELLO_TIMEOUT, connection.accept_bi())
        .await
        .context("no stream opened in time")?
        .context("accepting the first stream")?;
    let mut reader = FrameReader::new(recv, DEFAULT_MAX_FRAME);
    let first = tokio::time::timeout(HELLO_TIMEOUT, reader.next::<Hello>())
        .await
        .context("no hello in time")?;
    let hello = match first {
        Ok(Some((hello, _))) => hello,
        Ok(None) => anyhow::bail!("stream closed before the hello"),
        Err(e) => {
            refuse(&mut send, &connection, "the first frame must be a hello").await;
            anyhow::bail!("bad hello: {e}");
        }
    };
    match &hello.role {
        Role::Smurf { .. } => serve_smurf(connection, send, reader, hello, shared).await,
        Role::Operator { name } => {
            let name = name.clone();
            serve_operator(connection, send, reader, hello, &name, shared).await
        }
    }
}

async fn refuse(send: &mut quinn::SendStream, connection: &quinn::Connection, reason: &str) {
    let _ = write_frame(
        send,
        &HelloReply::Refused {
            reason: reason.to_owned(),
        },
    )
    .await;
    let _ = send.finish();
    let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
    connection.close(1u32.into(), reason.as_bytes());
}

async fn serve_smurf(
    connection: quinn::Connection,
    mut send: quinn::SendStream,
    mut reader: FrameReader,
    hello: Hello,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    reader.set_max_frame(SMURF_MAX_FRAME);
    let mut link = CoordinatorLink::new();
    let welcome = match link.on_hello(hello, |node| {
        peer_has_name(&connection, &smurf_dns_name(node))
    }) {
        Ok(welcome) => welcome,
        Err((refusal, error)) => {
            warn!(remote = %connection.remote_address(), "smurf refused: {error}");
            if let HelloReply::Refused { reason } = &refusal {
                refuse(&mut send, &connection, reason).await;
            }
            return Err(error.into());
        }
    };
    write_frame(&mut send, &welcome).await?;
    let node = link.node().unwrap_or_default().to_owned();
    info!(%node, remote = %connection.remote_address(), "smurf joined");
    shared.farm.smurf_joined(&node);
    let result = feed_smurf(&mut link, &mut send, &mut reader, &shared).await;
    shared.farm.smurf_left(&node);
    let returned = link.take_in_flight();
    if !returned.is_empty() {
        warn!(%node, count = returned.len(), "link lost with recipients in flight: requeued");
    }
    shared.farm.requeue(&returned);
    info!(%node, "smurf left");
    result
}

async fn feed_smurf(
    link: &mut CoordinatorLink,
    send: &mut quinn::SendStream,
    reader: &mut FrameReader,
    shared: &Shared,
) -> anyhow::Result<()> {
    let mut work = shared.farm.work_signal();
    loop {
        work.borrow_and_update();
        while link.credit() > 0 {
            let Some(lease) = shared.farm.lease(link.credit().min(shared.batch_size)) else {
                break;
            };
            let ids: Vec<u64> = lease.recipients.iter().map(|r| r.id).collect();
            let messages = match link.dispatch(&lease.bundle, lease.recipients) {
                Ok(m) => m,
                Err(e) => {
                    shared.farm.requeue(&ids);
                    return Err(e.into());
                }
            };
            for message in &messages {
                let bytes = write_frame(send, message).await?;
                match message {
                    CoordinatorMessage::Template(b) => {
                        shared.farm.record_template_shipment(&b.campaign_id, bytes);
                    }
                    _ => shared
                        .farm
                        .record_batch_bytes(&lease.bundle.campaign_id, bytes),
                }
            }
        }
        tokio::select! {
            next = reader.next::<SmurfMessage>() => match next {
                Ok(Some((SmurfMessage::Results(results), bytes))) => {
                    link.on_results(&results)?;
                    shared.farm.apply_results(&results, bytes);
                }
                Ok(Some((SmurfMessage::TemplateRejected { hash, reason }, _))) => {
                    warn!(template = %hash, "smurf could not compile a template: {reason}");
                }
                Ok(Some((SmurfMessage::Goodbye, _))) => {
                    debug!("smurf said goodbye");
                    link.close();
                    if link.in_flight() == 0 {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(WireError::Frame(e)) => anyhow::bail!("garbage from smurf: {e}"),
                Err(e) => return Err(e.into()),
            },
            _ = work.changed() => {}
        }
    }
}

async fn serve_operator(
    connection: quinn::Connection,
    mut send: quinn::SendStream,
    mut reader: FrameReader,
    hello: Hello,
    name: &str,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    if hello.version != PROTOCOL_VERSION {
        let reason = format!(
            "operator speaks protocol version {}, this coordinator speaks {PROTOCOL_VERSION}",
            hello.version
        );
        refuse(&mut send, &connection, &reason).await;
        anyhow::bail!(reason);
    }
    if !peer_has_name(&connection, &operator_dns_name(name)) {
        let reason = format!("certificate is not the operator certificate of {name:?}");
        refuse(&mut send, &connection, &reason).await;
        anyhow::bail!(reason);
    }
    write_frame(
        &mut send,
        &HelloReply::Welcome {
            version: PROTOCOL_VERSION,
            name: name.to_owned(),
        },
    )
    .await?;
    while let Some((request, _)) = reader.next::<OperatorRequest>().await? {
        let response = match request {
            OperatorRequest::Launch(submission) => {
                let id = submission.id.clone();
                match launch(&shared.farm, *submission, &shared.verp_key) {
                    Ok(launched) => {
                        info!(campaign = %id, operator = name, total = launched.counters.total,
                              rejected = launched.counters.rejected_rows, "campaign launched");
                        OperatorResponse::Launched {
                            counters: launched.counters,
                            rejects: launched
                                .rejects
                                .iter()
                                .take(100)
                                .map(ToString::to_string)
                                .collect(),
                        }
                    }
                    Err(e) => OperatorResponse::Error {
                        message: e.to_string(),
                    },
                }
            }
            OperatorRequest::Status { campaign_id } => match shared.farm.counters(&campaign_id) {
                Some(c) => OperatorResponse::Status(vec![c]),
                None => OperatorResponse::Error {
                    message: format!("no campaign {campaign_id:?} on this coordinator"),
                },
            },
            OperatorRequest::List => OperatorResponse::Status(shared.farm.all_counters()),
        };
        write_frame(&mut send, &response).await?;
    }
    Ok(())
}
