//! `mailfarm-bench netns` end to end: a small farm across network namespaces delivers every
//! message to the sink and leaves no namespace behind, and Ctrl-C in the middle of a campaign
//! tears everything down too. Needs root (network namespaces), iproute2, Postfix's smtp-sink
//! and the `mailfarm` binary next to this test (`cargo build -p mailfarm`, or MAILFARM_BIN).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailfarm_testkit::farm::mailfarm_binary;

fn bench() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mailfarm-bench"));
    command
        .arg("netns")
        .arg("--mailfarm")
        .arg(mailfarm_binary());
    command
}

/// Namespaces the bench process `pid` created that still exist.
fn namespaces_of(pid: u32) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with(&format!("mfnb{pid}-")))
        .map(str::to_owned)
        .collect()
}

fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap();
    assert_eq!(
        euid, "0",
        "the netns bench creates network namespaces: run as root"
    );
}

#[test]
fn a_small_farm_across_namespaces_delivers_everything_and_leaves_nothing() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("netns.json");
    let child = bench()
        .args([
            "--smurfs",
            "1,2",
            "--recipients",
            "300",
            "--connections",
            "2",
        ])
        .arg("--dir")
        .arg(tmp.path())
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("RESULT: OK"), "{text}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for (run, smurfs) in runs.iter().zip([1, 2]) {
        assert_eq!(run["smurfs"], smurfs);
        assert_eq!(run["delivered"], 300, "{run}");
        assert_eq!(run["sink_counted"], 300, "{run}");
        assert_eq!(
            run["smurf_peak_rss_bytes"].as_array().unwrap().len(),
            smurfs
        );
        assert!(run["coordinator_cpu_us_per_recipient"].as_f64().unwrap() > 0.0);
        assert!(run["smurf_cpu_ms_per_message"].as_f64().unwrap() > 0.0);
        // The coordinator's link carried the QUIC traffic (the operator's stayed off it).
        assert!(run["link_bytes_per_recipient"].as_f64().unwrap() > 50.0);
    }
    assert!(
        report["estimate"]["smurf_cores_per_coordinator_core"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(namespaces_of(pid), Vec::<String>::new());
    // The farm folder under --dir is removed too (no --keep).
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("mailfarm-netns.")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn ctrl_c_mid_campaign_tears_everything_down() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = bench()
        .args(["--smurfs", "1", "--recipients", "20000"])
        .arg("--dir")
        .arg(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // The campaign is running once the coordinator's namespace exists and the launch began.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = std::fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.path().join("run-1/coordinator/state").exists());
        if running && namespaces_of(pid).len() >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "the farm did not start");
        assert!(child.try_wait().unwrap().is_none(), "the bench ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let killed = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an interrupted run must fail: {stderr}"
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(namespaces_of(pid), Vec::<String>::new(), "{stderr}");
}
