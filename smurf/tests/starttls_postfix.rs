//! STARTTLS against a real MTA: sessions opened with
//! [`open_session`] to a private Postfix instance (see `mailfarm_testkit::postfix`),
//! whose smtpd does the TLS side and whose `local(8)` delivers into a
//! maildir. Requires root and the Debian package `postfix`: the tests fail,
//! never skip, when something is missing.

use std::path::Path;
use std::time::Duration;

use mailfarm_smurf::outbound::session::{open_session, SessionSettings};
use mailfarm_smurf::outbound::smtp::{Delivery, SmtpError, Timeouts};
use mailfarm_smurf::outbound::tls::{TlsClient, TlsPolicy, TlsVerify};
use mailfarm_testkit::postfix::{Postfix, HOST_NAME, MAILBOX};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::ProtocolVersion;

fn settings(tls: TlsPolicy, verify: &TlsVerify) -> SessionSettings {
    let mut s = SessionSettings::new(
        "smurf.client.test",
        TlsClient::new(verify).expect("TLS configuration"),
    );
    s.tls = tls;
    s.timeouts = Timeouts::uniform(Duration::from_secs(20));
    s.connect_timeout = Duration::from_secs(5);
    s
}

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: <sender@smurf.test>\r\nTo: <{MAILBOX}>\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@smurf.test>\r\n\r\nHello over {subject}.\r\n"
    )
    .into_bytes()
}

/// A PEM file with a CA that signed nothing Postfix presents.
fn unrelated_ca(dir: &Path) -> std::path::PathBuf {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("CA");
    let path = dir.join("other-ca.pem");
    std::fs::write(&path, cert.pem()).expect("writing other-ca.pem");
    path
}

#[tokio::test]
async fn opportunistic_starttls_with_postfix_delivers_to_the_maildir() {
    let postfix = Postfix::start();
    let s = settings(TlsPolicy::Opportunistic, &TlsVerify::Insecure);
    let mut session = open_session(postfix.tls_addr, HOST_NAME, &s)
        .await
        .expect("session");
    let tls = session.tls.expect("TLS was not negotiated");
    assert!(
        matches!(
            tls.version,
            ProtocolVersion::TLSv1_3 | ProtocolVersion::TLSv1_2
        ),
        "{tls:?}"
    );
    assert!(!tls.authenticated && session.tls_fallback.is_none());
    assert!(session.client.get_ref().is_tls());
    // Capabilities come from the EHLO after TLS (Postfix no longer offers
    // STARTTLS then).
    assert!(!session.client.capabilities().starttls);

    let delivery = session
        .client
        .send("sender@smurf.test", MAILBOX, &message("opportunistic"))
        .await
        .expect("send");
    match &delivery {
        Delivery::Delivered(reply) => assert_eq!(reply.code, 250),
        other => panic!("not delivered: {other:?}"),
    }
    // Unknown mailbox: a definite 550 from Postfix, over the same session.
    let refused = session
        .client
        .send("sender@smurf.test", "nobody-here@example.test", b"x")
        .await
        .expect("send");
    assert!(
        matches!(&refused, Delivery::Failed(r) if r.reply.code == 550),
        "{refused:?}"
    );
    session.client.quit().await.expect("quit");

    let messages = postfix.wait_for_messages(1);
    assert!(
        messages[0].contains("Subject: opportunistic"),
        "{}",
        messages[0]
    );
    assert!(messages[0].contains("Hello over opportunistic."));
    // smtpd_tls_received_header: Postfix itself records the TLS session.
    assert!(messages[0].contains("(using TLSv1."), "{}", messages[0]);
    let line = postfix.wait_for_log("TLS connection established from");
    assert!(line.contains("Anonymous TLS connection"), "{line}");
    postfix.wait_for_log("status=sent (delivered to maildir)");
}

#[tokio::test]
async fn required_tls_against_postfix_without_starttls_sends_nothing() {
    let postfix = Postfix::start();
    let s = settings(TlsPolicy::Required, &TlsVerify::Insecure);
    let e = open_session(postfix.plain_addr, HOST_NAME, &s)
        .await
        .expect_err("a session without TLS was opened");
    assert!(matches!(e, SmtpError::TlsRequired(_)), "{e:?}");
    assert!(e.is_temporary());
    // Postfix counts the commands it got: EHLO and QUIT, nothing else.
    // (The harness's readiness probes log "commands=0/0" disconnects.)
    let line = postfix.wait_for_log("ehlo=");
    assert!(
        line.ends_with("ehlo=1 quit=1 commands=2"),
        "unexpected commands: {line}"
    );
    // The same policy works with the listener that offers STARTTLS.
    let session = open_session(postfix.tls_addr, HOST_NAME, &s)
        .await
        .expect("session");
    assert!(session.tls.is_some());
    session.client.quit().await.expect("quit");
}

#[tokio::test]
async fn custom_roots_verify_postfix_certificate() {
    let postfix = Postfix::start();
    let scratch = tempfile::tempdir().expect("tempdir");
    let ours = TlsVerify::CustomRoots(postfix.ca_pem.clone());
    let other = TlsVerify::CustomRoots(unrelated_ca(scratch.path()));

    // The right CA and name: verified TLS, and the message goes through.
    let s = settings(TlsPolicy::Required, &ours);
    let mut session = open_session(postfix.tls_addr, HOST_NAME, &s)
        .await
        .expect("verified session");
    assert!(session.tls.expect("no TLS").authenticated);
    let delivery = session
        .client
        .send("sender@smurf.test", MAILBOX, &message("verified"))
        .await
        .expect("send");
    assert!(delivery.is_delivered(), "{delivery:?}");
    session.client.quit().await.expect("quit");

    // Another CA, or a name the certificate does not carry: the handshake
    // fails, a temporary error under the Required policy.
    for (verify, name) in [(&other, HOST_NAME), (&ours, "other.test")] {
        let s = settings(TlsPolicy::Required, verify);
        let e = open_session(postfix.tls_addr, name, &s)
            .await
            .expect_err("handshake should fail");
        assert!(matches!(e, SmtpError::TlsHandshake(_)), "{e:?}");
        assert!(e.is_temporary());
    }

    // Opportunistic with the wrong CA: falls back to a new plaintext
    // connection, which still delivers.
    let s = settings(TlsPolicy::Opportunistic, &other);
    let mut session = open_session(postfix.tls_addr, HOST_NAME, &s)
        .await
        .expect("fallback session");
    assert!(session.tls.is_none());
    assert!(matches!(
        session.tls_fallback,
        Some(SmtpError::TlsHandshake(_))
    ));
    assert!(!session.client.get_ref().is_tls());
    let delivery = session
        .client
        .send("sender@smurf.test", MAILBOX, &message("fallback"))
        .await
        .expect("send");
    assert!(delivery.is_delivered(), "{delivery:?}");
    session.client.quit().await.expect("quit");

    let messages = postfix.wait_for_messages(2);
    let verified = messages
        .iter()
        .find(|m| m.contains("Subject: verified"))
        .expect("verified message");
    let fallback = messages
        .iter()
        .find(|m| m.contains("Subject: fallback"))
        .expect("fallback message");
    assert!(verified.contains("(using TLSv1."), "{verified}");
    assert!(!fallback.contains("(using TLS"), "{fallback}");
}
