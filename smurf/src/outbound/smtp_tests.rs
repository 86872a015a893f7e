//! Unit tests of the SMTP client, against scripted servers on in-memory streams.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{duplex, AsyncWriteExt, DuplexStream, ReadBuf};

use super::*;

#[path = "smtp_tests/envelope.rs"]
mod envelope;
#[path = "smtp_tests/faults.rs"]
mod faults;
#[path = "smtp_tests/tls_auth.rs"]
mod tls_auth;

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
