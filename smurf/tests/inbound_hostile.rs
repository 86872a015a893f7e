//! Hostile clients against the inbound MX, run as its own process so its
//! memory can be read: endless lines, a slow drip of bytes or of message
//! lines, sessions that never QUIT or keep NOOPing. Every one is cut off by a
//! timeout, and the process's resident memory stays bounded while hundreds of
//! megabytes of junk arrive.

mod inbound_support;

use std::time::{Duration, Instant};

use inbound_support::{spawn_process, Raw, POSTMASTER};
use tokio::io::AsyncWriteExt;

const LIMITS: &str = "max_sessions_per_ip = 300\nmax_message_size = 1048576\n\
    max_command_line = 2048\nmax_message_line = 4096\ncommand_timeout_secs = 1\n\
    data_line_timeout_secs = 1\ndata_timeout_secs = 2\nsession_timeout_secs = 3";

/// Waits for the 421 that closes the session; returns how long it took.
async fn cut_off(raw: &mut Raw, started: Instant) -> Duration {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), raw.reply()).await {
            Err(_) => panic!("session not cut off after 10 s"),
            Ok(None) => panic!("closed without a 421"),
            Ok(Some((421, _))) => break,
            Ok(Some(_)) => {}
        }
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(5), raw.reply())
            .await
            .expect("not closed after 421")
            .is_none(),
        "still open after 421"
    );
    started.elapsed()
}

async fn greeted(addr: std::net::SocketAddr) -> Raw {
    let mut raw = Raw::connect(addr).await;
    assert_eq!(raw.reply().await.map(|r| r.0), Some(220));
    assert_eq!(raw.cmd("EHLO hostile.test").await, Some(250));
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_cut_off_and_memory_stays_bounded() {
    let server = spawn_process(LIMITS);
    let addr = server.addr;
    let before = server.rss_kib();

    // 100 endless lines of 4 MiB each, at once.
    let mut floods = Vec::new();
    for _ in 0..100 {
        floods.push(tokio::spawn(async move {
            let mut raw = greeted(addr).await;
            let chunk = vec![b'A'; 64 * 1024];
            for _ in 0..64 {
                if raw.wr.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            raw
        }));
    }
    let mut peak = 0;
    for f in floods {
        let raw = f.await.expect("flood task");
        peak = peak.max(server.rss_kib());
        drop(raw);
    }
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "RSS grew by {grown} KiB for 400 MiB of endless lines (before {before} KiB)"
    );

    // A slow drip of bytes without a line end: cut off by the command timeout.
    let mut raw = greeted(addr).await;
    let started = Instant::now();
    let drip = tokio::spawn(async move {
        for b in b"NOOP NOOP NOOP NOOP NOOP NOOP".iter().cycle().take(60) {
            if raw.wr.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        raw
    });
    let mut raw = drip.await.expect("drip task");
    let took = cut_off(&mut raw, started).await;
    assert!(took < Duration::from_secs(3), "byte drip lasted {took:?}");

    // A slow drip of message lines, each within the line timeout: cut off by
    // the DATA timeout (2 s).
    let mut raw = greeted(addr).await;
    assert_eq!(raw.cmd("MAIL FROM:<s@x.test>").await, Some(250));
    assert_eq!(raw.cmd(&format!("RCPT TO:<{POSTMASTER}>")).await, Some(250));
    assert_eq!(raw.cmd("DATA").await, Some(354));
    let started = Instant::now();
    let mut lines = 0;
    while started.elapsed() < Duration::from_secs(6) {
        if raw.send(b"drip\r\n").await.is_err() {
            break;
        }
        lines += 1;
        tokio::time::sleep(Duration::from_millis(400)).await;
        if lines > 3 {
            break;
        }
    }
    let took = cut_off(&mut raw, started).await;
    assert!(took < Duration::from_secs(4), "line drip lasted {took:?}");

    // Never QUIT, just sit there: cut off by the command timeout.
    let mut raw = greeted(addr).await;
    let took = cut_off(&mut raw, Instant::now()).await;
    assert!(
        took < Duration::from_secs(3),
        "idle session lasted {took:?}"
    );

    // NOOP forever, each within the command timeout: cut off by the session
    // timeout (3 s).
    let mut raw = greeted(addr).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        match raw.cmd("NOOP").await {
            Some(250) => tokio::time::sleep(Duration::from_millis(500)).await,
            Some(421) => break,
            other => panic!("NOOP got {other:?}"),
        }
    }
    let took = started.elapsed();
    assert!(
        (Duration::from_secs(2)..Duration::from_secs(5)).contains(&took),
        "NOOP session lasted {took:?}"
    );

    // Still serving.
    let mut raw = greeted(addr).await;
    assert_eq!(raw.cmd("QUIT").await, Some(221));
    let after = server.rss_kib();
    assert!(
        after < before + 64 * 1024,
        "RSS {after} KiB after the attacks, {before} KiB before"
    );
}
