//! The wire protocol between mailfarm's coordinator, its smurfs (sender nodes) and operators.
//!
//! This crate is sans-IO: it holds the message types, the framing codec and the session state
//! machines, and never touches a socket or an async runtime. The daemons feed it bytes read from
//! QUIC streams and write out the bytes it produces, so every rule of the protocol is tested here
//! without a network.
//!
//! A link works like this:
//! 1. The client (smurf or operator) opens a bidirectional stream and sends [`Hello`] carrying
//!    [`PROTOCOL_VERSION`]; the QUIC handshake already negotiated [`ALPN`] and mutual TLS.
//! 2. The coordinator answers [`HelloReply::Welcome`] or [`HelloReply::Refused`]; then a smurf
//!    link carries [`CoordinatorMessage`]s and [`SmurfMessage`]s, an operator link
//!    [`OperatorRequest`]s and [`OperatorResponse`]s.
//! 3. For a smurf, the coordinator ships each campaign's [`TemplateBundle`] once (the smurf tells
//!    in its hello which template hashes it already holds), then only [`RecipientBatch`]es of
//!    per-recipient field values, never more than the smurf's window. The smurf answers with
//!    [`RecipientResult`]s, which give the credit back.

#![warn(clippy::unwrap_used)]

mod bounces;
mod duration;
mod error;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
mod forward;
mod frame;
mod messages;
mod operator_session;
mod rate;
mod roles;
mod session;
pub mod throttle;

pub use bounces::{
    BounceJob, BounceVerdict, BouncedRecipient, ReturnKind, ReturnedMail, Unsubscription,
    MAX_RETURNED_BYTES,
};
pub use duration::{parse_duration, DurationError};
pub use error::{FrameError, ProtocolError};
pub use forward::{
    snapshot as forward_snapshot, utc_day, ForwardRecord, ForwardRule, ForwardSettings,
    ForwardTable, ForwardTableError, ForwardUpdate, NoticeClaim, NoticeDecision, NoticeGrant,
};
pub use frame::{decode_message, encode_frame, FrameDecoder, DEFAULT_MAX_FRAME, FRAME_HEADER_LEN};
pub use messages::{
    CampaignCounters, CampaignState, CampaignSubmission, ContentHash, CoordinatorMessage,
    DeliveryTarget, Hello, HelloReply, NodeInfo, OperatorRequest, OperatorResponse, Outcome,
    RecipientBatch, RecipientData, RecipientResult, Role, ShapingUpdate, SmurfLoad, SmurfMessage,
    TemplateBundle,
};
pub use operator_session::{OperatorEvent, OperatorLink};
pub use rate::{Rate, RateError};
pub use roles::{
    Assignment, FarmSnapshot, InboundCounters, InboundPolicy, InboundRecord, NodeRole, NodeState,
    NodeStatus, UnknownRole,
};
pub use session::{CoordinatorLink, SmurfLink, SmurfLinkEvent};

/// ALPN identifier negotiated in the QUIC handshake. A peer speaking another major protocol
/// generation uses another ALPN and fails the handshake cleanly.
pub const ALPN: &[u8] = b"mailfarm/1";

/// Version carried in [`Hello`]; bumped on any incompatible change within one ALPN generation.
pub const PROTOCOL_VERSION: u16 = 1;
