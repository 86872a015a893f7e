//! The operator control link on the coordinator: launch (with the CSV streamed in chunks),
//! status, pause, resume, cancel, nodes, drain. Only holders of an operator certificate get here.

use mailfarm_pki::wire::{write_frame, FrameReader};
use mailfarm_protocol::{Hello, HelloReply, OperatorRequest, OperatorResponse, PROTOCOL_VERSION};
use tracing::{info, warn};

use crate::server::{is_operator, launched_response, operator_version_ok, refuse, ChunkReader};
use crate::CoordinatorHandle;

/// Serves one operator link until it closes.
pub(crate) async fn serve(
    connection: quinn::Connection,
    mut send: quinn::SendStream,
    mut reader: FrameReader,
    hello: Hello,
    name: &str,
    handle: CoordinatorHandle,
) -> anyhow::Result<()> {
    if let Err(reason) = operator_version_ok(&hello) {
        refuse(&mut send, &connection, &reason).await;
        anyhow::bail!(reason);
    }
    if !is_operator(&connection, name) {
        let reason = format!("certificate is not the operator certificate of {name:?}");
        warn!(remote = %connection.remote_address(), "{reason}");
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
    let farm = || handle.farm();
    while let Some((request, _)) = reader.next::<OperatorRequest>().await? {
        let response = match request {
            OperatorRequest::Launch(submission) => {
                let id = submission.id.clone();
                let (tx, csv) = ChunkReader::new();
                let ingest = {
                    let handle = handle.clone();
                    tokio::spawn(async move { handle.launch(*submission, csv).await })
                };
                // Stream the CSV chunks into the ingest thread until CsvEnd.
                let mut feeding = Some(tx);
                loop {
                    match reader.next::<OperatorRequest>().await? {
                        Some((OperatorRequest::CsvChunk(chunk), _)) => {
                            if let Some(tx) = &feeding {
                                if tx.send(chunk).await.is_err() {
                                    // Ingest stopped early (bad header, template error):
                                    // keep reading until CsvEnd, then report its error.
                                    feeding = None;
                                }
                            }
                        }
                        Some((OperatorRequest::CsvEnd, _)) => break,
                        Some(_) => anyhow::bail!("expected CSV chunks during a launch"),
                        None => anyhow::bail!("operator link closed during a launch"),
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
                launched_response(result)
            }
            OperatorRequest::CsvChunk(_) | OperatorRequest::CsvEnd => OperatorResponse::Error {
                message: "CSV data outside a launch".into(),
            },
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
                Err(message) => OperatorResponse::Error { message },
            },
            OperatorRequest::Nodes => OperatorResponse::Nodes(farm().nodes()),
            OperatorRequest::Drain { node } => {
                if farm().set_draining(&node, true) {
                    info!(%node, operator = name, "draining node");
                    OperatorResponse::Done {
                        message: format!("{node} is draining: no new work; see `farm nodes`"),
                    }
                } else {
                    OperatorResponse::Error {
                        message: format!("no smurf {node:?} is connected"),
                    }
                }
            }
            OperatorRequest::Suppress { address, reason } => {
                // Kept in the form ingest stores (IDN domains as A-labels), so it matches.
                match mailfarm_templates::address::normalize_recipient(address.trim()) {
                    Err(why) => OperatorResponse::Error {
                        message: format!("{address:?} is not an address: {why}"),
                    },
                    Ok(normalized) => match farm().store().suppress(&normalized, &reason) {
                        Ok(()) => OperatorResponse::Done {
                            message: format!("{} suppressed", address.trim()),
                        },
                        Err(e) => OperatorResponse::Error {
                            message: e.to_string(),
                        },
                    },
                }
            }
            OperatorRequest::Undrain { node } => {
                if farm().set_draining(&node, false) {
                    OperatorResponse::Done {
                        message: format!("{node} takes work again"),
                    }
                } else {
                    OperatorResponse::Error {
                        message: format!("no smurf {node:?} is connected"),
                    }
                }
            }
        };
        write_frame(&mut send, &response).await?;
    }
    Ok(())
}

fn done(result: Result<(), String>, message: String) -> OperatorResponse {
    match result {
        Ok(()) => OperatorResponse::Done { message },
        Err(message) => OperatorResponse::Error { message },
    }
}
