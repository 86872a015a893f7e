//! The operator control link on the coordinator: launch (with the CSV streamed in chunks),
//! status, pause, resume, cancel, nodes, drain. Only holders of an operator certificate get here.

use mailfarm_pki::wire::{write_frame, FrameReader};
use mailfarm_pki::{operator_dns_name, peer_has_name};
use mailfarm_protocol::{
    CampaignSubmission, Hello, OperatorEvent, OperatorLink, OperatorRequest, OperatorResponse,
};
use tracing::info;

use crate::farm::FarmError;
use crate::launch::{LaunchError, Launched};
use crate::links::answer_hello;
use crate::CoordinatorHandle;

/// CSV chunks buffered between the operator link and the ingest thread.
const CSV_CHUNKS_BUFFERED: usize = 8;

/// Serves one operator link until it closes.
pub(crate) async fn serve(
    connection: quinn::Connection,
    mut send: quinn::SendStream,
    mut reader: FrameReader,
    hello: Hello,
    handle: CoordinatorHandle,
) -> anyhow::Result<()> {
    let mut link = OperatorLink::new();
    let judged = link.on_hello(hello, |name| {
        peer_has_name(&connection, &operator_dns_name(name))
    });
    answer_hello(&mut send, &connection, "operator", judged).await?;
    let name = link.name().unwrap_or_default().to_owned();
    let name = name.as_str();
    while let Some((request, _)) = reader.next::<OperatorRequest>().await? {
        let request = match link.on_request(request) {
            Ok(OperatorEvent::Request(request)) => request,
            Ok(OperatorEvent::Launch(submission)) => {
                let response = launch(*submission, &mut link, &mut reader, &handle, name).await?;
                write_frame(&mut send, &response).await?;
                continue;
            }
            Ok(OperatorEvent::CsvChunk(_) | OperatorEvent::CsvEnd) | Err(_) => {
                let response = OperatorResponse::Error {
                    message: "CSV data outside a launch".into(),
                };
                write_frame(&mut send, &response).await?;
                continue;
            }
        };
        let response = answer(request, &handle, name);
        write_frame(&mut send, &response).await?;
    }
    Ok(())
}

/// Ingests a launch: streams the CSV chunks that follow into the ingest thread until the end.
async fn launch(
    submission: CampaignSubmission,
    link: &mut OperatorLink,
    reader: &mut FrameReader,
    handle: &CoordinatorHandle,
    name: &str,
) -> anyhow::Result<OperatorResponse> {
    let id = submission.id.clone();
    let (tx, csv) = ChunkReader::new();
    let ingest = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.launch(submission, csv).await })
    };
    let mut feeding = Some(tx);
    loop {
        let Some((request, _)) = reader.next::<OperatorRequest>().await? else {
            anyhow::bail!("operator link closed during a launch");
        };
        match link.on_request(request)? {
            OperatorEvent::CsvChunk(chunk) => {
                if let Some(tx) = &feeding {
                    if tx.send(chunk).await.is_err() {
                        // Ingest stopped early (bad header, template error): keep reading
                        // until the end, then report its error.
                        feeding = None;
                    }
                }
            }
            OperatorEvent::CsvEnd => break,
            other => anyhow::bail!("expected CSV chunks during a launch, got {other:?}"),
        }
    }
    drop(feeding);
    let result = ingest
        .await
        .map_err(|e| anyhow::anyhow!("ingest task failed: {e}"))?;
    if let Ok(launched) = &result {
        info!(campaign = %id, operator = name, total = launched.counters.total,
              rejected = launched.counters.rejected_rows, "campaign launched");
    }
    Ok(launched_response(result))
}

/// The answer to one request (anything but a launch).
fn answer(request: OperatorRequest, handle: &CoordinatorHandle, name: &str) -> OperatorResponse {
    let farm = || handle.farm();
    match request {
        OperatorRequest::Launch(_) | OperatorRequest::CsvChunk(_) | OperatorRequest::CsvEnd => {
            OperatorResponse::Error {
                message: "launch frames out of order".into(),
            }
        }
        OperatorRequest::Status { campaign_id } => match farm().counters(&campaign_id) {
            Some(c) => OperatorResponse::Status(vec![c]),
            None => OperatorResponse::Error {
                message: format!("no campaign {campaign_id:?} on this coordinator"),
            },
        },
        OperatorRequest::List => OperatorResponse::Status(farm().all_counters()),
        OperatorRequest::Pause { campaign_id } => done(
            farm().pause(&campaign_id),
            format!("campaign {campaign_id} paused"),
        ),
        OperatorRequest::Resume { campaign_id } => done(
            farm().resume(&campaign_id),
            format!("campaign {campaign_id} resumed"),
        ),
        OperatorRequest::Cancel { campaign_id } => match farm().cancel(&campaign_id) {
            Ok(skipped) => OperatorResponse::Done {
                message: format!(
                    "campaign {campaign_id} cancelled: {skipped} unsent recipients skipped"
                ),
            },
            Err(e) => OperatorResponse::Error {
                message: e.to_string(),
            },
        },
        OperatorRequest::Nodes => OperatorResponse::Nodes(farm().nodes()),
        OperatorRequest::Sites => OperatorResponse::Sites(farm().throttle().sites()),
        OperatorRequest::Drain { node } => {
            if farm().set_draining(&node, true) {
                info!(%node, operator = name, "draining node");
                OperatorResponse::Done {
                    message: format!("{node} is draining: no new work; see `farm nodes`"),
                }
            } else {
                OperatorResponse::Error {
                    message: format!("no smurf {node:?} is known to this coordinator"),
                }
            }
        }
        OperatorRequest::Suppress { address, reason } => {
            // Kept in the form ingest stores (IDN domains as A-labels), so it matches.
            match mailfarm_templates::address::normalize_recipient(address.trim()) {
                Err(why) => OperatorResponse::Error {
                    message: format!("{address:?} is not an address: {why}"),
                },
                Ok(normalized) => match farm().suppress(&normalized, &reason) {
                    Ok(()) => OperatorResponse::Done {
                        message: format!("{} suppressed", address.trim()),
                    },
                    Err(e) => OperatorResponse::Error {
                        message: e.to_string(),
                    },
                },
            }
        }
        OperatorRequest::Assign { node, role, force } => match farm().assign(&node, role, force) {
            Ok(message) => {
                info!(%node, %role, force, operator = name, "node assigned");
                OperatorResponse::Done { message }
            }
            Err(e) => OperatorResponse::Error {
                message: e.to_string(),
            },
        },
        OperatorRequest::Farm => OperatorResponse::Farm(Box::new(farm().snapshot())),
        OperatorRequest::ForwardSet { rules } => {
            let count = rules.len();
            match handle.forwarding().set(farm().store(), rules) {
                Ok(message) => {
                    info!(count, operator = name, "forward rules set");
                    OperatorResponse::Done { message }
                }
                Err(problems) => OperatorResponse::ForwardRefused { problems },
            }
        }
        OperatorRequest::ForwardRemove { old } => {
            match handle.forwarding().remove(farm().store(), &old) {
                Ok(message) => {
                    info!(%old, operator = name, "forward rule removed");
                    OperatorResponse::Done { message }
                }
                Err(message) => OperatorResponse::Error { message },
            }
        }
        OperatorRequest::ForwardList => match farm().store().forward_rules() {
            Ok((version, rules)) => OperatorResponse::ForwardRules { version, rules },
            Err(e) => OperatorResponse::Error {
                message: e.to_string(),
            },
        },
        OperatorRequest::Undrain { node } => {
            if farm().set_draining(&node, false) {
                OperatorResponse::Done {
                    message: format!("{node} takes work again"),
                }
            } else {
                OperatorResponse::Error {
                    message: format!("no smurf {node:?} is known to this coordinator"),
                }
            }
        }
    }
}

fn done(result: Result<(), FarmError>, message: String) -> OperatorResponse {
    match result {
        Ok(()) => OperatorResponse::Done { message },
        Err(e) => OperatorResponse::Error {
            message: e.to_string(),
        },
    }
}

/// Reads CSV chunks of a launch from the operator link into a blocking reader.
pub(crate) struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    /// A reader and the sender that feeds it; dropping the sender ends the input.
    pub(crate) fn new() -> (tokio::sync::mpsc::Sender<Vec<u8>>, Self) {
        let (tx, rx) = tokio::sync::mpsc::channel(CSV_CHUNKS_BUFFERED);
        (
            tx,
            Self {
                rx,
                current: Vec::new(),
                pos: 0,
            },
        )
    }
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.current.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Builds the operator's answer to a finished launch.
pub(crate) fn launched_response(result: Result<Launched, LaunchError>) -> OperatorResponse {
    match result {
        Ok(launched) => OperatorResponse::Launched {
            counters: Box::new(launched.counters),
            rejects: launched.rejects.iter().map(ToString::to_string).collect(),
            rejects_file: launched.rejects_file.map(|p| p.display().to_string()),
        },
        Err(e) => OperatorResponse::Error {
            message: e.to_string(),
        },
    }
}
