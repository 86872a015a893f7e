//! STARTTLS on the inbound MX with an independent client: `swaks -tls`, with
//! the certificate and key named in the `[inbound]` config. Requires
//! `/usr/bin/swaks` (and its TLS modules): fails, never skips, without them.

mod inbound_support;

use std::sync::atomic::Ordering::Relaxed;

use inbound_support::{start, Raw, POSTMASTER};
use mailfarm_smurf::inbound::mx::MailKind;
use mailfarm_testkit::swaks;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_starttls_delivers_under_tls() {
    let certs = tempfile::tempdir().expect("temp dir");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["mx.example.test".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let cert_path = certs.path().join("mx.pem");
    let key_path = certs.path().join("mx.key");
    std::fs::write(&cert_path, cert.pem()).expect("writing the certificate");
    std::fs::write(&key_path, key.serialize_pem()).expect("writing the key");
    let server = start(|c| {
        c.tls_cert = Some(cert_path.clone());
        c.tls_key = Some(key_path.clone());
    })
    .await;

    let (ok, out) = swaks(
        server.addr,
        &["-tls", "--from", "s@x.test", "--to", POSTMASTER],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("STARTTLS"), "{out}");
    assert!(out.contains("TLS started"), "{out}");
    assert!(out.contains("250 2.0.0 Ok: queued as"), "{out}");
    let kept = server.stored(MailKind::Local);
    assert_eq!(kept.len(), 1);
    assert!(kept[0].contains("with ESMTPS"), "{}", kept[0]);
    assert_eq!(server.counters.tls_sessions.load(Relaxed), 1);
    let events = server.events.lock().expect("events").clone();
    assert!(events.len() == 1 && events[0].tls, "{events:?}");

    // Without -tls the same server still takes mail in clear text.
    let (ok, out) = swaks(server.addr, &["--from", "s@x.test", "--to", POSTMASTER]).await;
    assert!(ok, "{out}");
    assert!(out.contains("250-STARTTLS"), "STARTTLS not offered:\n{out}");
    assert_eq!(server.stored(MailKind::Local).len(), 2);
    assert_eq!(server.counters.tls_sessions.load(Relaxed), 1);

    // Commands pipelined behind STARTTLS (CVE-2011-0411): the session is
    // dropped after the 220, the injected command never runs.
    let mut raw = Raw::connect(server.addr).await;
    assert_eq!(raw.reply().await.map(|r| r.0), Some(220));
    assert_eq!(raw.cmd("EHLO inject.test").await, Some(250));
    raw.send(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n")
        .await
        .expect("sending");
    assert_eq!(raw.reply().await.map(|r| r.0), Some(220));
    assert_eq!(raw.reply().await, None, "injected command answered");
    server.stop().await;
}
