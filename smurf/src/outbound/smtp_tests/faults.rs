//! Broken servers: bad greetings, overlong and inconsistent replies, closed connections and
//! slow drips, each ending the session the way it must.

use super::*;

#[tokio::test]
async fn bad_greetings() {
    for (greeting, temporary) in [
        ("554 5.7.1 no service for you\r\n", false),
        ("421 4.3.2 busy\r\n", true),
    ] {
        let (client_io, mut server_io) = duplex(1 << 16);
        server_io.write_all(greeting.as_bytes()).await.unwrap();
        let e = SmtpClient::connect(client_io, config()).await.unwrap_err();
        match &e {
            SmtpError::Rejected { phase, reply } => {
                assert_eq!(*phase, Phase::Greeting);
                assert_eq!(reply.code, greeting[..3].parse::<u16>().unwrap());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.is_temporary(), temporary);
    }
}

#[tokio::test]
async fn invalid_helo_name_is_refused() {
    let (client_io, _server_io) = duplex(64);
    let mut cfg = config();
    cfg.helo_name = "bad name\r\nQUIT".into();
    let e = SmtpClient::connect(client_io, cfg).await.unwrap_err();
    assert!(matches!(e, SmtpError::InvalidHeloName(_)) && !e.is_temporary());
}

#[tokio::test]
async fn overlong_reply_line_is_an_error() {
    let (client_io, mut server_io) = duplex(1 << 16);
    let server = tokio::spawn(async move {
        let mut junk = b"220 ".to_vec();
        junk.extend(std::iter::repeat_n(b'x', 50_000));
        // The client gives up before reading everything: ignore errors.
        let _ = server_io.write_all(&junk).await;
        let _ = server_io.write_all(b"\r\n").await;
    });
    let e = SmtpClient::connect(client_io, config()).await.unwrap_err();
    assert!(
        matches!(
            e,
            SmtpError::Protocol {
                phase: Phase::Greeting,
                error: ProtocolError::LineTooLong
            }
        ),
        "{e:?}"
    );
    assert!(e.is_temporary());
    server.await.unwrap();
}

#[tokio::test]
async fn inconsistent_multiline_breaks_the_session() {
    let (mut c, server) = session(PIPE, |mut f| async move {
        f.expect("NOOP").await;
        f.send("250-one\r\n251 two\r\n").await;
    })
    .await;
    let e = c.noop().await.unwrap_err();
    assert!(matches!(
        e,
        SmtpError::Protocol {
            error: ProtocolError::InconsistentCode { .. },
            ..
        }
    ));
    assert!(c.is_broken());
    server.await.unwrap();
}

#[tokio::test]
async fn connection_closed_before_final_reply_is_temporary() {
    let (mut c, server) = session(PIPE, |mut f| async move {
        for _ in 0..3 {
            f.line().await;
        }
        f.send("250 Ok\r\n250 Ok\r\n354 go\r\n").await;
        f.line().await; // first content line, then hang up
    })
    .await;
    let e = c
        .send("s@x.test", "r@y.test", b"line one\r\nline two\r\n")
        .await
        .unwrap_err();
    assert!(e.is_temporary(), "{e:?}");
    assert!(
        matches!(
            e,
            SmtpError::Closed {
                phase: Phase::DataEnd
            } | SmtpError::Io {
                phase: Phase::DataBody,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(c.is_broken());
    server.await.unwrap();
}

#[tokio::test]
async fn connection_closed_while_writing_a_big_message_is_temporary() {
    let (client_io, server_io) = duplex(1024);
    let server = tokio::spawn(async move {
        let mut f = Fake::new(server_io);
        f.greet(PIPE).await;
        for _ in 0..3 {
            f.line().await;
        }
        f.send("250 Ok\r\n250 Ok\r\n354 go\r\n").await;
        f.line().await;
    });
    let mut c = SmtpClient::connect(client_io, config()).await.unwrap();
    let big = b"0123456789012345678901234567890123456789\r\n".repeat(20_000);
    let e = c.send("s@x.test", "r@y.test", &big).await.unwrap_err();
    assert!(
        matches!(
            e,
            SmtpError::Io {
                phase: Phase::DataBody,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_temporary() && c.is_broken());
    server.await.unwrap();
}

#[tokio::test]
async fn slow_drip_greeting_times_out() {
    let (client_io, mut server_io) = duplex(1 << 16);
    let server = tokio::spawn(async move {
        // One byte every 50 ms: each read makes progress, the reply never
        // completes within the phase timeout.
        for b in b"220 slow server\r\n" {
            if server_io.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut cfg = config();
    cfg.timeouts.greeting = Duration::from_millis(300);
    let started = tokio::time::Instant::now();
    let e = SmtpClient::connect(client_io, cfg).await.unwrap_err();
    assert!(
        matches!(
            e,
            SmtpError::Timeout {
                phase: Phase::Greeting,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_temporary());
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    server.abort();
}

#[tokio::test]
async fn slow_final_reply_times_out_and_is_not_delivered() {
    let (client_io, server_io) = duplex(1 << 16);
    let server = tokio::spawn(async move {
        let mut f = Fake::new(server_io);
        f.greet(PIPE).await;
        for _ in 0..3 {
            f.line().await;
        }
        f.send("250 Ok\r\n250 Ok\r\n354 go\r\n").await;
        f.data().await;
        for b in b"250 Ok\r\n" {
            if f.io.get_mut().write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut cfg = config();
    cfg.timeouts.data_end = Duration::from_millis(200);
    let mut c = SmtpClient::connect(client_io, cfg).await.unwrap();
    let e = c.send("s@x.test", "r@y.test", b"m").await.unwrap_err();
    assert!(
        matches!(
            e,
            SmtpError::Timeout {
                phase: Phase::DataEnd,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_temporary() && c.is_broken());
    server.abort();
}
