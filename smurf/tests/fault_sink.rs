//! The fault sink driven over TCP by the crate's own SMTP client (and by a
//! hand-written client for protocol abuse): every fault of a `FaultPlan`
//! shows up to the client as configured, reproducibly, and the sink's
//! statistics match what the client saw.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailfarm_smurf::inbound::fault_sink::{throttle_burst, FaultPlan, FaultSink, SinkStats};
use mailfarm_smurf::outbound::smtp::{
    ClientConfig, Delivery, Phase, SmtpClient, SmtpError, Timeouts,
};
use std::sync::atomic::Ordering::Relaxed;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

struct Running {
    addr: SocketAddr,
    stats: Arc<SinkStats>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("sink did not stop")
            .unwrap()
            .unwrap();
    }
}

async fn start(plan: FaultPlan) -> Running {
    let sink = FaultSink::bind("127.0.0.1:0".parse().unwrap(), plan)
        .await
        .unwrap();
    let addr = sink.local_addr();
    let stats = sink.stats();
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(sink.run(async {
        let _ = rx.await;
    }));
    Running {
        addr,
        stats,
        stop,
        task,
    }
}

async fn try_client(addr: SocketAddr) -> Result<SmtpClient<TcpStream>, SmtpError> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let config = ClientConfig {
        helo_name: "client.test".into(),
        timeouts: Timeouts::uniform(Duration::from_secs(10)),
    };
    SmtpClient::connect(stream, config).await
}

async fn client(addr: SocketAddr) -> SmtpClient<TcpStream> {
    try_client(addr).await.unwrap()
}

fn message(id: &str) -> Vec<u8> {
    format!("Message-ID: <{id}>\r\nSubject: test\r\n\r\nHello.\r\n").into_bytes()
}

fn rcpt(i: usize) -> String {
    format!("user{i}@example.test")
}

/// What 500 single-recipient messages got.
#[derive(Debug, PartialEq, Eq)]
struct Outcomes {
    delivered: Vec<String>,
    tempfailed: Vec<String>,
    permfailed: Vec<String>,
}

async fn send_500(seed: u64) -> Outcomes {
    let sink = start(FaultPlan {
        tempfail_ratio: 0.2,
        permfail_ratio: 0.1,
        seed,
        ..FaultPlan::default()
    })
    .await;
    let mut c = client(sink.addr).await;
    let mut out = Outcomes {
        delivered: Vec::new(),
        tempfailed: Vec::new(),
        permfailed: Vec::new(),
    };
    for i in 0..500 {
        let to = rcpt(i);
        match c
            .send("bounce@x.test", &to, &message(&format!("m{i}@x.test")))
            .await
            .unwrap()
        {
            Delivery::Delivered(_) => out.delivered.push(to),
            Delivery::Deferred(r) => {
                assert_eq!(r.phase, Phase::RcptTo);
                assert_eq!(
                    (r.reply.code, r.reply.enhanced.unwrap().to_string()),
                    (451, "4.3.0".into())
                );
                out.tempfailed.push(to);
            }
            Delivery::Failed(r) => {
                assert_eq!(r.phase, Phase::RcptTo);
                assert_eq!(
                    (r.reply.code, r.reply.enhanced.unwrap().to_string()),
                    (550, "5.1.1".into())
                );
                out.permfailed.push(to);
            }
        }
        assert!(!c.is_broken());
    }
    c.quit().await.unwrap();
    let s = &sink.stats;
    assert_eq!(s.tempfailed.load(Relaxed), out.tempfailed.len() as u64);
    assert_eq!(s.permfailed.load(Relaxed), out.permfailed.len() as u64);
    assert_eq!(s.accepted.load(Relaxed), out.delivered.len() as u64);
    assert_eq!(s.connections.load(Relaxed), 1);
    // Exactly the delivered messages are recorded, with their Message-ID.
    let expected: Vec<(String, String)> = out
        .delivered
        .iter()
        .map(|to| {
            let i: usize = to[4..to.find('@').unwrap()].parse().unwrap();
            (format!("<m{i}@x.test>"), to.clone())
        })
        .collect();
    assert_eq!(s.messages_snapshot(), expected);
    sink.stop().await;
    out
}

#[tokio::test]
async fn ratios_match_the_plan_and_reproduce_with_the_seed() {
    let first = send_500(42).await;
    let (t, p, d) = (
        first.tempfailed.len(),
        first.permfailed.len(),
        first.delivered.len(),
    );
    assert!((70..=130).contains(&t), "tempfailed {t}");
    assert!((30..=70).contains(&p), "permfailed {p}");
    assert_eq!(t + p + d, 500);
    // Same seed: the very same recipients fail the same way.
    assert_eq!(send_500(42).await, first);
    // Another seed: another draw.
    assert_ne!(send_500(43).await.tempfailed, first.tempfailed);
}

#[tokio::test]
async fn retries_are_decided_afresh_and_permanent_refusals_stay() {
    let sink = start(FaultPlan {
        tempfail_ratio: 0.5,
        permfail_ratio: 0.2,
        seed: 7,
        ..FaultPlan::default()
    })
    .await;
    let mut c = client(sink.addr).await;
    let (mut deferrals, mut delivered, mut permanent) = (0u64, Vec::new(), Vec::new());
    for i in 0..60 {
        let to = rcpt(i);
        for attempt in 0.. {
            assert!(attempt < 40, "{to} never got a definite answer");
            match c
                .send("s@x.test", &to, &message(&format!("r{i}@x")))
                .await
                .unwrap()
            {
                Delivery::Deferred(_) => deferrals += 1,
                Delivery::Delivered(_) => {
                    delivered.push(to.clone());
                    break;
                }
                Delivery::Failed(_) => {
                    permanent.push(to.clone());
                    break;
                }
            }
        }
    }
    assert!(deferrals > 20 && !permanent.is_empty() && delivered.len() > 20);
    // A refused mailbox stays refused.
    for to in &permanent {
        let d = c.send("s@x.test", to, &message("again@x")).await.unwrap();
        assert!(matches!(d, Delivery::Failed(_)), "{to}: {d:?}");
    }
    c.quit().await.unwrap();
    assert_eq!(sink.stats.tempfailed.load(Relaxed), deferrals);
    let recorded: Vec<String> = sink
        .stats
        .messages_snapshot()
        .into_iter()
        .map(|(_, to)| to)
        .collect();
    assert_eq!(recorded, delivered);
    sink.stop().await;
}

#[tokio::test]
async fn throttle_caps_the_global_acceptance_rate() {
    const RATE: f64 = 50.0;
    let sink = start(FaultPlan {
        throttle_rate: Some(RATE),
        ..FaultPlan::default()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut tasks = JoinSet::new();
    for t in 0..4 {
        let addr = sink.addr;
        tasks.spawn(async move {
            let (mut delivered, mut throttled, mut n) = (Vec::new(), 0u64, 0);
            while Instant::now() < deadline {
                let mut c = client(addr).await;
                while Instant::now() < deadline {
                    n += 1;
                    let id = format!("t{t}-{n}@x.test");
                    match c.send("s@x.test", "r@y.test", &message(&id)).await.unwrap() {
                        Delivery::Delivered(_) => delivered.push(format!("<{id}>")),
                        Delivery::Deferred(r) => {
                            assert_eq!(r.phase, Phase::DataEnd);
                            assert_eq!(r.reply.code, 421);
                            assert_eq!(r.reply.text, "Too many messages, slow down");
                            assert!(c.is_broken());
                            throttled += 1;
                            break;
                        }
                        other => panic!("{other:?}"),
                    }
                }
                if !c.is_broken() {
                    c.quit().await.unwrap();
                }
            }
            (delivered, throttled)
        });
    }
    let (mut delivered, mut throttled) = (HashSet::new(), 0);
    while let Some(done) = tasks.join_next().await {
        let (d, t) = done.unwrap();
        delivered.extend(d);
        throttled += t;
    }
    let burst = throttle_burst(RATE);
    let max = (RATE * 2.2 + burst) as usize;
    assert!(
        (60..=max).contains(&delivered.len()),
        "{} delivered",
        delivered.len()
    );
    assert!(throttled > 0);
    let s = &sink.stats;
    assert_eq!(s.accepted.load(Relaxed), delivered.len() as u64);
    assert_eq!(s.throttled.load(Relaxed), throttled);
    let recorded: HashSet<String> = s
        .messages_snapshot()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(recorded, delivered);
    let per_second = s.per_second_snapshot();
    assert_eq!(per_second.values().sum::<u64>(), delivered.len() as u64);
    for (second, n) in &per_second {
        assert!(
            *n as f64 <= RATE + burst + 1.0,
            "{n} accepted in second {second}"
        );
    }
    sink.stop().await;
}

#[tokio::test]
async fn max_connections_refuses_extra_sessions_with_421() {
    let sink = start(FaultPlan {
        max_connections: Some(2),
        ..FaultPlan::default()
    })
    .await;
    let c1 = client(sink.addr).await;
    let mut c2 = client(sink.addr).await;
    match try_client(sink.addr).await {
        Err(e @ SmtpError::Rejected { .. }) => {
            let SmtpError::Rejected { phase, reply } = &e else {
                unreachable!()
            };
            assert_eq!(*phase, Phase::Greeting);
            assert_eq!(reply.code, 421);
            assert_eq!(reply.enhanced.unwrap().to_string(), "4.7.0");
            assert!(e.is_temporary());
        }
        other => panic!("{other:?}"),
    }
    // The two admitted sessions work; once one leaves, a newcomer gets in.
    assert!(c2
        .send("s@x.test", "r@y.test", &message("a@x"))
        .await
        .unwrap()
        .is_delivered());
    c1.quit().await.unwrap();
    let wait = Instant::now();
    while sink.stats.open_connections.load(Relaxed) > 1 {
        assert!(wait.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let c3 = client(sink.addr).await;
    c3.quit().await.unwrap();
    c2.quit().await.unwrap();
    let s = &sink.stats;
    assert_eq!(s.peak_connections.load(Relaxed), 2);
    assert_eq!(s.refused.load(Relaxed), 1);
    assert_eq!(s.connections.load(Relaxed), 4);
    sink.stop().await;
}

#[tokio::test]
async fn dropped_transfers_are_never_reported_delivered() {
    // Every transfer dropped: a temporary error after the content.
    let sink = start(FaultPlan {
        drop_mid_data_ratio: 1.0,
        ..FaultPlan::default()
    })
    .await;
    let mut c = client(sink.addr).await;
    let err = c
        .send("s@x.test", "r@y.test", &message("lost@x"))
        .await
        .unwrap_err();
    assert!(err.is_temporary(), "{err:?}");
    assert!(c.is_broken());
    assert_eq!(sink.stats.dropped.load(Relaxed), 1);
    assert_eq!(sink.stats.accepted.load(Relaxed), 0);
    assert!(sink.stats.messages_snapshot().is_empty());
    sink.stop().await;

    // Half dropped: retrying until delivered stores each message once.
    let sink = start(FaultPlan {
        drop_mid_data_ratio: 0.5,
        seed: 3,
        ..FaultPlan::default()
    })
    .await;
    let mut c = client(sink.addr).await;
    let (mut first_try_dropped, mut drops) = (0, 0u64);
    for i in 0..100 {
        for attempt in 0.. {
            assert!(attempt < 30);
            match c
                .send("s@x.test", &rcpt(i), &message(&format!("d{i}@x")))
                .await
            {
                Ok(d) => {
                    assert!(d.is_delivered(), "{d:?}");
                    break;
                }
                Err(e) => {
                    assert!(e.is_temporary(), "{e:?}");
                    first_try_dropped += usize::from(attempt == 0);
                    drops += 1;
                    c = client(sink.addr).await;
                }
            }
        }
    }
    c.quit().await.unwrap();
    assert!(
        (30..=70).contains(&first_try_dropped),
        "{first_try_dropped}"
    );
    assert_eq!(sink.stats.dropped.load(Relaxed), drops);
    let recorded = sink.stats.messages_snapshot();
    assert_eq!(recorded.len(), 100);
    let unique: BTreeSet<_> = recorded.iter().collect();
    assert_eq!(unique.len(), 100, "a message was stored twice");
    sink.stop().await;
}

/// A hand-driven client.
struct Raw {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl Raw {
    async fn new(addr: SocketAddr) -> Self {
        let (rd, wr) = TcpStream::connect(addr).await.unwrap().into_split();
        Self {
            rd: BufReader::new(rd),
            wr,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).await.unwrap();
    }

    /// The next reply's code and last line, `None` on close.
    async fn reply(&mut self) -> Option<(u16, String)> {
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(Duration::from_secs(10), self.rd.read_line(&mut line));
            if read.await.expect("no reply").unwrap_or(0) == 0 {
                return None;
            }
            assert!(line.ends_with("\r\n"), "{line:?}");
            if line.as_bytes().get(3) != Some(&b'-') {
                return Some((line[..3].parse().unwrap(), line.trim_end().to_owned()));
            }
        }
    }

    async fn cmd(&mut self, line: &str) -> u16 {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await.expect("connection closed").0
    }
}

#[tokio::test]
async fn custom_greeting_refuses_service() {
    let sink = start(FaultPlan {
        greeting: Some("554 5.3.2 no service".into()),
        ..FaultPlan::default()
    })
    .await;
    match try_client(sink.addr).await {
        Err(e @ SmtpError::Rejected { .. }) => {
            assert!(!e.is_temporary());
            let SmtpError::Rejected { phase, reply } = e else {
                unreachable!()
            };
            assert_eq!((phase, reply.code), (Phase::Greeting, 554));
        }
        other => panic!("{other:?}"),
    }
    // RFC 5321 §3.1: 503 to everything but QUIT.
    let mut r = Raw::new(sink.addr).await;
    assert_eq!(r.reply().await.unwrap().1, "554 5.3.2 no service");
    assert_eq!(r.cmd("EHLO x").await, 503);
    assert_eq!(r.cmd("MAIL FROM:<a@b.test>").await, 503);
    assert_eq!(r.cmd("QUIT").await, 221);
    assert_eq!(r.reply().await, None);
    assert_eq!(sink.stats.refused.load(Relaxed), 2);
    sink.stop().await;

    // A 421 greeting closes at once.
    let sink = start(FaultPlan {
        greeting: Some("421 4.3.2 busy".into()),
        ..FaultPlan::default()
    })
    .await;
    let mut r = Raw::new(sink.addr).await;
    assert_eq!(r.reply().await.unwrap().0, 421);
    assert_eq!(r.reply().await, None);
    sink.stop().await;
}

#[tokio::test]
async fn reply_delay_slows_every_reply() {
    let sink = start(FaultPlan {
        reply_delay: Duration::from_millis(40),
        ..FaultPlan::default()
    })
    .await;
    let started = Instant::now();
    let mut c = client(sink.addr).await;
    assert!(c
        .send("s@x.test", "r@y.test", &message("slow@x"))
        .await
        .unwrap()
        .is_delivered());
    // Greeting, EHLO, MAIL, RCPT, DATA, final dot.
    assert!(started.elapsed() >= Duration::from_millis(6 * 40));
    c.quit().await.unwrap();
    sink.stop().await;
}

#[tokio::test]
async fn hostile_input_is_bounded_and_the_session_survives() {
    let sink = start(FaultPlan::default()).await;
    let mut r = Raw::new(sink.addr).await;
    assert_eq!(r.reply().await.unwrap().0, 220);
    let mut long = vec![b'A'; 10_000];
    long.extend_from_slice(b"\r\n");
    r.send(&long).await;
    assert_eq!(r.reply().await.unwrap().0, 500);
    r.send(b"\x00\xff junk\r\n").await;
    assert_eq!(r.reply().await.unwrap().0, 500);
    assert_eq!(r.cmd("MAIL FROM:<a@b.test>").await, 503);
    assert_eq!(r.cmd("EHLO x").await, 250);
    assert_eq!(r.cmd("DATA").await, 503);
    assert_eq!(r.cmd("MAIL FROM:<a@b.test> SIZE=999999999999").await, 552);
    assert_eq!(r.cmd("MAIL FROM:<a@b.test> BODY=8BITMIME").await, 250);
    assert_eq!(r.cmd("DATA").await, 554);
    assert_eq!(r.cmd("RCPT TO:<c@d.test>").await, 250);
    assert_eq!(r.cmd("DATA").await, 354);
    // An over-long content line gets the message refused.
    let mut long = vec![b'x'; 100_000];
    long.extend_from_slice(b"\r\n.\r\n");
    r.send(&long).await;
    assert_eq!(r.reply().await.unwrap().0, 554);
    // Pipelined, with a folded Message-ID and a smuggling attempt.
    r.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nRCPT TO:<e@f.test>\r\nDATA\r\n")
        .await;
    for code in [250, 250, 250, 354] {
        assert_eq!(r.reply().await.unwrap().0, code);
    }
    r.send(b"Message-Id:\r\n <folded@x.test>\r\n\r\nbody\n.\nMAIL FROM:<evil@x>\r\n.\r\n")
        .await;
    assert_eq!(r.reply().await.unwrap().0, 250);
    assert_eq!(r.cmd("QUIT").await, 221);
    assert_eq!(
        sink.stats.messages_snapshot(),
        [
            ("<folded@x.test>".to_owned(), "c@d.test".to_owned()),
            ("<folded@x.test>".to_owned(), "e@f.test".to_owned()),
        ]
    );
    assert_eq!(sink.stats.accepted.load(Relaxed), 1);
    sink.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_sessions() {
    let sink = start(FaultPlan::default()).await;
    let mut r = Raw::new(sink.addr).await;
    assert_eq!(r.reply().await.unwrap().0, 220);
    assert_eq!(r.cmd("EHLO x").await, 250);
    let addr = sink.addr;
    let started = Instant::now();
    sink.stop().await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(r.reply().await.unwrap().0, 421);
    assert_eq!(r.reply().await, None);
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn impossible_plans_are_refused() {
    for plan in [
        FaultPlan {
            tempfail_ratio: 0.7,
            permfail_ratio: 0.7,
            ..FaultPlan::default()
        },
        FaultPlan {
            drop_mid_data_ratio: -0.1,
            ..FaultPlan::default()
        },
        FaultPlan {
            throttle_rate: Some(f64::INFINITY),
            ..FaultPlan::default()
        },
        FaultPlan {
            greeting: Some("220 ok\r\n250 smuggled".into()),
            ..FaultPlan::default()
        },
    ] {
        let err = FaultSink::bind("127.0.0.1:0".parse().unwrap(), plan.clone())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{plan:?}");
    }
}
