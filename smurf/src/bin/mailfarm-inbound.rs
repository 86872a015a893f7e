//! A standalone inbound MX (the smurf's `in` role without a coordinator), for
//! tests that must kill it with `kill -9` and for benchmarks.
//!
//! `mailfarm-inbound CONFIG.toml` reads an `[inbound]` section (as in a
//! smurf's config) and a fixed `[policy]`:
//!
//! ```toml
//! [inbound]
//! listen = "127.0.0.1:0"
//! mail_dir = "mail"
//!
//! [policy]
//! verp_key = "secret"               # the VERP key, as text
//! bounce_domains = ["bounce.example.test"]
//! local_addresses = ["postmaster@example.test"]
//! forwarded = []
//! ```
//!
//! It prints `listening on ADDR` once bound, then serves until SIGTERM or
//! Ctrl-C.

use std::io::Write;
use std::path::PathBuf;

use mailfarm_smurf::inbound::mx::{InboundConfig, InboundPolicy, InboundServer};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    inbound: InboundConfig,
    #[serde(default)]
    policy: Policy,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    verp_key: Option<String>,
    #[serde(default)]
    bounce_domains: Vec<String>,
    #[serde(default)]
    local_addresses: Vec<String>,
    #[serde(default)]
    forwarded: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("usage: mailfarm-inbound CONFIG.toml"))?;
    let text = std::fs::read_to_string(&path)?;
    let mut file: File = toml::from_str(&text)?;
    if let Some(base) = path.parent() {
        file.inbound.resolve_paths(base);
    }
    let p = file.policy;
    let policy = InboundPolicy::new(
        p.verp_key.as_deref().map(str::as_bytes),
        p.bounce_domains,
        p.local_addresses,
        p.forwarded,
    );
    let (_policy_tx, policy_rx) = tokio::sync::watch::channel(policy);
    let server = InboundServer::bind(&file.inbound, policy_rx).await?;
    let mut out = std::io::stdout();
    writeln!(out, "listening on {}", server.local_addr())?;
    out.flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    server
        .run(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await?;
    Ok(())
}
