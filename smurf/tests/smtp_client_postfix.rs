//! The SMTP client against a real MTA implementation: Postfix's `smtp-sink`
//! test server. Fifty messages over one session must all be accepted and
//! dumped. Requires `/usr/sbin/smtp-sink` (package `postfix`): the test fails,
//! never skips, when it is missing.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailfarm_smurf::outbound::smtp::{ClientConfig, Delivery, SmtpClient, Timeouts};
use tokio::net::TcpStream;

const SMTP_SINK: &str = "/usr/sbin/smtp-sink";
const MESSAGES: usize = 50;

/// Kills and reaps the smtp-sink child when the test ends, even on panic.
struct Sink(Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free local port")
}

fn current_user() -> String {
    let out = Command::new("id")
        .arg("-un")
        .output()
        .expect("running `id -un`");
    assert!(out.status.success(), "`id -un` failed");
    String::from_utf8(out.stdout)
        .expect("user name not UTF-8")
        .trim()
        .to_owned()
}

fn start_sink(dump_dir: &Path) -> (Sink, SocketAddr) {
    assert!(
        Path::new(SMTP_SINK).exists(),
        "{SMTP_SINK} is missing: install Postfix (e.g. `apt-get install postfix`) to run this test"
    );
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // -u: smtp-sink refuses to keep root privileges; -d: one dump file per
    // transaction, named from the strftime template plus a random suffix.
    let template = format!("{}/%M.", dump_dir.display());
    let child = Command::new(SMTP_SINK)
        .args(["-u", &current_user(), "-d", &template])
        .arg(addr.to_string())
        .arg("100")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {SMTP_SINK}: {e}"));
    let mut sink = Sink(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = sink.0.try_wait().expect("polling smtp-sink") {
            panic!("smtp-sink exited early with {status}");
        }
        if std::net::TcpStream::connect(addr).is_ok() {
            return (sink, addr);
        }
        assert!(
            Instant::now() < deadline,
            "smtp-sink did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn dump_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("reading the dump directory")
        .map(|e| e.expect("dump directory entry").path())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_messages_over_one_session_to_smtp_sink() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dump_dir = dir.path().join("dump");
    std::fs::create_dir(&dump_dir).expect("dump dir");
    // smtp-sink writes after dropping privileges.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dump_dir, std::fs::Permissions::from_mode(0o777))
            .expect("chmod dump dir");
    }
    let (_sink, addr) = start_sink(&dump_dir);
    // The readiness probe opened no transaction, so nothing is dumped yet;
    // count relative to here anyway.
    let before = dump_files(&dump_dir).len();

    let stream = TcpStream::connect(addr)
        .await
        .expect("connecting to smtp-sink");
    let config = ClientConfig {
        helo_name: "client.mailfarm.test".into(),
        timeouts: Timeouts::uniform(Duration::from_secs(30)),
    };
    let mut client = SmtpClient::connect(stream, config)
        .await
        .expect("SMTP session");
    assert!(client.is_esmtp());
    assert!(
        client.capabilities().pipelining,
        "{:?}",
        client.capabilities()
    );

    for i in 0..MESSAGES {
        let data = format!(
            "From: Sender <bounce@mailfarm.test>\r\nTo: <r{i}@example.test>\r\nSubject: message {i}\r\n\
             \r\nHello recipient {i}\r\n.a line starting with a dot\r\n\r\n-- \r\nbye\r\n"
        );
        let delivery = client
            .send(
                "bounce@mailfarm.test",
                &format!("r{i}@example.test"),
                data.as_bytes(),
            )
            .await
            .unwrap_or_else(|e| panic!("message {i}: {e}"));
        match delivery {
            Delivery::Delivered(reply) => assert_eq!(reply.code, 250, "message {i}"),
            other => panic!("message {i} not delivered: {other:?}"),
        }
        assert!(!client.is_broken());
    }
    client.quit().await.expect("QUIT");

    let deadline = Instant::now() + Duration::from_secs(10);
    let files = loop {
        let files = dump_files(&dump_dir);
        if files.len() >= before + MESSAGES || Instant::now() > deadline {
            break files;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(files.len() - before, MESSAGES, "dumped transactions");
    let mut seen = vec![false; MESSAGES];
    for path in &files {
        let text = String::from_utf8_lossy(&std::fs::read(path).expect("dump file")).into_owned();
        let Some(i) =
            (0..MESSAGES).find(|i| text.contains(&format!("X-Rcpt-Args: <r{i}@example.test>")))
        else {
            continue;
        };
        assert!(
            text.contains("X-Mail-Args: <bounce@mailfarm.test>"),
            "{text}"
        );
        assert!(text.contains(&format!("Subject: message {i}")), "{text}");
        // smtp-sink stores the content dot-unstuffed.
        assert!(text.contains("\n.a line starting with a dot"), "{text}");
        seen[i] = true;
    }
    assert!(seen.iter().all(|&s| s), "missing recipients: {seen:?}");
}
