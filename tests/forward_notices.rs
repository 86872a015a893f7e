//! Scenario (forwarding with change-of-address notices, end to end): a coordinator and two
//! `in` nodes forward 1,000 messages from 50 senders to 100 moved addresses; a real Postfix is
//! the final destination of the new addresses and of the senders' domains (unbound serves
//! their MX records, pointing at it). Every message arrives exactly once, with an SRS envelope
//! sender (the null sender stays null); each (sender, old address) pair gets exactly one
//! notice, even though both `in` nodes and the coordinator are killed with SIGKILL halfway
//! and the second half sends every pair again; the null sender, auto-submitted mail
//! (Auto-Submitted, Precedence: bulk, List-Id) and the no-notice list (an address and a
//! domain) get none. Then a bounce to an SRS address reaches the original sender with a null
//! sender, a forged one is refused, and an unknown address of the moved domain is refused.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use mailfarm_testkit::dns::TestDns;
use mailfarm_testkit::forward::{
    final_destination, header, inbound_counters, smtp_source, wait_delivered,
};
use mailfarm_testkit::ProcessFarm;

const SENDERS: usize = 50;
const MOVED: usize = 100;
const MESSAGES: usize = 1000;

/// What kind of mail sender `s` sends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Normal,
    Null,
    AutoSubmitted,
    Bulk,
    ListId,
    NoNoticeAddress,
    NoNoticeDomain,
}

fn kind(s: usize) -> Kind {
    match s {
        0..38 => Kind::Normal,
        38..41 => Kind::Null,
        41..44 => Kind::AutoSubmitted,
        44..46 => Kind::Bulk,
        46 => Kind::ListId,
        47 => Kind::NoNoticeAddress,
        _ => Kind::NoNoticeDomain,
    }
}

fn sender(s: usize) -> String {
    match kind(s) {
        Kind::Null => String::new(),
        Kind::NoNoticeAddress => "boss@senders.test".into(),
        Kind::NoNoticeDomain => format!("s{s}@quiet.test"),
        _ => format!("s{s}@senders.test"),
    }
}

/// Message `i`: its sender index and moved-address index (200 pairs, 5 messages each, every
/// pair in both halves).
fn pair(i: usize) -> (usize, usize) {
    let s = i % SENDERS;
    let k = (i / SENDERS) % 4;
    (s, (s * 2 + k) % MOVED)
}

fn write_message(dir: &Path, i: usize) -> std::path::PathBuf {
    let (s, r) = pair(i);
    let extra = match kind(s) {
        Kind::AutoSubmitted => "Auto-Submitted: auto-generated\n",
        Kind::Bulk => "Precedence: bulk\n",
        Kind::ListId => "List-Id: <news.senders.test>\n",
        _ => "",
    };
    let path = dir.join(format!("m{i}.txt"));
    std::fs::write(
        &path,
        format!(
            "From: <{}>\nTo: <old{r}@old.test>\nSubject: message {i}\n\
             Message-ID: <seq-{i}@senders.test>\nX-Seq: {i}\n{extra}\nHello {i}.\n",
            sender(s)
        ),
    )
    .unwrap();
    path
}

/// Sends messages `range` alternately through the two `in` nodes, four at a time.
fn send(range: std::ops::Range<usize>, dir: &Path, inbound: &[String; 2]) {
    let items: Vec<usize> = range.collect();
    std::thread::scope(|scope| {
        for chunk in items.chunks(items.len().div_ceil(4)) {
            scope.spawn(move || {
                for &i in chunk {
                    let file = write_message(dir, i);
                    let (s, r) = pair(i);
                    let to = format!("old{r}@old.test");
                    assert!(
                        smtp_source(&inbound[i % 2], &sender(s), &to, &file),
                        "message {i} to {to} was refused"
                    );
                }
            });
        }
    });
}

fn in_addresses(farm: &ProcessFarm) -> [String; 2] {
    let serving = |name: &str| {
        let node = farm.wait_role(name, "in");
        node["serving"]
            .as_str()
            .expect("in node serving")
            .to_owned()
    };
    [serving("smurf-1"), serving("smurf-2")]
}

/// Forwarded copies by X-Seq, and notices by (sender, old address).
fn tally(messages: &[String]) -> (HashMap<usize, usize>, HashMap<(String, String), usize>) {
    let mut forwarded = HashMap::new();
    let mut notices = HashMap::new();
    for m in messages {
        if let Some(seq) = header(m, "X-Seq").and_then(|v| v.parse().ok()) {
            *forwarded.entry(seq).or_insert(0) += 1;
        } else if header(m, "Auto-Submitted") == Some("auto-replied") {
            let to = header(m, "To")
                .unwrap_or("")
                .trim_matches(['<', '>'])
                .to_owned();
            let subject = header(m, "Subject").unwrap_or("");
            let old = subject
                .strip_prefix("Address change: ")
                .and_then(|s| s.split(' ').next())
                .unwrap_or("")
                .to_owned();
            *notices.entry((to, old)).or_insert(0) += 1;
        }
    }
    (forwarded, notices)
}

fn expected_notices(range: std::ops::Range<usize>) -> HashSet<(String, String)> {
    range
        .map(pair)
        .filter(|(s, _)| kind(*s) == Kind::Normal)
        .map(|(s, r)| (sender(s), format!("old{r}@old.test")))
        .collect()
}

/// Polls `farm watch --json` (up to 3 minutes) until the inbound counters satisfy `ok`.
fn wait_counters(farm: &ProcessFarm, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let c = inbound_counters(farm);
        if ok(&c) {
            return c;
        }
        assert!(std::time::Instant::now() < deadline, "{c}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn forwards_every_message_once_and_notifies_each_pair_once_a_day() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = final_destination(&["new.test", "senders.test", "quiet.test"]);
    let dns = TestDns::start(&[
        "new.test. 300 IN MX 10 mx.dest.test.",
        "senders.test. 300 IN MX 10 mx.dest.test.",
        "quiet.test. 300 IN MX 10 mx.dest.test.",
        "mx.dest.test. 300 IN A 127.0.0.1",
    ]);
    let mut farm = ProcessFarm::start_full(
        &tmp.path().join("farm"),
        2,
        16,
        "metrics_listen = \"127.0.0.1:0\"\n[forward]\nsrs_domain = \"fwd.test\"\n\
         no_notice = [\"boss@senders.test\", \"@quiet.test\"]",
        &format!(
            "smtp_port = {}\n[resolver]\nnameserver = \"{}\"\ntimeout = \"2s\"\n\
             [inbound]\nlisten = \"127.0.0.1:0\"\nhostname = \"mx.old.test\"\n",
            dest.plain_addr.port(),
            dns.addr
        ),
    );
    // The rules, imported from a CSV; a bad file is refused whole, with its line numbers.
    let bad = tmp.path().join("bad.csv");
    std::fs::write(
        &bad,
        "old,new\nold1@old.test,new1@new.test\nnot-an-address,x@new.test\n",
    )
    .unwrap();
    let out = farm.forward(&["import", bad.to_str().unwrap()]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("line 3"),
        "{out:?}"
    );
    let mut csv = String::from("old,new\n");
    for r in 0..MOVED {
        csv.push_str(&format!("old{r}@old.test,new{r}@new.test\n"));
    }
    let rules = tmp.path().join("rules.csv");
    std::fs::write(&rules, csv).unwrap();
    let out = farm.forward(&["import", rules.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let listed = farm.forward(&["list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        listed["rules"].as_array().map(Vec::len),
        Some(MOVED),
        "{listed}"
    );

    farm.assign("smurf-1", "in");
    farm.assign("smurf-2", "in");
    let inbound = in_addresses(&farm);
    let messages = tmp.path().join("messages");
    std::fs::create_dir_all(&messages).unwrap();

    // First half; wait until it is all forwarded and every notice it calls for arrived.
    let half = MESSAGES / 2;
    let first_notices = expected_notices(0..half);
    send(0..half, &messages, &inbound);
    wait_delivered(&dest, Duration::from_secs(120), |m| {
        let (forwarded, notices) = tally(m);
        forwarded.len() >= half && notices.len() >= first_notices.len()
    });
    wait_counters(&farm, |c| c["forward_delivered"] == half as u64);

    // kill -9 of both in nodes and the coordinator; the rules and the notice grants survive.
    farm.crash_and_restart_coordinator();
    for node in &mut farm.smurfs {
        node.child.kill().unwrap();
        node.child.wait().unwrap();
    }
    farm.smurfs.clear();
    farm.start_smurf("smurf-1");
    farm.start_smurf("smurf-2");
    let inbound = in_addresses(&farm);
    send(half..MESSAGES, &messages, &inbound);
    // Every claim of the second half is refused as already sent (the same pairs, same day).
    let second_claims = (half..MESSAGES)
        .filter(|i| kind(pair(*i).0) == Kind::Normal)
        .count() as u64;
    let c = wait_counters(&farm, |c| {
        let already = c["notices_suppressed"]
            .as_array()
            .and_then(|l| l.iter().find(|e| e[0] == "already-sent"))
            .map_or(0, |e| e[1].as_u64().unwrap_or(0));
        c["forward_delivered"] == (MESSAGES - half) as u64 && already == second_claims
    });
    let all = wait_delivered(&dest, Duration::from_secs(60), |m| {
        tally(m).0.len() >= MESSAGES
    });
    let (forwarded, notices) = tally(&all);
    for i in 0..MESSAGES {
        assert_eq!(forwarded.get(&i), Some(&1), "message {i}");
    }
    let expected = expected_notices(0..MESSAGES);
    assert_eq!(
        notices.keys().cloned().collect::<HashSet<_>>(),
        expected,
        "notices go to exactly the normal senders' pairs"
    );
    assert!(notices.values().all(|n| *n == 1), "{notices:?}");
    // The reasons were counted on the nodes (second half: after the restart).
    let reasons: HashMap<String, u64> = c["notices_suppressed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e[0].as_str().unwrap().to_owned(), e[1].as_u64().unwrap()))
        .collect();
    for (reason, senders) in [
        ("null-sender", 3),
        ("auto-submitted", 3),
        ("precedence", 2),
        ("list-id", 1),
        ("no-notice-list", 3),
    ] {
        let per_half = (half / SENDERS * senders) as u64;
        assert_eq!(reasons.get(reason), Some(&per_half), "{reason}: {c}");
    }

    // SRS: the envelope sender at the destination; the null sender stays null.
    let sample = all
        .iter()
        .find(|m| header(m, "X-Seq") == Some("0"))
        .unwrap();
    let return_path = header(sample, "Return-Path")
        .unwrap()
        .trim_matches(['<', '>']);
    assert!(return_path.starts_with("SRS0="), "{return_path}");
    assert!(return_path.ends_with("@fwd.test"), "{return_path}");
    let null = all
        .iter()
        .find(|m| header(m, "X-Seq") == Some("38"))
        .unwrap();
    assert_eq!(header(null, "Return-Path"), Some("<>"));
    // A bounce to the SRS address reaches the original sender, with a null sender.
    let bounce = tmp.path().join("bounce.txt");
    // smtp-source turns the file's LF line ends into CRLF.
    std::fs::write(&bounce, "Subject: bounce\nX-Bounce: 1\n\nUser unknown.\n").unwrap();
    assert!(smtp_source(&inbound[0], "", return_path, &bounce));
    let all = wait_delivered(&dest, Duration::from_secs(60), |m| {
        m.iter().any(|m| header(m, "X-Bounce").is_some())
    });
    let returned = all
        .iter()
        .find(|m| header(m, "X-Bounce").is_some())
        .unwrap();
    assert_eq!(header(returned, "Delivered-To"), Some("s0@senders.test"));
    assert_eq!(header(returned, "Return-Path"), Some("<>"));
    // Forged SRS and unknown moved-domain addresses are refused at RCPT time.
    let forged = return_path.replace("=senders.test=", "=evil.test=");
    assert!(!smtp_source(&inbound[0], "", &forged, &bounce));
    assert!(!smtp_source(
        &inbound[1],
        "a@b.test",
        "nobody@old.test",
        &bounce
    ));

    // The counters reach /metrics, and every forwarded message has its accounting line.
    let metrics = mailfarm_testkit::metrics(&farm);
    assert!(
        metrics.contains("mailfarm_forwarded_total{outcome=\"delivered\"}"),
        "{metrics}"
    );
    let log = std::fs::read_to_string(tmp.path().join("farm/state/accounting.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["kind"] == "forwarded")
        .collect();
    assert_eq!(lines.len(), MESSAGES + 1, "every forward has a line");
    assert!(lines
        .iter()
        .all(|l| l["old"].as_str().is_some() && l["new"].as_str().is_some()));
}
