//! Finding the programs and ports a real peer needs: one place for "which binary", "are we
//! root" and "which loopback port is free", so every launcher fails the same loud way.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Path of a required peer program; panics with an explanation when it is missing.
pub fn require(program: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let path = Path::new(dir).join(program);
        if path.exists() {
            return path;
        }
    }
    panic!(
        "required peer `{program}` is not installed: this test needs it (CI installs it with \
         apt-get; see .ci/run). Refusing to skip."
    );
}

/// Whether this process runs as root (smtp-sink then needs `-u`).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("no free UDP port")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A port free on 127.0.0.1 for both TCP and UDP right now; `None` after 50 tries.
pub fn free_tcp_udp_port() -> Option<u16> {
    for _ in 0..50 {
        let Ok(tcp) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = tcp.local_addr().map(|a| a.port()) else {
            continue;
        };
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Some(port);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_for_both_protocols_can_be_bound_on_both() {
        let port = free_tcp_udp_port().expect("a free port");
        assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
        assert!(UdpSocket::bind(("127.0.0.1", port)).is_ok());
    }

    #[test]
    #[should_panic(expected = "Refusing to skip")]
    fn a_missing_program_panics() {
        require("mailfarm-no-such-peer");
    }
}
