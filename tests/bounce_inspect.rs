//! `mailfarm bounce inspect` end to end: the real binary on an mbox holding a Postfix DSN to a
//! VERP return path, an ARF complaint and an ordinary message, plus a missing file. Checks
//! the JSON lines a script would read.

use std::process::Command;

const VERP: &str = "b-spring-2s-abcdefghijklmnop@bounces.example";

fn mbox() -> String {
    format!(
        "From MAILER-DAEMON Thu Apr 29 23:34:45 2021\n\
         From: MAILER-DAEMON@mx.example (Mail Delivery System)\nTo: {VERP}\n\
         Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"XX\"\n\n\
         --XX\nContent-Type: text/plain\n\nI'm sorry to have to inform you...\n\n\
         --XX\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n\
         Final-Recipient: rfc822; gone@example.org\nAction: failed\nStatus: 5.1.1\n\
         Diagnostic-Code: smtp; 550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown\n\n\
         --XX--\n\n\
         From fbl@isp.example Thu Apr 29 23:35:00 2021\n\
         From: fbl@isp.example\nTo: {VERP}\nSubject: complaint\nMIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=feedback-report; boundary=\"B\"\n\n\
         --B\nContent-Type: text/plain\n\nabuse report\n\
         --B\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n\
         Original-Rcpt-To: <reader@isp.example>\n\n--B--\n\n\
         From friend@example.org Thu Apr 29 23:36:00 2021\n\
         From: friend@example.org\nTo: me@example.net\nSubject: Lunch?\n\nSee you.\n"
    )
}

#[test]
fn inspect_prints_one_json_line_per_result() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bounces.mbox");
    std::fs::write(&path, mbox()).expect("write mbox");
    let missing = dir.path().join("missing.eml");
    let out = Command::new(env!("CARGO_BIN_EXE_mailfarm"))
        .args(["bounce", "inspect"])
        .arg(&path)
        .arg(&missing)
        .output()
        .expect("run mailfarm");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a missing file makes the status 1"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.eml"));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let bounce = &lines[0];
    assert_eq!(bounce["recipient"], "gone@example.org");
    assert_eq!(bounce["status"], "5.1.1");
    assert_eq!(bounce["reply_code"], 550);
    assert_eq!(bounce["reason"], "userunknown");
    assert_eq!(bounce["hard_bounce"], true);
    assert_eq!(bounce["campaign"], "spring");
    assert_eq!(bounce["recipient_id"], 100);
    assert_eq!(bounce["verified"], false);
    assert_eq!(bounce["message"], 1);
    let complaint = &lines[1];
    assert_eq!(complaint["reason"], "feedback");
    assert_eq!(complaint["feedback_type"], "abuse");
    assert_eq!(complaint["recipient"], "reader@isp.example");
    assert_eq!(complaint["hard_bounce"], false);
    let other = &lines[2];
    assert_eq!(other["reason"], serde_json::Value::Null);
    assert_eq!(other["message"], 3);
}
