//! Unit tests of the SMTP client, against scripted servers on in-memory streams.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{duplex, AsyncWriteExt, DuplexStream, ReadBuf};

use super::*;

/// The scripted server side of a duplex pipe.
struct Fake {
    io: LineReader<DuplexStream>,
}

impl Fake {
    fn new(io: DuplexStream) -> Self {
        Self {
            io: LineReader::new(io, 1 << 20),
        }
    }

    async fn send(&mut self, s: &str) {
        self.io.get_mut().write_all(s.as_bytes()).await.unwrap();
    }

    async fn line(&mut self) -> String {
        let line = self.io.read_line().await.unwrap().expect("client closed");
        assert!(line.crlf, "client sent a bare LF");
        String::from_utf8(line.bytes.to_vec()).unwrap()
    }

    async fn expect(&mut self, want: &str) {
        assert_eq!(self.line().await, want);
    }

    /// Message content as sent, up to and including the final ".\r\n".
    async fn data(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let line = self.io.read_line().await.unwrap().expect("closed in DATA");
            out.extend_from_slice(line.bytes);
            out.extend_from_slice(b"\r\n");
            if line.bytes == b"." {
                return out;
            }
        }
    }

    async fn greet(&mut self, caps: &[&str]) {
        self.send("220 fake.test ESMTP\r\n").await;
        self.expect("EHLO client.test").await;
        let mut reply = String::from("250");
        reply.push(if caps.is_empty() { ' ' } else { '-' });
        reply.push_str("fake.test\r\n");
        for (i, cap) in caps.iter().enumerate() {
            let sep = if i + 1 == caps.len() { ' ' } else { '-' };
            reply.push_str(&format!("250{sep}{cap}\r\n"));
        }
        self.send(&reply).await;
    }

    /// A complete accepted pipelined transaction.
    async fn accept_pipelined(&mut self, mail: &str, rcpt: &str) -> Vec<u8> {
        self.expect(mail).await;
        self.expect(rcpt).await;
        self.expect("DATA").await;
        self.send("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n")
            .await;
        let data = self.data().await;
        self.send("250 2.0.0 Ok: queued as ABC\r\n").await;
        data
    }
}

const PIPE: &[&str] = &[
    "PIPELINING",
    "SIZE 1000000",
    "8BITMIME",
    "ENHANCEDSTATUSCODES",
];

fn config() -> ClientConfig {
    ClientConfig {
        helo_name: "client.test".into(),
        timeouts: Timeouts::uniform(Duration::from_secs(5)),
    }
}

async fn session<F, Fut>(
    caps: &'static [&'static str],
    script: F,
) -> (SmtpClient<DuplexStream>, tokio::task::JoinHandle<()>)
where
    F: FnOnce(Fake) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (client_io, server_io) = duplex(1 << 16);
    let server = tokio::spawn(async move {
        let mut fake = Fake::new(server_io);
        fake.greet(caps).await;
        script(fake).await;
    });
    let client = SmtpClient::connect(client_io, config()).await.unwrap();
    (client, server)
}

use std::future::Future;

#[test]
fn timeouts_defaults_follow_rfc5321() {
    let t = Timeouts::default();
    assert_eq!(t.greeting, Duration::from_secs(300));
    assert_eq!(t.mail, Duration::from_secs(300));
    assert_eq!(t.rcpt, Duration::from_secs(300));
    assert_eq!(t.data_init, Duration::from_secs(120));
    assert_eq!(t.data_block, Duration::from_secs(180));
    assert_eq!(t.data_end, Duration::from_secs(600));
}

#[test]
fn encode_data_normalises_and_stuffs() {
    assert_eq!(encode_data(b""), b".\r\n");
    assert_eq!(encode_data(b"a"), b"a\r\n.\r\n");
    assert_eq!(encode_data(b"a\r\n"), b"a\r\n.\r\n");
    assert_eq!(
        encode_data(b".x\n..y\r\nz.\r.\r\n."),
        b"..x\r\n...y\r\nz.\r\n..\r\n..\r\n.\r\n"
    );
    // A would-be terminator inside the content is neutralised.
    assert_eq!(encode_data(b"a\r\n.\r\nb"), b"a\r\n..\r\nb\r\n.\r\n");
    assert_eq!(encode_data(b"a\n.\nb"), b"a\r\n..\r\nb\r\n.\r\n");
    assert_eq!(encode_data(b"\r\r\n\n."), b"\r\n\r\n\r\n..\r\n.\r\n");
}

/// The byte-at-a-time encoder the fast one replaced: the reference it must agree with.
fn encode_data_reference(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at_line_start = true;
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if data.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                at_line_start = true;
            }
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                at_line_start = true;
            }
            b => {
                if at_line_start && b == b'.' {
                    out.push(b'.');
                }
                out.push(b);
                at_line_start = false;
            }
        }
        i += 1;
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[test]
fn encode_data_agrees_with_the_byte_by_byte_reference() {
    // Every string of up to 6 bytes over the alphabet that matters, then longer mixes.
    let alphabet = [b'.', b'\r', b'\n', b'a', 0xC3];
    let mut cases: Vec<Vec<u8>> = vec![Vec::new()];
    let mut last: Vec<Vec<u8>> = vec![Vec::new()];
    for _ in 0..6 {
        let next: Vec<Vec<u8>> = last
            .iter()
            .flat_map(|p| {
                alphabet.iter().map(move |&b| {
                    let mut v = p.clone();
                    v.push(b);
                    v
                })
            })
            .collect();
        cases.extend(next.iter().cloned());
        last = next;
    }
    cases.push(b"Subject: x\r\n\r\n.line\n..\r.\r\n".repeat(500));
    for case in &cases {
        assert_eq!(encode_data(case), encode_data_reference(case), "{case:?}");
    }
}

#[tokio::test]
async fn ehlo_capabilities_are_parsed() {
    let (client, server) = session(
        &[
            "PIPELINING",
            "SIZE 35882577",
            "8BITMIME",
            "SMTPUTF8",
            "STARTTLS",
            "ENHANCEDSTATUSCODES",
            "AUTH PLAIN LOGIN",
            "CHUNKING",
        ],
        |mut f| async move {
            f.expect("QUIT").await;
            f.send("221 2.0.0 Bye\r\n").await;
        },
    )
    .await;
    let caps = client.capabilities();
    assert!(client.is_esmtp());
    assert!(caps.pipelining && caps.eight_bit_mime && caps.smtputf8);
    assert!(caps.starttls && caps.enhanced_status_codes && caps.has("chunking"));
    assert_eq!(caps.max_size(), Some(35_882_577));
    assert_eq!(caps.auth, ["PLAIN", "LOGIN"]);
    assert_eq!(client.greeting().unwrap().text, "fake.test ESMTP");
    client.quit().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn helo_fallback_and_lockstep_send() {
    let (client_io, server_io) = duplex(1 << 16);
    let server = tokio::spawn(async move {
        let mut f = Fake::new(server_io);
        f.send("220 old.test SMTP\r\n").await;
        f.expect("EHLO client.test").await;
        f.send("502 5.5.2 Error: command not recognized\r\n").await;
        f.expect("HELO client.test").await;
        f.send("250 old.test\r\n").await;
        // No PIPELINING: every command waits for its reply.
        f.expect("MAIL FROM:<s@x.test>").await;
        f.send("250 Ok\r\n").await;
        f.expect("RCPT TO:<r@y.test>").await;
        f.send("250 Ok\r\n").await;
        f.expect("DATA").await;
        f.send("354 go\r\n").await;
        assert_eq!(f.data().await, b"hi\r\n.\r\n");
        f.send("250 Ok\r\n").await;
    });
    let mut c = SmtpClient::connect(client_io, config()).await.unwrap();
    assert!(!c.is_esmtp());
    assert_eq!(c.capabilities(), &Capabilities::default());
    let d = c.send("s@x.test", "r@y.test", b"hi").await.unwrap();
    assert!(d.is_delivered());
    server.await.unwrap();
}

#[tokio::test]
async fn ehlo_4xx_is_an_error_not_a_helo_fallback() {
    let (client_io, server_io) = duplex(1 << 16);
    let server = tokio::spawn(async move {
        let mut f = Fake::new(server_io);
        f.send("220 x\r\n").await;
        f.expect("EHLO client.test").await;
        f.send("451 4.3.0 try later\r\n").await;
    });
    let e = SmtpClient::connect(client_io, config()).await.unwrap_err();
    assert!(matches!(
        e,
        SmtpError::Rejected {
            phase: Phase::Ehlo,
            ..
        }
    ));
    assert!(e.is_temporary());
    server.await.unwrap();
}

/// Records each `poll_write` call so tests can check batching.
struct Recorder {
    inner: DuplexStream,
    writes: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl AsyncRead for Recorder {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.writes.lock().unwrap().push(buf[..n].to_vec());
        }
        poll
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

use std::io;

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

#[tokio::test]
async fn rset_noop_quit() {
    let (mut c, server) = session(PIPE, |mut f| async move {
        f.expect("RSET").await;
        f.send("250 2.0.0 Ok\r\n").await;
        f.expect("NOOP").await;
        f.send("502 5.5.1 nope\r\n").await;
        f.expect("QUIT").await;
        f.send("221 2.0.0 Bye\r\n").await;
        assert!(
            f.io.read_line().await.unwrap().is_none(),
            "stream not shut down"
        );
    })
    .await;
    assert_eq!(c.rset().await.unwrap().code, 250);
    let e = c.noop().await.unwrap_err();
    assert!(
        matches!(
            e,
            SmtpError::Rejected {
                phase: Phase::Noop,
                ..
            }
        ) && !e.is_temporary()
    );
    assert!(!c.is_broken());
    c.quit().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn unexpected_reply_to_data_is_a_protocol_error() {
    let (mut c, server) = session(PIPE, |mut f| async move {
        for _ in 0..3 {
            f.line().await;
        }
        f.send("250 Ok\r\n250 Ok\r\n250 what?\r\n").await;
    })
    .await;
    let e = c.send("s@x.test", "r@y.test", b"m").await.unwrap_err();
    assert!(
        matches!(
            e,
            SmtpError::Protocol {
                phase: Phase::Data,
                error: ProtocolError::UnexpectedReply(_)
            }
        ),
        "{e:?}"
    );
    assert!(c.is_broken());
    server.await.unwrap();
}
