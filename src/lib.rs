//! The `mailfarm` package's library side: pieces shared by the CLI, the benchmarks and the
//! end-to-end tests.

#![warn(clippy::unwrap_used)]

pub mod embedded;
