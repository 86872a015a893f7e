//! Typed errors of the protocol: malformed bytes and rule violations are told apart, because a
//! daemon closes a link on either but logs and counts them differently.

use thiserror::Error;

/// Errors from the framing layer: the bytes on the stream are not a well-formed frame.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The frame header announces more bytes than the receiver accepts.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Largest accepted length.
        max: usize,
    },
    /// The frame body is not a valid postcard encoding of the expected message type.
    #[error("undecodable frame: {0}")]
    Decode(String),
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes of the incomplete frame that had arrived.
        buffered: usize,
    },
}

/// Errors from the session state machines: the peer broke a protocol rule.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The peer speaks a protocol version this node does not.
    #[error("peer speaks protocol version {peer}, this node speaks {ours}")]
    VersionMismatch {
        /// Version the peer announced.
        peer: u16,
        /// Version of this node.
        ours: u16,
    },
    /// A message arrived that is not allowed in the current state.
    #[error("unexpected {message} while {state}")]
    Unexpected {
        /// What arrived.
        message: &'static str,
        /// The state the session was in.
        state: &'static str,
    },
    /// A batch referred to a template the receiver was never sent.
    #[error("batch refers to unknown template {0}")]
    UnknownTemplate(String),
    /// A result named a recipient that was not leased to this smurf.
    #[error("result for recipient {0} which is not in flight on this link")]
    UnknownRecipient(u64),
    /// The coordinator sent more recipients than the window the smurf announced.
    #[error("window overrun: {in_flight} recipients in flight, window is {window}")]
    WindowOverrun {
        /// Recipients in flight after the batch.
        in_flight: usize,
        /// Announced window.
        window: usize,
    },
    /// The coordinator refused the link.
    #[error("refused by coordinator: {0}")]
    Refused(String),
    /// The bytes were not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A forwarding rule update that does not follow the rule set held.
    #[error(transparent)]
    Forward(#[from] crate::ForwardTableError),
}

/// The reply refusing a hello, and the error that caused it: what both session machines
/// return when they turn a client away.
pub(crate) fn refusal(error: ProtocolError) -> (crate::HelloReply, ProtocolError) {
    (
        crate::HelloReply::Refused {
            reason: error.to_string(),
        },
        error,
    )
}

/// The checks every hello gets first, on either kind of link: only one hello, and our version.
pub(crate) fn check_hello(
    already_welcomed: bool,
    hello: &crate::Hello,
) -> Result<(), (crate::HelloReply, ProtocolError)> {
    if already_welcomed {
        return Err(refusal(ProtocolError::Unexpected {
            message: "second hello",
            state: "ready",
        }));
    }
    if hello.version != crate::PROTOCOL_VERSION {
        return Err(refusal(ProtocolError::VersionMismatch {
            peer: hello.version,
            ours: crate::PROTOCOL_VERSION,
        }));
    }
    Ok(())
}
