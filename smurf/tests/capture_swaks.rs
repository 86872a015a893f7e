//! The capture receiver driven by an independent SMTP client, `swaks`.
//! Requires swaks (the test kit's runner): the tests fail, never skip, when it is missing.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mailfarm_smurf::inbound::capture::{CaptureConfig, CaptureServer};
use mailfarm_testkit::swaks;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Running {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    counter: Arc<AtomicU64>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(config: CaptureConfig) -> Running {
    mailfarm_testkit::require("swaks");
    let dir = tempfile::tempdir().expect("temp dir");
    let server = CaptureServer::bind_with(
        "127.0.0.1:0".parse().expect("address"),
        dir.path().join("capture"),
        config,
    )
    .await
    .expect("binding the capture server");
    let addr = server.local_addr();
    let counter = server.counter();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    Running {
        addr,
        dir,
        counter,
        stop,
        task,
    }
}

impl Running {
    async fn stop(self) -> tempfile::TempDir {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("capture server did not stop")
            .expect("capture server task")
            .expect("capture server");
        self.dir
    }
}

fn read(dir: &Path, name: &str) -> String {
    let path = dir.join("capture").join(name);
    String::from_utf8(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .expect("UTF-8 capture")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_messages_are_captured() {
    let server = start(CaptureConfig::default()).await;
    let data_file = server.dir.path().join("message.eml");
    std::fs::write(
        &data_file,
        "From: <s@x.test>\r\nTo: <a@y.test>\r\nSubject: from swaks\r\n\r\nfirst line\r\n.leading dot\r\n..two dots\r\nlast\r\n",
    )
    .expect("writing the message");
    let data_arg = data_file.to_str().expect("UTF-8 path");

    // Plain, then pipelined, then several recipients.
    let (ok, out) = swaks(
        server.addr,
        &["--from", "s@x.test", "--to", "a@y.test", "--data", data_arg],
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains("250 2.0.0 Ok: queued as 00000001.eml"),
        "{out}"
    );
    let (ok, out) = swaks(
        server.addr,
        &[
            "--pipeline",
            "--from",
            "s@x.test",
            "--to",
            "a@y.test",
            "--data",
            data_arg,
        ],
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = swaks(
        server.addr,
        &[
            "--from",
            "<>",
            "--to",
            "a@y.test,b@y.test",
            "--data",
            data_arg,
        ],
    )
    .await;
    assert!(ok, "{out}");

    // swaks always sends CRLF before the final ".", hence the trailing empty line.
    let expected_body = "From: <s@x.test>\r\nTo: <a@y.test>\r\nSubject: from swaks\r\n\r\nfirst line\r\n.leading dot\r\n..two dots\r\nlast\r\n\r\n";
    for name in ["00000001.eml", "00000002.eml"] {
        assert_eq!(
            read(server.dir.path(), name),
            format!(
                "Return-Path: <s@x.test>\r\nX-Mailfarm-Envelope-To: <a@y.test>\r\n{expected_body}"
            ),
            "{name}"
        );
    }
    assert_eq!(
        read(server.dir.path(), "00000003.eml"),
        format!(
            "Return-Path: <>\r\nX-Mailfarm-Envelope-To: <a@y.test>\r\nX-Mailfarm-Envelope-To: <b@y.test>\r\n{expected_body}"
        )
    );
    assert_eq!(server.counter.load(Ordering::Relaxed), 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_sees_errors() {
    let server = start(CaptureConfig {
        max_message_size: 2000,
        ..CaptureConfig::default()
    })
    .await;
    let big = server.dir.path().join("big.eml");
    std::fs::write(
        &big,
        format!(
            "Subject: big\r\n\r\n{}",
            "x".repeat(70).repeat(100).replace("xx", "x\r\n")
        ),
    )
    .expect("writing the message");
    let (ok, out) = swaks(
        server.addr,
        &[
            "--from",
            "s@x.test",
            "--to",
            "a@y.test",
            "--data",
            big.to_str().expect("UTF-8 path"),
        ],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("552 5.3.4"), "{out}");

    // A non-ASCII sender without the SMTPUTF8 parameter.
    let (ok, out) = swaks(
        server.addr,
        &["--from", "élise@exemple.fr", "--to", "a@y.test"],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("553 5.6.7"), "{out}");

    assert_eq!(server.counter.load(Ordering::Relaxed), 0);
    server.stop().await;
}
