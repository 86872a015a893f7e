//! STARTTLS and AUTH: the upgrade, its refusal and response injection; PLAIN and LOGIN, their
//! refusals and out-of-step servers.

use super::*;

#[tokio::test]
async fn starttls_ready_then_ehlo_again() {
    let (c, server) = session(&["STARTTLS", "PIPELINING"], |mut f| async move {
        f.expect("STARTTLS").await;
        f.send("220 2.0.0 Ready to start TLS\r\n").await;
        // (the TLS handshake would happen here)
        f.expect("EHLO client.test").await;
        f.send("250-fake.test\r\n250-PIPELINING\r\n250 SIZE 5000\r\n")
            .await;
    })
    .await;
    let stream = match c.starttls().await.unwrap() {
        StartTls::Ready(stream) => stream,
        StartTls::Refused(_, reply) => panic!("{reply}"),
    };
    let c = SmtpClient::after_tls(stream, config()).await.unwrap();
    assert!(c.greeting().is_none());
    assert!(!c.capabilities().starttls);
    assert_eq!(c.capabilities().max_size(), Some(5000));
    server.await.unwrap();
}

#[tokio::test]
async fn starttls_refused_keeps_the_session() {
    let (c, server) = session(&["STARTTLS"], |mut f| async move {
        f.expect("STARTTLS").await;
        f.send("454 4.7.0 TLS not available\r\n").await;
        f.expect("NOOP").await;
        f.send("250 2.0.0 Ok\r\n").await;
    })
    .await;
    let mut c = match c.starttls().await.unwrap() {
        StartTls::Refused(c, reply) => {
            assert_eq!(reply.code, 454);
            c
        }
        StartTls::Ready(_) => panic!("not refused"),
    };
    c.noop().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn starttls_response_injection_is_detected() {
    let (c, server) = session(&["STARTTLS"], |mut f| async move {
        f.expect("STARTTLS").await;
        f.send("220 Ready\r\n250 injected\r\n").await;
    })
    .await;
    let e = c.starttls().await.unwrap_err();
    assert!(matches!(
        e,
        SmtpError::Protocol {
            error: ProtocolError::DataAfterStartTls,
            ..
        }
    ));
    server.await.unwrap();
}

fn creds() -> Credentials {
    Credentials {
        username: "user".into(),
        password: "secret".into(),
    }
}

#[test]
fn base64_rfc4648_vectors() {
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(plain.as_bytes()), encoded);
    }
    assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
}

#[test]
fn credentials_debug_hides_the_password() {
    let shown = format!("{:?}", creds());
    assert!(
        shown.contains("user") && !shown.contains("secret"),
        "{shown}"
    );
}

#[tokio::test]
async fn auth_plain_prefers_plain_with_initial_response() {
    let (mut c, server) = session(&["AUTH LOGIN PLAIN"], |mut f| async move {
        f.expect("AUTH PLAIN AHVzZXIAc2VjcmV0").await;
        f.send("235 2.7.0 Authentication successful\r\n").await;
    })
    .await;
    assert_eq!(c.authenticate(&creds()).await.unwrap().code, 235);
    server.await.unwrap();
}

#[tokio::test]
async fn auth_plain_long_credentials_wait_for_the_challenge() {
    let long = Credentials {
        username: "user".into(),
        password: "p".repeat(400),
    };
    let token = base64(format!("\0user\0{}", long.password).as_bytes());
    let (mut c, server) = session(&["AUTH PLAIN"], |mut f| async move {
        f.expect("AUTH PLAIN").await;
        f.send("334 \r\n").await;
        f.expect(&token).await;
        f.send("235 2.7.0 Ok\r\n").await;
    })
    .await;
    assert_eq!(c.auth_plain(&long).await.unwrap().code, 235);
    server.await.unwrap();
}

#[tokio::test]
async fn auth_login_when_plain_is_not_offered() {
    let (mut c, server) = session(&["AUTH CRAM-MD5 LOGIN"], |mut f| async move {
        f.expect("AUTH LOGIN").await;
        f.send("334 VXNlcm5hbWU6\r\n").await;
        f.expect("dXNlcg==").await;
        f.send("334 UGFzc3dvcmQ6\r\n").await;
        f.expect("c2VjcmV0").await;
        f.send("235 2.7.0 Authentication successful\r\n").await;
    })
    .await;
    assert_eq!(c.authenticate(&creds()).await.unwrap().code, 235);
    server.await.unwrap();
}

#[tokio::test]
async fn auth_535_is_permanent_and_keeps_the_session() {
    let (mut c, server) = session(&["AUTH PLAIN LOGIN"], |mut f| async move {
        f.expect("AUTH PLAIN AHVzZXIAc2VjcmV0").await;
        f.send("535 5.7.8 Error: authentication failed\r\n").await;
        f.expect("AUTH LOGIN").await;
        f.send("334 VXNlcm5hbWU6\r\n").await;
        f.expect("dXNlcg==").await;
        f.send("334 UGFzc3dvcmQ6\r\n").await;
        f.expect("c2VjcmV0").await;
        f.send("535 5.7.8 Error: authentication failed\r\n").await;
        f.expect("NOOP").await;
        f.send("250 2.0.0 Ok\r\n").await;
    })
    .await;
    for e in [
        c.auth_plain(&creds()).await.unwrap_err(),
        c.auth_login(&creds()).await.unwrap_err(),
    ] {
        match &e {
            SmtpError::Rejected {
                phase: Phase::Auth,
                reply,
            } => assert_eq!(reply.code, 535),
            other => panic!("{other:?}"),
        }
        assert!(!e.is_temporary());
    }
    assert!(!c.is_broken());
    c.noop().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn auth_454_is_temporary() {
    let (mut c, server) = session(&["AUTH LOGIN"], |mut f| async move {
        f.expect("AUTH LOGIN").await;
        f.send("454 4.7.0 Temporary authentication failure\r\n")
            .await;
    })
    .await;
    let e = c.authenticate(&creds()).await.unwrap_err();
    assert!(
        matches!(&e, SmtpError::Rejected { phase: Phase::Auth, reply } if reply.code == 454),
        "{e:?}"
    );
    assert!(e.is_temporary());
    server.await.unwrap();
}

#[tokio::test]
async fn auth_out_of_step_breaks_the_session() {
    let (mut c, server) = session(&["AUTH PLAIN"], |mut f| async move {
        f.expect("AUTH PLAIN AHVzZXIAc2VjcmV0").await;
        f.send("334 more?\r\n").await;
    })
    .await;
    let e = c.authenticate(&creds()).await.unwrap_err();
    assert!(
        matches!(
            e,
            SmtpError::Protocol {
                phase: Phase::Auth,
                error: ProtocolError::UnexpectedReply(_)
            }
        ),
        "{e:?}"
    );
    assert!(e.is_temporary() && c.is_broken());
    server.await.unwrap();
}

#[tokio::test]
async fn auth_unavailable_or_invalid_sends_nothing() {
    let (mut c, server) = session(&["AUTH CRAM-MD5"], |mut f| async move {
        // Nothing but QUIT must arrive.
        f.expect("QUIT").await;
        f.send("221 2.0.0 Bye\r\n").await;
    })
    .await;
    let e = c.authenticate(&creds()).await.unwrap_err();
    assert!(matches!(e, SmtpError::AuthUnavailable(_)) && e.is_temporary());
    for bad in [
        Credentials {
            username: String::new(),
            password: "x".into(),
        },
        Credentials {
            username: "a\0b".into(),
            password: "x".into(),
        },
    ] {
        let e = c.auth_login(&bad).await.unwrap_err();
        assert!(matches!(e, SmtpError::InvalidCredentials(_)) && !e.is_temporary());
    }
    c.quit().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn auth_without_any_auth_capability() {
    let (mut c, server) = session(PIPE, |_| async {}).await;
    let e = c.authenticate(&creds()).await.unwrap_err();
    assert!(matches!(e, SmtpError::AuthUnavailable(_)), "{e:?}");
    server.await.unwrap();
}
