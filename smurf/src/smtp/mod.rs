//! SMTP shared by every role: bounded line reading ([`line`](mod@line)),
//! command parsing on the receiving side ([`command`]), the DATA phase's
//! boundary and dot-unstuffing ([`data`]), reply parsing on the sending side
//! ([`reply`]), and the one SMTP server core every receiver runs on
//! ([`server`], [`session`](mod@session)) with the decisions it asks of a
//! receiver ([`policy`]).
//!
//! It sits below the roles so that none of them reaches into another: the
//! outbound client reads replies with the same line reader the inbound
//! receivers read commands with, and both import it from here.

pub mod command;
pub mod data;
pub mod line;
pub mod policy;
pub mod reply;
pub mod server;
pub mod session;
