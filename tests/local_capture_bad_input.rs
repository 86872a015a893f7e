//! Scenario: `campaign launch --local --capture` with bad input. A template that does not
//! compile fails the launch with file, line and reason; bad rows are set aside with their line
//! numbers; a row lacking a field the template uses fails alone while the others are sent.

use mailfarm_testkit::{launch_event, mailfarm, write_campaign};

#[test]
fn broken_template_fails_the_launch_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let campaign = tmp.path().join("c");
    write_campaign(
        &campaign,
        "broken",
        "127.0.0.1:25".parse().unwrap(),
        "email,first_name,code\na@x.example,A,1\n",
    );
    std::fs::write(
        campaign.join("body.html.hbs"),
        "<p>fine</p>\n<p>{{#if first_name}}unclosed\n",
    )
    .unwrap();
    let out = mailfarm()
        .args(["campaign", "launch"])
        .arg(&campaign)
        .args(["--local", "1", "--capture"])
        .arg(tmp.path().join("outbox"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a broken template must fail the launch"
    );
    assert!(
        stderr.contains("body.html.hbs:"),
        "names the file and line: {stderr}"
    );
    let captured = std::fs::read_dir(tmp.path().join("outbox"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(captured, 0, "nothing may be sent");
}

#[test]
fn bad_rows_are_set_aside_and_a_short_row_fails_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let campaign = tmp.path().join("c");
    let mut csv = String::from("email,first_name,code\n");
    for i in 0..40 {
        csv.push_str(&format!("u{i}@x.example,Name{i},C{i}\n"));
    }
    csv.push_str("short@x.example,OnlyName\n"); // line 42: lacks `code`
    csv.push_str("broken address,X,1\n"); // line 43
    csv.push_str("u1@x.example,Dup,1\n"); // line 44
    write_campaign(&campaign, "bad-rows", "127.0.0.1:25".parse().unwrap(), &csv);
    let outbox = tmp.path().join("outbox");
    let out = mailfarm()
        .args(["campaign", "launch"])
        .arg(&campaign)
        .args(["--local", "2", "--json", "--capture"])
        .arg(&outbox)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let summary = launch_event(&out, "summary");
    assert_eq!(summary["delivered"], 40, "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    let reasons = summary["reasons"]
        .as_array()
        .expect("the reasons of a --local run");
    assert!(
        reasons
            .iter()
            .any(|r| r["count"] == 1 && r["reason"].as_str().is_some_and(|t| t.contains("code"))),
        "the failure names the missing field: {summary}"
    );
    let launched = launch_event(&out, "launched");
    let rejects: Vec<&str> = launched["rejects"]
        .as_array()
        .expect("the rows set aside")
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert!(
        rejects.iter().any(|r| r.starts_with("line 43:")),
        "{launched}"
    );
    assert!(
        rejects
            .iter()
            .any(|r| r.starts_with("line 44:") && r.contains("duplicate")),
        "{launched}"
    );
    let files: Vec<_> = std::fs::read_dir(&outbox).unwrap().collect();
    assert_eq!(files.len(), 40);
    for file in files {
        let raw = std::fs::read_to_string(file.unwrap().path()).unwrap();
        assert!(!raw.contains("short@x.example"));
    }
}
