//! Scenario (issue 13): a coordinator whose shaping file has errors does not start, and says
//! what every error is and on which line, rather than each smurf refusing the file later.

use mailfarm_testkit::mailfarm;

#[test]
fn coordinator_lists_every_shaping_error_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let init = mailfarm().args(["farm", "init"]).arg(dir).output().unwrap();
    assert!(init.status.success(), "{init:?}");
    std::fs::write(
        dir.join("shaping.toml"),
        "[default]\nmessage_rate = \"fast\"\n\n[[rule]]\nreply = \"(unclosed\"\naction = \"suspend\"\n\
         duration = \"10m\"\n\n[[rule]]\ncode = 421\naction = \"explode\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("coordinator.toml"),
        "listen = \"127.0.0.1:0\"\nfarm_dir = \".\"\nstate_dir = \"state\"\n\
         shaping_file = \"shaping.toml\"\n",
    )
    .unwrap();
    let out = mailfarm()
        .arg("coordinator")
        .arg("--config")
        .arg(dir.join("coordinator.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started with a bad shaping file: {stderr}"
    );
    for want in [
        "line 2: default.message_rate",
        "line 5: rule[0].reply: not a regular expression",
        "line 11: rule[1].action: must be suspend, cap, bog",
    ] {
        assert!(stderr.contains(want), "{want:?} missing from:\n{stderr}");
    }
}
