//! `mailfarm man --out DIR` writes one man page per command and subcommand, generated from
//! the clap definition; the same definition's `--version` says which library signs RSA DKIM.

use mailfarm_testkit::mailfarm;

#[test]
fn every_subcommand_has_a_man_page() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("man1");
    let run = mailfarm()
        .args(["man", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    for page in [
        "mailfarm",
        "mailfarm-farm",
        "mailfarm-farm-init",
        "mailfarm-farm-nodes",
        "mailfarm-farm-drain",
        "mailfarm-farm-undrain",
        "mailfarm-farm-suppress",
        "mailfarm-coordinator",
        "mailfarm-smurf",
        "mailfarm-campaign",
        "mailfarm-campaign-launch",
        "mailfarm-campaign-status",
        "mailfarm-campaign-watch",
        "mailfarm-campaign-list",
        "mailfarm-campaign-pause",
        "mailfarm-campaign-resume",
        "mailfarm-campaign-cancel",
        "mailfarm-sink",
        "mailfarm-man",
    ] {
        let path = out.join(format!("{page}.1"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(text.contains(".TH "), "{page}: not a roff man page");
    }
    let launch = std::fs::read_to_string(out.join("mailfarm-campaign-launch.1")).unwrap();
    assert!(launch.contains("local"), "options are documented");
    assert!(
        launch.contains("json") && launch.contains("summary"),
        "--json says what it prints"
    );
    assert!(!out.join("mailfarm-help.1").exists(), "no page for `help`");
}

#[test]
fn long_version_names_the_rsa_dkim_signer() {
    let out = mailfarm().arg("--version").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("mailfarm {}\n", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    // The tests build without the openssl-dkim feature: ring signs, and the line says how to
    // get OpenSSL instead.
    assert!(
        text.contains("DKIM RSA signatures: ring (build with --features openssl-dkim"),
        "{text}"
    );
}
