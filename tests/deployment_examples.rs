//! The deployment guide and its files stay true to the code: the example configs under
//! `examples/systemd/` load with the real config loaders (unknown keys are errors there), the
//! systemd units pass `systemd-analyze verify`, and every `mailfarm ...` command line in
//! `docs/deployment.md` parses with the real CLI (a wrong flag or subcommand fails).

use std::path::{Path, PathBuf};
use std::process::Command;

use mailfarm_coordinator::CoordinatorConfig;
use mailfarm_smurf::SmurfConfig;
use mailfarm_testkit::farm::mailfarm_binary;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn example_configs_load_with_the_real_loaders() {
    let dir = root().join("examples/systemd");
    let coordinator = CoordinatorConfig::load(&dir.join("coordinator.toml")).unwrap();
    assert_eq!(coordinator.listen.port(), 4433);
    assert_eq!(
        coordinator.state_dir,
        Path::new("/var/lib/mailfarm/coordinator"),
        "the state lives in the unit's StateDirectory"
    );
    assert!(coordinator.metrics_listen.unwrap().ip().is_loopback());
    let smurf = SmurfConfig::load(&dir.join("smurf.toml")).unwrap();
    assert_eq!(smurf.node, "smurf-1");
    assert_eq!(
        smurf.state_dir.as_deref(),
        Some(Path::new("/var/lib/mailfarm/smurf"))
    );
    assert_eq!(smurf.inbound.unwrap().listen.port(), 25);
    assert_eq!(smurf.web.unwrap().listen.port(), 443);
}

#[test]
fn systemd_units_verify() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    assert!(
        analyze.is_file(),
        "systemd-analyze is missing (Debian: apt-get install systemd)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let binary = mailfarm_binary();
    let mut units = Vec::new();
    for name in ["mailfarm-coordinator.service", "mailfarm-smurf.service"] {
        let text = std::fs::read_to_string(root().join("examples/systemd").join(name)).unwrap();
        assert!(text.contains("KillSignal=SIGTERM"), "{name}: graceful stop");
        assert!(text.contains("StateDirectory=mailfarm/"), "{name}");
        assert!(text.contains("User=mailfarm"), "{name}");
        // The command the unit runs parses (clap prints help instead of running it).
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/mailfarm "))
            .unwrap();
        let out = Command::new(&binary)
            .args(exec.split_whitespace())
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: `{exec}` does not parse");
        // verify checks that ExecStart's program exists: point it at the binary under test.
        let text = text.replace("/usr/local/bin/mailfarm", binary.to_str().unwrap());
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        units.push(path);
    }
    let out = Command::new(analyze)
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(stderr.trim().is_empty(), "systemd-analyze warns: {stderr}");
}

/// The `mailfarm ...` command lines of the shell blocks of `doc` (continuations joined,
/// comments dropped).
fn commands(doc: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut in_shell = false;
    let mut pending = String::new();
    for line in doc.lines() {
        if line.starts_with("```") {
            in_shell = line == "```sh";
            continue;
        }
        if !in_shell {
            continue;
        }
        let line = line.split(" #").next().unwrap_or("").trim_end();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        let full = full.trim();
        if let Some(rest) = full.strip_prefix("mailfarm ") {
            out.push(rest.split_whitespace().map(str::to_owned).collect());
        }
    }
    out
}

#[test]
fn every_command_in_the_deployment_guide_parses() {
    let doc = std::fs::read_to_string(root().join("docs/deployment.md")).unwrap();
    let commands = commands(&doc);
    assert!(
        commands.len() >= 10,
        "expected the guide's commands, found {commands:?}"
    );
    let binary = mailfarm_binary();
    for args in &commands {
        // --help after the arguments: clap rejects an unknown flag or subcommand before it,
        // and prints help instead of running the command.
        let out = Command::new(&binary)
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "`mailfarm {}` does not parse: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The check itself catches a wrong flag.
    let out = Command::new(&binary)
        .args(["farm", "init", "farm", "--smurf", "3", "--help"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
