//! What both kinds of links (smurf and operator) share on the coordinator: refusing a client.

use std::time::Duration;

use mailfarm_pki::wire::write_frame;
use mailfarm_protocol::HelloReply;

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
