//! The real peers mailfarm's tests (and the `mx` benchmark) run against, in one dev-only
//! crate, so each launcher has one owner: unbound ([`dns`]), Postfix smtpd and smtp-sink
//! ([`postfix`]), dkimpy ([`dkimpy`]), swaks ([`swaks`]), the fault sink ([`fault_sink`]), the standalone
//! inbound MX ([`inbound`]) and process farms of the
//! real `mailfarm` binary ([`farm`]).
//!
//! A peer that is missing fails the test loudly: nothing here skips. Everything listens on
//! 127.0.0.0/8. This is test code: launchers panic with the reason (the test fails), except
//! where a benchmark needs an error value ([`dns::TestDns::try_start`]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod dkimpy;
pub mod dns;
pub mod farm;
pub mod fault_sink;
pub mod forward;
pub mod inbound;
pub mod peers;
pub mod postfix;
pub mod process;
mod roles;
pub mod swaks;

pub use farm::{
    assert_permanent_dns_failure, built_binary, domains_csv, launch_event, launch_events, mailfarm,
    mailfarm_binary, metrics, number, recipients_csv, write_campaign, write_campaign_direct,
    ProcessFarm,
};
pub use fault_sink::FaultSinkProcess;
pub use inbound::InboundProcess;
pub use peers::{free_port, free_udp_port, is_root, require};
pub use postfix::SmtpSink;
pub use process::Daemon;
pub use swaks::{rcpt_reply_code, swaks};
