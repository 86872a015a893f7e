//! What both kinds of links (smurf and operator) share on the coordinator: answering a hello,
//! refusing a client.

use std::time::Duration;

use mailfarm_pki::wire::write_frame;
use mailfarm_protocol::{HelloReply, ProtocolError};
use tracing::warn;

/// Answers a hello that the link's state machine judged: writes the welcome, or logs the
/// refusal (`who` names the kind of client), sends it, closes the link and returns the error.
pub(crate) async fn answer_hello(
    send: &mut quinn::SendStream,
    connection: &quinn::Connection,
    who: &str,
    judged: Result<HelloReply, (HelloReply, ProtocolError)>,
) -> anyhow::Result<()> {
    match judged {
        Ok(welcome) => {
            write_frame(send, &welcome).await?;
            Ok(())
        }
        Err((refusal, error)) => {
            warn!(remote = %connection.remote_address(), "{who} refused: {error}");
            if let HelloReply::Refused { reason } = &refusal {
                refuse(send, connection, reason).await;
            }
            Err(error.into())
        }
    }
}

/// Sends a refusal, closes the link.
pub(crate) async fn refuse(
    send: &mut quinn::SendStream,
    connection: &quinn::Connection,
    reason: &str,
) {
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
