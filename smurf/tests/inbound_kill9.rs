//! Nothing the inbound MX accepted is lost: it runs as its own process
//! (`mailfarm-inbound`), smtp-source (Postfix) loads it with many sessions
//! while our own clients send numbered messages and record which got a 250,
//! and the process is killed with SIGKILL mid-stream. Every message that got
//! a 250 must then be on disk, complete, exactly once. Requires
//! `/usr/sbin/smtp-source`: fails, never skips, without it.

mod inbound_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inbound_support::{require, spawn_process, stored, Raw, POSTMASTER, SMTP_SOURCE};
use mailfarm_smurf::inbound::mx::{MailKind, MailStore};

const CLIENTS: usize = 24;

/// Sends numbered messages until the connection breaks; records the
/// Message-IDs that got a 250.
async fn client(addr: std::net::SocketAddr, id: usize, acked: Arc<Mutex<Vec<String>>>) {
    let mut raw = Raw::connect(addr).await;
    if raw.reply().await.map(|r| r.0) != Some(220) || raw.cmd("EHLO client.test").await != Some(250)
    {
        return;
    }
    for n in 0.. {
        let message_id = format!("<c{id}-m{n}@client.test>");
        let body = format!(
            "Message-ID: {message_id}\r\nSubject: {n}\r\n\r\n{}\r\nEND {message_id}\r\n.\r\n",
            "x".repeat(2000)
        );
        // Pipelined envelope, then the content.
        let envelope = format!("MAIL FROM:<s@client.test>\r\nRCPT TO:<{POSTMASTER}>\r\nDATA\r\n");
        if raw.send(envelope.as_bytes()).await.is_err() {
            return;
        }
        for expected in [250, 250, 354] {
            if raw.reply().await.map(|r| r.0) != Some(expected) {
                return;
            }
        }
        if raw.send(body.as_bytes()).await.is_err() {
            return;
        }
        match raw.reply().await {
            Some((250, _)) => acked.lock().expect("acked").push(message_id),
            _ => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_that_got_250_survives_kill_9_exactly_once() {
    require(SMTP_SOURCE);
    let mut server = spawn_process("max_sessions = 300\nmax_sessions_per_ip = 200");
    let addr = server.addr;
    let mut source = std::process::Command::new(SMTP_SOURCE)
        .args(["-c", "-s", "40", "-m", "1000000", "-l", "10240"])
        .args(["-f", "s@source.test", "-t", POSTMASTER])
        .arg(format!("{}:{}", addr.ip(), addr.port()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting smtp-source");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(addr, id, Arc::clone(&acked))))
        .collect();
    // Let the load run, with a good number of our messages through.
    let started = Instant::now();
    while acked.lock().expect("acked").len() < 300 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the MX took only {} messages in 60 s",
            acked.lock().expect("acked").len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().expect("kill -9");
    server.child.wait().expect("reaping the server");
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("client did not notice the crash")
            .expect("client task");
    }
    let _ = source.kill();
    let source_out = source.wait_with_output().expect("smtp-source");
    let acked = acked.lock().expect("acked").clone();

    // After the crash: what a restart sees in local/new.
    let store = MailStore::open(&server.mail_dir()).expect("reopening the store");
    let files = stored(&store, MailKind::Local);
    let mut ours: HashMap<String, usize> = HashMap::new();
    let mut from_source = 0;
    for text in &files {
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: "))
            .map(str::to_owned);
        match id {
            Some(id) => {
                assert!(
                    text.ends_with(&format!("END {id}\r\n")),
                    "incomplete stored message {id}"
                );
                *ours.entry(id).or_insert(0) += 1;
            }
            None => from_source += 1,
        }
    }
    assert!(
        from_source > 0,
        "smtp-source delivered nothing: {}",
        String::from_utf8_lossy(&source_out.stderr)
    );
    for id in &acked {
        assert_eq!(
            ours.get(id),
            Some(&1),
            "{id} got a 250 but is stored {:?} times",
            ours.get(id)
        );
    }
    // Anything stored beyond the 250s is at most the transfers in flight.
    assert!(
        ours.len() <= acked.len() + CLIENTS,
        "{} stored, {} acked",
        ours.len(),
        acked.len()
    );
    eprintln!(
        "{} messages acked to our clients, {} stored of ours, {} from smtp-source",
        acked.len(),
        ours.len(),
        from_source
    );
}
