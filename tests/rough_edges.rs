//! Rough edges a newcomer meets on a first try, each checked the way they would see it: the
//! `mailfarm` binary's output.

use std::path::Path;
use std::process::Output;

use mailfarm_testkit::{mailfarm, write_campaign};

/// `campaign launch DIR --local 2 --capture OUTBOX`.
fn launch_local(campaign: &Path, outbox: &Path) -> Output {
    mailfarm()
        .args(["campaign", "launch"])
        .arg(campaign)
        .args(["--local", "2", "--capture"])
        .arg(outbox)
        .output()
        .unwrap()
}

fn campaign(dir: &Path, csv: &str) -> std::path::PathBuf {
    let campaign = dir.join("c");
    write_campaign(&campaign, "rough", "127.0.0.1:25".parse().unwrap(), csv);
    campaign
}

#[test]
fn a_failed_local_launch_prints_its_error_once_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    // Many rows, so the embedded smurfs are up and linked when the launch fails.
    let mut csv = String::from("email,first_name,code\n");
    for i in 0..20_000 {
        csv.push_str(&format!("r{i}@x.example,N{i},{i}\n"));
    }
    let campaign = campaign(tmp.path(), &csv);
    std::fs::write(campaign.join("body.txt.hbs"), "Hello {{town}}\n").unwrap();
    let out = launch_local(&campaign, &tmp.path().join("outbox"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "only the capture line and the error:\n{stderr}"
    );
    assert!(lines[0].starts_with("capturing messages into "), "{stderr}");
    assert!(lines[1].starts_with("error: template: "), "{stderr}");
    assert_eq!(
        lines[1].matches("unknown field").count(),
        1,
        "the template error is said once: {stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
}

#[test]
fn an_empty_recipients_file_is_called_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let campaign = campaign(tmp.path(), "");
    let out = launch_local(&campaign, &tmp.path().join("outbox"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("recipients.csv is empty") && stderr.contains("header row"),
        "{stderr}"
    );
    assert!(!stderr.contains("columns: )"), "{stderr}");
}

#[test]
fn farm_help_describes_every_farm_subcommand() {
    let top = mailfarm().arg("--help").output().unwrap();
    let top = String::from_utf8_lossy(&top.stdout);
    let farm_line = top
        .lines()
        .find(|l| l.trim_start().starts_with("farm "))
        .unwrap_or_else(|| panic!("no farm line in:\n{top}"));
    let farm = mailfarm().args(["farm", "--help"]).output().unwrap();
    let farm = String::from_utf8_lossy(&farm.stdout);
    let about = farm.lines().next().unwrap_or_default();
    for sub in ["init", "nodes", "drain", "undrain", "suppress"] {
        assert!(
            about.contains(sub),
            "`farm --help` does not mention {sub}: {about}"
        );
        assert!(farm.contains(&format!("  {sub} ")), "{farm}");
    }
    assert!(farm_line.contains("nodes"), "{farm_line}");
}

#[test]
fn farm_init_says_which_ehlo_name_smurfs_use_and_warns_when_it_will_not_do() {
    let tmp = tempfile::tempdir().unwrap();
    let out = mailfarm()
        .args(["farm", "init"])
        .arg(tmp.path().join("farm"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = stdout
        .lines()
        .find_map(|l| l.strip_prefix("smurfs without helo_name greet receivers with EHLO "))
        .unwrap_or_else(|| panic!("no EHLO line:\n{stdout}"));
    // The same rule, written out here: a public name has a dot and no private suffix.
    let private = !name.contains('.')
        || [
            ".invalid",
            ".test",
            ".example",
            ".local",
            ".localdomain",
            ".lan",
            ".internal",
        ]
        .iter()
        .any(|s| name.ends_with(s));
    assert_eq!(
        stderr.contains("will not do for direct MX delivery"),
        private,
        "EHLO {name}; stderr: {stderr}"
    );
}

#[test]
fn a_smurf_warns_at_startup_when_its_ehlo_name_will_not_do() {
    let tmp = tempfile::tempdir().unwrap();
    // The test farm's smurfs greet as smurf-N.test, which no receiver can resolve.
    let mut farm = mailfarm_testkit::ProcessFarm::start(&tmp.path().join("farm"), 1, 8);
    let line = farm.smurfs[0].wait_line(
        "the EHLO warning",
        std::time::Duration::from_secs(10),
        |l| l.contains("will not do for direct MX delivery"),
    );
    assert!(line.contains("\"smurf-1.test\""), "{line}");
    assert!(line.contains("WARN"), "{line}");
}

#[test]
fn a_local_run_against_a_deferring_relay_says_what_waits_and_ctrl_c_says_where_it_stands() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink =
        mailfarm_testkit::FaultSinkProcess::start(&tmp.path().join("sink"), &["--tempfail", "1.0"]);
    let campaign = tmp.path().join("c");
    write_campaign(
        &campaign,
        "deferring",
        sink.addr,
        &mailfarm_testkit::recipients_csv(6, "d"),
    );
    let mut command = mailfarm();
    command
        .args(["campaign", "launch"])
        .arg(&campaign)
        .args(["--local", "1"]);
    let mut run = mailfarm_testkit::Daemon::spawn("local", command);
    let wait = std::time::Duration::from_secs(30);
    let note = run.wait_line("the waiting note", wait, |l| l.starts_with("waiting: "));
    assert!(
        note.starts_with("waiting: 6 deferred, nothing in flight"),
        "{note}"
    );
    assert!(
        note.contains("next retry in 4m") || note.contains("next retry in 5m"),
        "{note}"
    );
    let why = run.wait_line("the deferral reason", wait, |l| l.contains("451"));
    assert!(
        why.trim_start().starts_with('6'),
        "all six for this reason: {why}"
    );

    let interrupt = std::process::Command::new("kill")
        .args(["-INT", &run.child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupt.success());
    let deadline = std::time::Instant::now() + wait;
    let status = loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Ctrl-C did not stop the run:\n{}",
            run.output()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130), "{}", run.output());
    // The process has exited: its last lines may still be on their way through the pipe.
    let deadline = std::time::Instant::now() + wait;
    while run.count_lines(|l| l.starts_with("interrupted: ")) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no standing:\n{}",
            run.output()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let standing = run.wait_line("where things stand", wait, |l| {
        l.starts_with("interrupted: ")
    });
    assert!(
        standing.starts_with(
            "interrupted: campaign deferring stands at 6 of 6 recipients: sent 0, deferred 6"
        ),
        "{standing}"
    );
    assert!(
        run.count_lines(|l| l.contains("next retry was in ")) == 1,
        "{}",
        run.output()
    );
    assert!(sink.stop().is_empty(), "the sink accepted nothing");
}
