//! Tests of the capture receiver.

use std::sync::atomic::Ordering;

use rand::{Rng, SeedableRng};
use tokio::io::{duplex, AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::*;
use crate::outbound::smtp::{ClientConfig, Delivery, SmtpClient, Timeouts};
use crate::smtp::line::LineReader;
use crate::smtp::reply::{read_reply, Reply};
use crate::smtp::session::serve_stream;

struct Running {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    counter: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl Running {
    async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("server did not stop")
            .unwrap()
            .unwrap();
        self.dir
    }

    fn file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).unwrap()
    }

    fn eml_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

async fn start(config: CaptureConfig) -> Running {
    let dir = tempfile::tempdir().unwrap();
    start_in(dir, config).await
}

async fn start_in(dir: tempfile::TempDir, config: CaptureConfig) -> Running {
    let server = CaptureServer::bind_with(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().to_path_buf(),
        config,
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    let counter = server.counter();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Running {
        addr,
        dir,
        counter,
        stop: Some(tx),
        task,
    }
}

async fn client(addr: SocketAddr) -> SmtpClient<TcpStream> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let config = ClientConfig {
        helo_name: "client.test".into(),
        timeouts: Timeouts::uniform(Duration::from_secs(10)),
    };
    SmtpClient::connect(stream, config).await.unwrap()
}

/// A hand-driven SMTP client for protocol abuse.
struct Raw<S> {
    io: LineReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    async fn new(stream: S) -> Self {
        let mut raw = Self {
            io: LineReader::new(stream, 1 << 16),
        };
        assert_eq!(raw.reply().await.code, 220);
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
    }

    async fn reply(&mut self) -> Reply {
        tokio::time::timeout(Duration::from_secs(10), read_reply(&mut self.io))
            .await
            .expect("no reply")
            .unwrap()
    }

    async fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    async fn closed(&mut self) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.io.read_line()).await,
            Ok(Ok(None)) | Ok(Err(_))
        )
    }
}

async fn raw(addr: SocketAddr) -> Raw<TcpStream> {
    Raw::new(TcpStream::connect(addr).await.unwrap()).await
}

fn expected_file(from: &str, rcpts: &[&str], wire_data: &str) -> Vec<u8> {
    let mut out = format!("Return-Path: <{from}>\r\n");
    for r in rcpts {
        out.push_str(&format!("X-Mailfarm-Envelope-To: <{r}>\r\n"));
    }
    out.push_str(wire_data);
    out.into_bytes()
}

#[tokio::test]
async fn round_trip_with_our_client() {
    let server = start(CaptureConfig::default()).await;
    let mut c = client(server.addr).await;
    let caps = c.capabilities().clone();
    assert!(caps.pipelining && caps.eight_bit_mime && caps.smtputf8 && caps.enhanced_status_codes);
    assert_eq!(caps.max_size(), Some(32 * 1024 * 1024));
    const N: usize = 25;
    for i in 1..=N {
        let data = format!("Subject: message {i}\nTo: r{i}@y.test\n\nHello {i}\n.starts with a dot\n..two dots\n.\nend");
        let d = c
            .send("bounce@x.test", &format!("r{i}@y.test"), data.as_bytes())
            .await
            .unwrap();
        match d {
            Delivery::Delivered(reply) => {
                assert_eq!(reply.text, format!("Ok: queued as {i:08}.eml"));
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(server.counter.load(Ordering::Relaxed), N as u64);
    for i in 1..=N {
        let content = server.file(&format!("{i:08}.eml"));
        let wire = format!("Subject: message {i}\r\nTo: r{i}@y.test\r\n\r\nHello {i}\r\n.starts with a dot\r\n..two dots\r\n.\r\nend\r\n");
        assert_eq!(
            String::from_utf8(content).unwrap(),
            String::from_utf8(expected_file(
                "bounce@x.test",
                &[&format!("r{i}@y.test")],
                &wire
            ))
            .unwrap()
        );
    }
    // No temporary file left behind.
    assert_eq!(server.eml_files().len(), N);
    c.quit().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn utf8_envelope_and_null_sender() {
    let server = start(CaptureConfig::default()).await;
    let mut c = client(server.addr).await;
    let d = c
        .send(
            "",
            "élise@exemple.fr",
            "Subject: café\r\n\r\nbody é".as_bytes(),
        )
        .await
        .unwrap();
    assert!(d.is_delivered(), "{d:?}");
    let content = String::from_utf8(server.file("00000001.eml")).unwrap();
    assert!(content.starts_with(
        "Return-Path: <>\r\nX-Mailfarm-Envelope-To: <élise@exemple.fr>\r\nSubject: café\r\n"
    ));
    c.quit().await.unwrap();

    let mut r = raw(server.addr).await;
    assert_eq!(r.cmd("EHLO x").await.code, 250);
    let reply = r.cmd("MAIL FROM:<élise@exemple.fr>").await;
    assert_eq!(
        (reply.code, reply.enhanced.map(|e| e.to_string())),
        (553, Some("5.6.7".into()))
    );
    assert_eq!(r.cmd("MAIL FROM:<s@x.test>").await.code, 250);
    assert_eq!(r.cmd("RCPT TO:<élise@exemple.fr>").await.code, 553);
    server.stop().await;
}

#[tokio::test]
async fn pipelined_raw_batch_with_several_recipients() {
    let server = start(CaptureConfig::default()).await;
    let mut r = raw(server.addr).await;
    assert_eq!(r.cmd("EHLO x").await.code, 250);
    r.send(b"MAIL FROM:<s@x.test> BODY=7BIT SIZE=20\r\nRCPT TO:<a@y.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n")
        .await;
    for code in [250, 250, 250, 250, 354] {
        assert_eq!(r.reply().await.code, code);
    }
    r.send(b"Subject: s\r\n\r\nbody\r\n.\r\nQUIT\r\n").await;
    let reply = r.reply().await;
    assert_eq!(reply.text, "Ok: queued as 00000001.eml");
    assert_eq!(r.reply().await.code, 221);
    assert!(r.closed().await);
    assert_eq!(
        server.file("00000001.eml"),
        expected_file(
            "s@x.test",
            &["a@y.test", "b@y.test", "c@y.test"],
            "Subject: s\r\n\r\nbody\r\n"
        )
    );
    server.stop().await;
}

#[tokio::test]
async fn concurrent_sessions() {
    let server = start(CaptureConfig::default()).await;
    let mut tasks = JoinSet::new();
    for s in 0..8 {
        let addr = server.addr;
        tasks.spawn(async move {
            let mut c = client(addr).await;
            for m in 0..5 {
                let data = format!("Subject: {s}-{m}\r\n\r\nx\r\n");
                assert!(c
                    .send("s@x.test", "r@y.test", data.as_bytes())
                    .await
                    .unwrap()
                    .is_delivered());
            }
            c.quit().await.unwrap();
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    assert_eq!(server.counter.load(Ordering::Relaxed), 40);
    let files = server.eml_files();
    assert_eq!(files.len(), 40);
    assert_eq!(files.first().map(String::as_str), Some("00000001.eml"));
    assert_eq!(files.last().map(String::as_str), Some("00000040.eml"));
    server.stop().await;
}

#[tokio::test]
async fn out_of_order_and_garbage_get_5xx() {
    let server = start(CaptureConfig::default()).await;
    let mut r = raw(server.addr).await;
    let mut long = vec![b'A'; 10_000];
    long.extend_from_slice(b"\r\n");
    r.send(&long).await;
    assert_eq!(r.reply().await.code, 500);
    r.send(b"\x00\xff\xfe\x01junk\r\n").await;
    assert_eq!(r.reply().await.code, 500);
    assert_eq!(r.cmd("MAIL FROM:<a@b.test>").await.code, 503);
    assert_eq!(r.cmd("EHLO").await.code, 501);
    assert_eq!(r.cmd("EHLO x").await.code, 250);
    assert_eq!(r.cmd("RCPT TO:<a@b.test>").await.code, 503);
    assert_eq!(r.cmd("DATA").await.code, 503);
    assert_eq!(r.cmd("MAIL FROM:<a@b.test> FOO=1").await.code, 555);
    assert_eq!(r.cmd("MAIL FROM:<a@b.test> SIZE=abc").await.code, 501);
    assert_eq!(r.cmd("MAIL FROM:<a@b.test>").await.code, 250);
    assert_eq!(r.cmd("MAIL FROM:<a@b.test>").await.code, 503);
    assert_eq!(r.cmd("DATA").await.code, 503);
    assert_eq!(r.cmd("RCPT TO:<>").await.code, 501);
    assert_eq!(r.cmd("RCPT TO:<a@b.test> NOTIFY=NEVER").await.code, 555);
    assert_eq!(r.cmd("DATA extra").await.code, 501);
    assert_eq!(r.cmd("STARTTLS").await.code, 502);
    assert_eq!(r.cmd("FOO bar").await.code, 500);
    assert_eq!(r.cmd("RSET").await.code, 250);
    assert_eq!(r.cmd("NOOP").await.code, 250);
    assert_eq!(r.cmd("VRFY x").await.code, 252);
    assert_eq!(r.cmd("HELP").await.code, 214);
    // 1 MiB without a newline, then a normal command: one 500, then 250.
    r.send(&vec![b'Z'; 1 << 20]).await;
    r.send(b"\r\nNOOP\r\n").await;
    assert_eq!(r.reply().await.code, 500);
    assert_eq!(r.reply().await.code, 250);
    // Still able to take a message.
    assert_eq!(r.cmd("MAIL FROM:<a@b.test>").await.code, 250);
    assert_eq!(r.cmd("RCPT TO:<c@d.test>").await.code, 250);
    assert_eq!(r.cmd("DATA").await.code, 354);
    r.send(b"ok\r\n.\r\n").await;
    assert_eq!(r.reply().await.code, 250);
    server.stop().await;
}

#[tokio::test]
async fn too_many_errors_disconnects() {
    let server = start(CaptureConfig::default()).await;
    let mut r = raw(server.addr).await;
    r.send(&b"BOGUS\r\n".repeat(30)).await;
    for _ in 0..19 {
        assert_eq!(r.reply().await.code, 500);
    }
    let last = r.reply().await;
    assert_eq!(last.code, 500);
    assert_eq!(r.reply().await.code, 421);
    assert!(r.closed().await);
    server.stop().await;
}

#[tokio::test]
async fn size_and_line_limits() {
    let config = CaptureConfig {
        max_message_size: 1000,
        ..CaptureConfig::default()
    };
    let server = start(config).await;
    let mut r = raw(server.addr).await;
    assert_eq!(
        r.cmd("EHLO x")
            .await
            .lines()
            .find(|l| l.starts_with("SIZE")),
        Some("SIZE 1000")
    );
    let reply = r.cmd("MAIL FROM:<a@b.test> SIZE=5000").await;
    assert_eq!(
        (reply.code, reply.enhanced.map(|e| e.to_string())),
        (552, Some("5.3.4".into()))
    );
    // Too big without SIZE: refused after the dot, nothing stored.
    assert_eq!(r.cmd("MAIL FROM:<a@b.test>").await.code, 250);
    assert_eq!(r.cmd("RCPT TO:<c@d.test>").await.code, 250);
    assert_eq!(r.cmd("DATA").await.code, 354);
    r.send(&b"0123456789012345678901234567890123456789\r\n".repeat(50))
        .await;
    r.send(b".\r\n").await;
    assert_eq!(r.reply().await.code, 552);
    // An over-long line in the content.
    assert_eq!(r.cmd("MAIL FROM:<a@b.test>").await.code, 250);
    assert_eq!(r.cmd("RCPT TO:<c@d.test>").await.code, 250);
    assert_eq!(r.cmd("DATA").await.code, 354);
    let mut long = vec![b'x'; DATA_LINE_MAX + 10];
    long.extend_from_slice(b"\r\n.\r\n");
    r.send(&long).await;
    assert_eq!(r.reply().await.code, 554);
    // The session still works.
    assert_eq!(r.cmd("MAIL FROM:<a@b.test>").await.code, 250);
    assert_eq!(r.cmd("RCPT TO:<c@d.test>").await.code, 250);
    assert_eq!(r.cmd("DATA").await.code, 354);
    r.send(b"small\r\n.\r\n").await;
    assert_eq!(r.reply().await.code, 250);
    assert_eq!(server.counter.load(Ordering::Relaxed), 1);
    assert_eq!(server.eml_files(), ["00000001.eml"]);
    server.stop().await;
}

#[tokio::test]
async fn only_crlf_dot_crlf_ends_data() {
    let server = start(CaptureConfig::default()).await;
    let mut r = raw(server.addr).await;
    assert_eq!(r.cmd("EHLO x").await.code, 250);
    assert_eq!(r.cmd("MAIL FROM:<a@b.test>").await.code, 250);
    assert_eq!(r.cmd("RCPT TO:<c@d.test>").await.code, 250);
    assert_eq!(r.cmd("DATA").await.code, 354);
    // Smuggling attempts: "\n.\n", "\r\n.\n" and "\n.\r\n" are content.
    r.send(b"a\n.\nb\r\n.\nc\n.\r\nd\r\n.\r\n").await;
    assert_eq!(r.reply().await.code, 250);
    assert_eq!(
        server.file("00000001.eml"),
        expected_file(
            "a@b.test",
            &["c@d.test"],
            "a\r\n.\r\nb\r\n.\r\nc\r\n.\r\nd\r\n"
        )
    );
    server.stop().await;
}

#[tokio::test]
async fn numbering_continues_after_existing_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00000041.eml"), b"old").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
    let server = start_in(dir, CaptureConfig::default()).await;
    let mut c = client(server.addr).await;
    let d = c.send("s@x.test", "r@y.test", b"new").await.unwrap();
    assert_eq!(d.reply().text, "Ok: queued as 00000042.eml");
    assert_eq!(server.file("00000041.eml"), b"old");
    c.quit().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_sessions_and_lets_busy_ones_finish() {
    let server = start(CaptureConfig::default()).await;
    let mut idle = raw(server.addr).await;
    assert_eq!(idle.cmd("EHLO x").await.code, 250);
    let mut busy = raw(server.addr).await;
    assert_eq!(busy.cmd("EHLO x").await.code, 250);
    assert_eq!(busy.cmd("MAIL FROM:<a@b.test>").await.code, 250);
    assert_eq!(busy.cmd("RCPT TO:<c@d.test>").await.code, 250);
    assert_eq!(busy.cmd("DATA").await.code, 354);
    busy.send(b"first line\r\n").await;

    let Running {
        addr,
        dir,
        counter,
        stop,
        task,
    } = server;
    if let Some(stop) = stop {
        stop.send(()).unwrap();
    }
    assert_eq!(idle.reply().await.code, 421);
    assert!(idle.closed().await);
    // The listener is gone: no new sessions.
    assert!(TcpStream::connect(addr).await.is_err());

    busy.send(b"second line\r\n.\r\n").await;
    assert_eq!(busy.reply().await.code, 250);
    assert_eq!(busy.reply().await.code, 421);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(counter.load(Ordering::Relaxed), 1);
    assert!(dir.path().join("00000001.eml").exists());
}

#[tokio::test]
async fn grace_period_aborts_stuck_sessions_and_drops_partial_messages() {
    let config = CaptureConfig {
        shutdown_grace: Duration::from_millis(200),
        ..CaptureConfig::default()
    };
    let server = start(config).await;
    let mut busy = raw(server.addr).await;
    assert_eq!(busy.cmd("HELO x").await.code, 250);
    assert_eq!(busy.cmd("MAIL FROM:<a@b.test>").await.code, 250);
    assert_eq!(busy.cmd("RCPT TO:<c@d.test>").await.code, 250);
    assert_eq!(busy.cmd("DATA").await.code, 354);
    busy.send(b"never finished\r\n").await;
    let started = std::time::Instant::now();
    let dir = server.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temporary file left behind"
    );
}

#[tokio::test]
async fn random_junk_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(
        CaptureConfig {
            max_errors: 1000,
            ..CaptureConfig::default()
        }
        .server_config(),
    );
    let handler = Arc::new(Capture(Arc::new(Shared {
        dir: dir.path().to_path_buf(),
        hostname: "mailfarm-capture".into(),
        written: Arc::new(AtomicU64::new(0)),
        next_seq: AtomicU64::new(1),
        next_tmp: AtomicU64::new(0),
    })));
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let prefixes: [&[u8]; 8] = [
        b"EHLO x\r\n",
        b"MAIL FROM:<a@b>\r\n",
        b"RCPT TO:<c@d>\r\n",
        b"DATA\r\n",
        b"RSET\r\n",
        b".\r\n",
        b"MAIL FROM:<",
        b"\r\n",
    ];
    for round in 0..40 {
        let (client_io, server_io) = duplex(1 << 16);
        let (_stop_tx, stop_rx) = watch::channel(false);
        let session = tokio::spawn(serve_stream(
            server_io,
            peer,
            Arc::clone(&config),
            Arc::clone(&handler),
            stop_rx,
        ));
        let mut input = Vec::new();
        while input.len() < 20_000 {
            if rng.gen_bool(0.3) {
                input.extend_from_slice(prefixes[rng.gen_range(0..prefixes.len())]);
            } else {
                let n = rng.gen_range(1..3000);
                input.extend((0..n).map(|_| rng.gen::<u8>()));
            }
        }
        input.extend_from_slice(b"\r\n.\r\nRSET\r\nQUIT\r\n");
        let (mut rd, mut wr) = tokio::io::split(client_io);
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut out).await;
            out
        });
        let _ = wr.write_all(&input).await;
        let _ = wr.shutdown().await;
        tokio::time::timeout(Duration::from_secs(10), session)
            .await
            .unwrap_or_else(|_| panic!("round {round}: session hung"))
            .unwrap_or_else(|e| panic!("round {round}: session panicked: {e}"))
            .ok();
        drop(wr);
        let out = reader.await.unwrap();
        // Everything the server said is well-formed replies.
        for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(
                line.len() >= 4
                    && line[..3].iter().all(u8::is_ascii_digit)
                    && line.ends_with(b"\r"),
                "round {round}: bad reply line {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
    // Whatever got stored is complete: no temp file left.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(name.ends_with(".eml"), "{name}");
    }
}
