//! Scenario: a smurf keeps a campaign's template bundle on disk (it holds the VERP key) only
//! while the campaign runs: the file is its owner's alone, and when the campaign ends the
//! coordinator sends `Forget` and the smurf removes it. A second campaign ships its own.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use mailfarm_testkit::{number, recipients_csv, write_campaign, ProcessFarm, SmtpSink};

fn bundles(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "bundle"))
                .collect()
        })
        .unwrap_or_default()
}

fn wait_no_bundles(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !bundles(dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the smurf still keeps {:?} after its campaign ended",
            bundles(dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_ended_campaign_s_template_leaves_the_smurf() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&tmp.path().join("sink"));
    let farm = ProcessFarm::start(&tmp.path().join("farm"), 1, 4);
    let templates = farm.dir.join("state/smurf-1/templates");

    // 12 recipients at 4/s: the campaign runs for about 3 s, long enough to see its bundle.
    let first = tmp.path().join("first");
    write_campaign(&first, "first", sink.addr, &recipients_csv(12, "a"));
    let launch = farm.campaign(&[
        "launch",
        first.to_str().unwrap(),
        "--rate",
        "4/s",
        "--detach",
    ]);
    assert!(launch.status.success(), "{launch:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let file = loop {
        if let Some(file) = bundles(&templates).pop() {
            break file;
        }
        assert!(
            Instant::now() < deadline,
            "no template bundle on the smurf's disk"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode,
        0o600,
        "a bundle holds the VERP key: {}",
        file.display()
    );
    farm.wait_status("first", "the end", Duration::from_secs(60), |s| {
        number(s, "delivered") == 12
    });
    wait_no_bundles(&templates);

    let second = tmp.path().join("second");
    write_campaign(&second, "second", sink.addr, &recipients_csv(5, "b"));
    let out = farm.campaign(&["launch", second.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(number(&farm.status("second"), "delivered"), 5);
    wait_no_bundles(&templates);
    assert_eq!(sink.messages().len(), 17);
}
