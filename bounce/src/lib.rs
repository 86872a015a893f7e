//! Bounce analysis for mailfarm, sans IO: give it the bytes of a message that came back to a
//! VERP return path and it says what the message is and, for each failed recipient, why it
//! failed and whether the failure is hard.
//!
//! - [`analyse`] reads RFC 3464 DSNs (also RFC 6533 global ones), the non-standard bounces of
//!   the common MTAs and providers, ARF complaints (RFC 5965), auto-replies (RFC 3834) and
//!   delay reports, which are not failures.
//! - [`classify_reply`] puts a synchronous SMTP reply (a 5xx a sender node got) through the
//!   same rules.
//! - Reasons are Sisimai's vocabulary ([`Reason`]), grouped into [`Family`]s.
//! - [`split_mbox`] and [`inspect_file`] serve `mailfarm bounce inspect`; [`decode_verp`]
//!   reads a return path without the key (the bounce role verifies with
//!   `mailfarm_templates::VerpSigner`).
//!
//! Nothing here panics on hostile input (see the fuzz target in `fuzz/`).

#![warn(clippy::unwrap_used)]

mod address;
mod analyse;
mod arf;
mod classify;
mod dsn;
mod error;
mod inspect;
mod mbox;
mod reason;
mod rules;
mod ses;
mod text;
mod verp;

pub use analyse::{analyse, Action, Analysis, Kind, RecipientFailure, MAX_MESSAGE_BYTES};
pub use classify::classify_reply;
pub use error::BounceError;
pub use inspect::{inspect_file, inspect_message, lines_for, InspectLine};
pub use mbox::split_mbox;
pub use reason::{Family, Reason};
pub use verp::{decode_verp, VerpGuess};
