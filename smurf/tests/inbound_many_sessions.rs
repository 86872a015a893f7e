//! One node holds at least 150 busy sessions at once: 160 clients all stop in
//! the middle of their message, wait for each other, then finish, and every
//! message gets its 250 and is stored. Then smtp-source (Postfix) with 150
//! sessions checks the same with an independent client. Requires
//! `/usr/sbin/smtp-source`: fails, never skips, without it.

mod inbound_support;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use inbound_support::{require, start, Raw, POSTMASTER, SMTP_SOURCE};
use mailfarm_smurf::inbound::mx::MailKind;
use tokio::sync::Barrier;

const SESSIONS: usize = 160;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_160_busy_sessions_then_smtp_source_150() {
    require(SMTP_SOURCE);
    let server = start(|c| c.limits.max_sessions_per_ip = 300).await;
    let addr = server.addr;
    let barrier = Arc::new(Barrier::new(SESSIONS + 1));
    let mut tasks = Vec::new();
    for i in 0..SESSIONS {
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let mut raw = Raw::connect(addr).await;
            assert_eq!(raw.reply().await.map(|r| r.0), Some(220), "session {i}");
            assert_eq!(raw.cmd("EHLO many.test").await, Some(250));
            assert_eq!(raw.cmd("MAIL FROM:<s@many.test>").await, Some(250));
            assert_eq!(raw.cmd(&format!("RCPT TO:<{POSTMASTER}>")).await, Some(250));
            assert_eq!(raw.cmd("DATA").await, Some(354));
            raw.send(format!("Subject: {i}\r\n\r\nfirst half\r\n").as_bytes())
                .await
                .expect("sending");
            barrier.wait().await;
            raw.send(b"second half\r\n.\r\n").await.expect("sending");
            raw.reply().await.map(|r| r.0)
        }));
    }
    tokio::time::timeout(Duration::from_secs(30), barrier.wait())
        .await
        .expect("160 sessions were not all in DATA at once");
    for t in tasks {
        assert_eq!(t.await.expect("client"), Some(250));
    }
    assert_eq!(server.stored(MailKind::Local).len(), SESSIONS);
    assert_eq!(server.counters.refused_sessions.load(Relaxed), 0);

    let out = tokio::process::Command::new(SMTP_SOURCE)
        .args(["-c", "-s", "150", "-m", "1500", "-l", "10240"])
        .args(["-f", "s@source.test", "-t", POSTMASTER])
        .arg(format!("{}:{}", addr.ip(), addr.port()))
        .output()
        .await
        .expect("running smtp-source");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        server.counters.received.load(Relaxed),
        (SESSIONS + 1500) as u64
    );
    assert_eq!(server.stored(MailKind::Local).len(), SESSIONS + 1500);
    server.stop().await;
}
