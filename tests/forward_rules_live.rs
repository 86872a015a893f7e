//! Scenario (forwarding rules changed live): while four smtp-source loops keep sending to 20
//! moved addresses through an `in` node, the operator changes the rule set 100 times (removes a
//! rule, adds it back with another new address). Nothing is lost: every message that got its
//! 250 arrives at the real Postfix behind the new addresses exactly once, and every message
//! that did not was refused at RCPT time with 550 5.1.1 (its address had no rule then).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use mailfarm_testkit::dns::TestDns;
use mailfarm_testkit::forward::{final_destination, header, smtp_source_output, wait_delivered};
use mailfarm_testkit::ProcessFarm;

const ADDRESSES: usize = 20;
const CHANGES: usize = 100;

/// Sets the flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn rules_change_a_hundred_times_under_load_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = final_destination(&["new.test"]);
    let dns = TestDns::start(&[
        "new.test. 300 IN MX 10 mx.dest.test.",
        "mx.dest.test. 300 IN A 127.0.0.1",
    ]);
    let farm = ProcessFarm::start_full(
        &tmp.path().join("farm"),
        1,
        16,
        "[forward]\nsrs_domain = \"fwd.test\"",
        &format!(
            "smtp_port = {}\n[resolver]\nnameserver = \"{}\"\ntimeout = \"2s\"\n\
             [inbound]\nlisten = \"127.0.0.1:0\"\nhostname = \"mx.old.test\"\n",
            dest.plain_addr.port(),
            dns.addr
        ),
    );
    for k in 0..ADDRESSES {
        let out = farm.forward(&["add", &format!("a{k}@old.test"), &format!("a{k}@new.test")]);
        assert!(out.status.success(), "{out:?}");
    }
    farm.assign("smurf-1", "in");
    let node = farm.wait_role("smurf-1", "in");
    let addr = node["serving"].as_str().unwrap().to_owned();
    let files = tmp.path().join("messages");
    std::fs::create_dir_all(&files).unwrap();

    let stop = AtomicBool::new(false);
    let seq = std::sync::atomic::AtomicUsize::new(0);
    // (seq, accepted) of every message sent.
    let sent: Mutex<Vec<(usize, bool)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let i = seq.fetch_add(1, Ordering::SeqCst);
                    let file = files.join(format!("m{i}.txt"));
                    std::fs::write(&file, format!("Subject: {i}\nX-Seq: {i}\n\nBody {i}.\n"))
                        .unwrap();
                    let to = format!("a{}@old.test", i % ADDRESSES);
                    let out = smtp_source_output(&addr, "s@senders.test", &to, &file);
                    let accepted = out.status.success();
                    if !accepted {
                        let text = String::from_utf8_lossy(&out.stderr);
                        assert!(text.contains("5.1.1"), "message {i} to {to}: {text}");
                    }
                    sent.lock().unwrap().push((i, accepted));
                }
            });
        }
        // 100 changes: take a rule away, give it back pointing elsewhere. The senders stop
        // when this ends, even by a failed assertion.
        let _stop = StopOnDrop(&stop);
        for change in 0..CHANGES {
            let k = (change / 2) % ADDRESSES;
            let old = format!("a{k}@old.test");
            let args: Vec<String> = if change % 2 == 0 {
                vec!["remove".into(), old]
            } else {
                vec!["add".into(), old, format!("a{k}-v{change}@new.test")]
            };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = farm.forward(&args);
            assert!(out.status.success(), "change {change}: {out:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let sent = sent.into_inner().unwrap();
    let accepted: Vec<usize> = sent.iter().filter(|(_, a)| *a).map(|(i, _)| *i).collect();
    let refused = sent.len() - accepted.len();
    assert!(
        accepted.len() > 100,
        "too few messages got through: {sent:?}"
    );
    assert!(
        refused > 0,
        "no message hit a removed rule: the test proved nothing"
    );
    let delivered = wait_delivered(&dest, Duration::from_secs(180), |m| {
        m.len() >= accepted.len()
    });
    let mut copies: HashMap<usize, usize> = HashMap::new();
    for m in &delivered {
        let seq = header(m, "X-Seq").and_then(|v| v.parse().ok()).unwrap();
        *copies.entry(seq).or_insert(0) += 1;
    }
    for i in &accepted {
        assert_eq!(copies.get(i), Some(&1), "accepted message {i}");
    }
    assert_eq!(
        copies.len(),
        accepted.len(),
        "refused messages never arrive"
    );
    let list = farm.forward(&["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list["version"], (ADDRESSES + CHANGES) as u64, "{list}");
}
