//! swaks, the SMTP test client, against a receiver on loopback: the one runner the capture and
//! inbound MX tests share. It runs as a tokio child process, so a receiver served by the same
//! runtime keeps answering while swaks talks to it.

use std::net::SocketAddr;

use crate::peers::require;

/// Runs swaks against `addr` (HELO `swaks.test`, 20 s timeout) with `args`; returns whether it
/// succeeded and its combined output.
pub async fn swaks(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let program = require("swaks");
    let out = tokio::process::Command::new(&program)
        .arg("--server")
        .arg(addr.ip().to_string())
        .arg("--port")
        .arg(addr.port().to_string())
        .args(["--helo", "swaks.test", "--timeout", "20"])
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The reply code swaks saw right after its RCPT TO line.
pub fn rcpt_reply_code(swaks_output: &str) -> Option<u16> {
    let mut lines = swaks_output.lines().skip_while(|l| !l.contains("RCPT TO:"));
    lines.next()?;
    let reply = lines.next()?;
    let code = reply.trim_start_matches(|c: char| !c.is_ascii_digit());
    code.get(..3)?.parse().ok()
}
