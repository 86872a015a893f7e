//! The client's transactions: pipelined and lockstep envelopes, refusals, reply
//! classification, dot-stuffing, SIZE, 8BITMIME and SMTPUTF8.

use super::*;

#[tokio::test]
async fn pipelined_envelope_is_one_write() {
    let (client_io, server_io) = duplex(1 << 16);
    let writes = Arc::new(Mutex::new(Vec::new()));
    let server = tokio::spawn(async move {
        let mut f = Fake::new(server_io);
        f.greet(PIPE).await;
        // Replies are only sent once all three commands arrived: a
        // lockstep client would deadlock here (and the test time out).
        let data = f
            .accept_pipelined("MAIL FROM:<s@x.test> SIZE=10", "RCPT TO:<r@y.test>")
            .await;
        assert_eq!(data, b"Hi there\r\n.\r\n");
    });
    let stream = Recorder {
        inner: client_io,
        writes: Arc::clone(&writes),
    };
    let mut c = SmtpClient::connect(stream, config()).await.unwrap();
    writes.lock().unwrap().clear();
    let d = tokio::time::timeout(
        Duration::from_secs(5),
        c.send("s@x.test", "r@y.test", b"Hi there"),
    )
    .await
    .expect("pipelined client deadlocked")
    .unwrap();
    match &d {
        Delivery::Delivered(reply) => {
            assert_eq!(reply.code, 250);
            assert_eq!(reply.enhanced, Some(EnhancedStatus::new(2, 0, 0)));
            assert_eq!(reply.text, "Ok: queued as ABC");
        }
        other => panic!("{other:?}"),
    }
    let first_write = writes.lock().unwrap()[0].clone();
    assert_eq!(
        first_write,
        b"MAIL FROM:<s@x.test> SIZE=10\r\nRCPT TO:<r@y.test>\r\nDATA\r\n".to_vec()
    );
    server.await.unwrap();
}

#[tokio::test]
async fn rcpt_550_fails_then_rset_and_reuse() {
    let (mut c, server) = session(PIPE, |mut f| async move {
        f.expect("MAIL FROM:<s@x.test> SIZE=3").await;
        f.expect("RCPT TO:<nobody@y.test>").await;
        f.expect("DATA").await;
        f.send("250 2.1.0 Ok\r\n550 5.1.1 <nobody@y.test>: Recipient address rejected\r\n554 5.5.1 Error: no valid recipients\r\n")
            .await;
        f.expect("RSET").await;
        f.send("250 2.0.0 Ok\r\n").await;
        let data = f.accept_pipelined("MAIL FROM:<s@x.test> SIZE=3", "RCPT TO:<ok@y.test>").await;
        assert_eq!(data, b"m\r\n.\r\n");
    })
    .await;
    match c.send("s@x.test", "nobody@y.test", b"m").await.unwrap() {
        Delivery::Failed(r) => {
            assert_eq!(r.phase, Phase::RcptTo);
            assert_eq!(r.reply.code, 550);
            assert_eq!(r.reply.enhanced, Some(EnhancedStatus::new(5, 1, 1)));
        }
        other => panic!("{other:?}"),
    }
    assert!(!c.is_broken());
    assert!(c
        .send("s@x.test", "ok@y.test", b"m")
        .await
        .unwrap()
        .is_delivered());
    server.await.unwrap();
}

#[tokio::test]
async fn refused_rcpt_but_data_354_is_closed_with_a_lone_dot() {
    let (mut c, server) = session(PIPE, |mut f| async move {
        for _ in 0..3 {
            f.line().await;
        }
        f.send("250 Ok\r\n550 5.1.1 no\r\n354 go ahead anyway\r\n")
            .await;
        assert_eq!(f.data().await, b".\r\n");
        f.send("554 5.5.1 no valid recipients\r\n").await;
        f.expect("RSET").await;
        f.send("250 Ok\r\n").await;
    })
    .await;
    let d = c.send("s@x.test", "r@y.test", b"m").await.unwrap();
    assert!(matches!(
        d,
        Delivery::Failed(Rejection {
            phase: Phase::RcptTo,
            ..
        })
    ));
    assert!(!c.is_broken());
    server.await.unwrap();
}

#[tokio::test]
async fn lockstep_rcpt_refusal_skips_data() {
    let (mut c, server) = session(&["SIZE"], |mut f| async move {
        f.expect("MAIL FROM:<> SIZE=3").await;
        f.send("250 Ok\r\n").await;
        f.expect("RCPT TO:<r@y.test>").await;
        f.send("550 no such user\r\n").await;
        f.expect("RSET").await;
        f.send("250 Ok\r\n").await;
    })
    .await;
    let d = c.send("", "r@y.test", b"m").await.unwrap();
    assert!(matches!(
        d,
        Delivery::Failed(Rejection {
            phase: Phase::RcptTo,
            ..
        })
    ));
    assert_eq!(d.reply().enhanced, None);
    server.await.unwrap();
}

#[tokio::test]
async fn transient_452_defers_and_421_defers_and_breaks() {
    let (mut c, server) = session(PIPE, |mut f| async move {
        for _ in 0..3 {
            f.line().await;
        }
        f.send("250 Ok\r\n452 4.5.3 Too many recipients\r\n554 5.5.1 no valid recipients\r\n")
            .await;
        f.expect("RSET").await;
        f.send("250 Ok\r\n").await;
        for _ in 0..3 {
            f.line().await;
        }
        f.send("421 4.3.2 Service shutting down\r\n").await;
        // and hang up
    })
    .await;
    match c.send("s@x.test", "r@y.test", b"m").await.unwrap() {
        Delivery::Deferred(r) => {
            assert_eq!((r.phase, r.reply.code), (Phase::RcptTo, 452));
        }
        other => panic!("{other:?}"),
    }
    assert!(!c.is_broken());
    match c.send("s@x.test", "r@y.test", b"m").await.unwrap() {
        Delivery::Deferred(r) => assert_eq!((r.phase, r.reply.code), (Phase::MailFrom, 421)),
        other => panic!("{other:?}"),
    }
    assert!(c.is_broken());
    let e = c.send("s@x.test", "r@y.test", b"m").await.unwrap_err();
    assert!(matches!(e, SmtpError::Broken) && e.is_temporary());
    server.await.unwrap();
}

#[tokio::test]
async fn final_reply_classification_and_multiline() {
    let (mut c, server) = session(PIPE, |mut f| async move {
        for reply in [
            "451-4.3.0 Temporary failure\r\n451 4.3.0 please retry\r\n",
            "554 5.7.1 Message rejected as spam\r\n",
            "250-2.0.0 Ok\r\n250-2.0.0 queued as XYZ\r\n250 2.0.0 have a nice day\r\n",
        ] {
            for _ in 0..3 {
                f.line().await;
            }
            f.send("250 Ok\r\n250 Ok\r\n354 go\r\n").await;
            f.data().await;
            f.send(reply).await;
        }
    })
    .await;
    let d = c.send("s@x.test", "r@y.test", b"m").await.unwrap();
    match &d {
        Delivery::Deferred(r) => {
            assert_eq!(r.phase, Phase::DataEnd);
            assert_eq!(r.reply.text, "Temporary failure\nplease retry");
        }
        other => panic!("{other:?}"),
    }
    let d = c.send("s@x.test", "r@y.test", b"m").await.unwrap();
    assert!(matches!(
        d,
        Delivery::Failed(Rejection {
            phase: Phase::DataEnd,
            ..
        })
    ));
    assert_eq!(d.reply().enhanced, Some(EnhancedStatus::new(5, 7, 1)));
    let d = c.send("s@x.test", "r@y.test", b"m").await.unwrap();
    assert_eq!(d.reply().text, "Ok\nqueued as XYZ\nhave a nice day");
    assert!(d.is_delivered() && !c.is_broken());
    server.await.unwrap();
}

#[tokio::test]
async fn dot_stuffing_on_the_wire() {
    let (mut c, server) = session(PIPE, |mut f| async move {
        for _ in 0..3 {
            f.line().await;
        }
        f.send("250 Ok\r\n250 Ok\r\n354 go\r\n").await;
        assert_eq!(
            f.data().await,
            b"Subject: dots\r\n\r\n..hidden\r\n...two\r\n..\r\nend\r\n.\r\n".to_vec()
        );
        f.send("250 Ok\r\n").await;
    })
    .await;
    let d = c
        .send(
            "s@x.test",
            "r@y.test",
            b"Subject: dots\n\n.hidden\n..two\n.\nend",
        )
        .await
        .unwrap();
    assert!(d.is_delivered());
    server.await.unwrap();
}

#[tokio::test]
async fn size_limit_refuses_locally_without_sending() {
    let (mut c, server) = session(&["PIPELINING", "SIZE 100"], |mut f| async move {
        // Nothing but QUIT must arrive.
        f.expect("QUIT").await;
        f.send("221 Bye\r\n").await;
    })
    .await;
    let d = c.send("s@x.test", "r@y.test", &[b'a'; 200]).await.unwrap();
    match &d {
        Delivery::Failed(r) => {
            assert_eq!(r.phase, Phase::Local);
            assert_eq!(r.reply.code, 552);
            assert_eq!(r.reply.enhanced, Some(EnhancedStatus::new(5, 3, 4)));
        }
        other => panic!("{other:?}"),
    }
    c.quit().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn eight_bit_and_smtputf8_parameters() {
    let (mut c, server) = session(
        &["PIPELINING", "8BITMIME", "SMTPUTF8"],
        |mut f| async move {
            f.accept_pipelined(
                "MAIL FROM:<élise@exemple.fr> BODY=8BITMIME SMTPUTF8",
                "RCPT TO:<r@y.test>",
            )
            .await;
            f.accept_pipelined("MAIL FROM:<s@x.test> BODY=8BITMIME", "RCPT TO:<r@y.test>")
                .await;
            f.accept_pipelined(
                "MAIL FROM:<s@x.test> BODY=8BITMIME SMTPUTF8",
                "RCPT TO:<r@y.test>",
            )
            .await;
            f.accept_pipelined("MAIL FROM:<s@x.test>", "RCPT TO:<r@y.test>")
                .await;
        },
    )
    .await;
    let body = "Subject: x\r\n\r\ncafé".as_bytes();
    let utf8_header = "Subject: café\r\n\r\nx".as_bytes();
    assert!(c
        .send("élise@exemple.fr", "r@y.test", body)
        .await
        .unwrap()
        .is_delivered());
    assert!(c
        .send("s@x.test", "r@y.test", body)
        .await
        .unwrap()
        .is_delivered());
    assert!(c
        .send("s@x.test", "r@y.test", utf8_header)
        .await
        .unwrap()
        .is_delivered());
    assert!(c
        .send("s@x.test", "r@y.test", b"plain")
        .await
        .unwrap()
        .is_delivered());
    server.await.unwrap();
}

#[tokio::test]
async fn non_ascii_address_without_smtputf8_fails_locally() {
    let (mut c, server) = session(PIPE, |mut f| async move {
        f.expect("QUIT").await;
    })
    .await;
    let d = c.send("s@x.test", "ñandú@ejemplo.ar", b"m").await.unwrap();
    match &d {
        Delivery::Failed(r) => {
            assert_eq!(r.phase, Phase::Local);
            assert_eq!(r.reply.enhanced, Some(EnhancedStatus::new(5, 6, 7)));
        }
        other => panic!("{other:?}"),
    }
    // Command injection through an address is refused locally too.
    let d = c.send("s@x.test", "a@b\r\nRSET", b"m").await.unwrap();
    assert!(matches!(
        d,
        Delivery::Failed(Rejection {
            phase: Phase::Local,
            ..
        })
    ));
    let d = c.send("s@x.test", "", b"m").await.unwrap();
    assert!(matches!(
        d,
        Delivery::Failed(Rejection {
            phase: Phase::Local,
            ..
        })
    ));
    c.quit().await.unwrap();
    server.await.unwrap();
}
