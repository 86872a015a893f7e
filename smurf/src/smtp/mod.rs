//! SMTP syntax shared by every role: bounded line reading ([`line`](mod@line)),
//! command parsing on the receiving side ([`command`]), the DATA phase's
//! boundary and dot-unstuffing ([`data`]) and reply parsing on the sending side
//! ([`reply`]).
//!
//! It sits below the roles so that none of them reaches into another: the
//! outbound client reads replies with the same line reader the inbound
//! receivers read commands with, and both import it from here.

pub mod command;
pub mod data;
pub mod line;
pub mod reply;
