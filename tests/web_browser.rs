//! Scenario, in a real browser (Debian's chromium, headless, through chromidriver and
//! Selenium): a farm of real processes sends the example newsletter to smtp-sink; the
//! unsubscribe link is taken from a message as the sink received it; chromium opens it (the GET
//! changes nothing), clicks the button, sees the confirmation, and the web node's journal has
//! the unsubscribe, and the coordinator counts it. The web node is a smurf on web duty (`farm
//! assign smurf-2 web`). Then chromium logs in to the dashboard with the secret `farm init`
//! printed and watches the sent counter of a running campaign rise, as the coordinator feeds it. Screenshots go to
//! `<target>/screenshots/` (copies in docs/web/). Missing chromium, chromedriver or selenium
//! fails the test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mailfarm_templates::{derive_unsubscribe_key, UnsubscribeSigner};
use mailfarm_testkit::{mailfarm, require, ProcessFarm, SmtpSink};

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("screenshots")
}

/// The example newsletter as campaign `id`, sending to `relay`, linking to the web node at
/// `base`, with the first `rows` recipients.
fn newsletter(dir: &Path, id: &str, relay: &str, base: &str, rows: usize) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/newsletter");
    std::fs::create_dir_all(dir).unwrap();
    for file in ["body.txt.hbs", "body.html.hbs"] {
        std::fs::copy(example.join(file), dir.join(file)).unwrap();
    }
    let toml = std::fs::read_to_string(example.join("campaign.toml")).unwrap();
    let toml: String = toml
        .lines()
        .map(|line| {
            if line.starts_with("id = ") {
                format!("id = \"{id}\"")
            } else if line.starts_with("unsubscribe_base_url = ") {
                format!("unsubscribe_base_url = \"{base}\"")
            } else if line.starts_with("relay = ") {
                format!("relay = \"{relay}\"")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        toml.contains(base),
        "the example names unsubscribe_base_url"
    );
    std::fs::write(dir.join("campaign.toml"), toml).unwrap();
    let csv = std::fs::read_to_string(example.join("recipients.csv")).unwrap();
    let head: Vec<&str> = csv.lines().take(rows + 1).collect();
    std::fs::write(dir.join("recipients.csv"), head.join("\n") + "\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_and_dashboard_in_chromium() {
    require("chromium");
    require("chromedriver");
    let python = require("python3");
    let tmp = tempfile::tempdir().unwrap();
    let farm_dir = tmp.path().join("farm");
    std::fs::create_dir_all(&farm_dir).unwrap();

    // farm init shows the dashboard secret once; the farm keeps only its hash.
    let init = mailfarm()
        .args(["farm", "init"])
        .arg(&farm_dir)
        .args(["--smurfs", "1"])
        .output()
        .unwrap();
    assert!(init.status.success(), "{init:?}");
    let init_out = String::from_utf8_lossy(&init.stdout).to_string();
    let secret = init_out
        .lines()
        .skip_while(|l| !l.starts_with("Dashboard secret"))
        .nth(1)
        .map(|l| l.trim().to_owned())
        .expect("farm init prints the dashboard secret");
    // smurf-1 sends; smurf-2 goes on web duty (the role switch), with the farm's keys from the
    // coordinator and the dashboard hash `farm init` wrote.
    let web_addr = format!("127.0.0.1:{}", mailfarm_testkit::free_port());
    let farm = ProcessFarm::start_full(
        &farm_dir,
        2,
        64,
        "",
        &format!("[web]\nlisten = \"{web_addr}\"\n"),
    );
    farm.assign("smurf-2", "web");
    farm.wait_role("smurf-2", "web");
    let sink = SmtpSink::start(&tmp.path().join("sink"));
    let verp_key = mailfarm_pki::load_secret(&farm_dir.join("verp.key")).unwrap();
    let unsubscribe_key = derive_unsubscribe_key(&verp_key);
    let journal_dir = farm_dir.join("state/smurf-2/web");
    let base = format!("http://{web_addr}");

    // A real campaign, really sent.
    let campaign = tmp.path().join("newsletter");
    newsletter(&campaign, "autumn-2026", &sink.addr.to_string(), &base, 5);
    let out = farm.campaign(&["launch", campaign.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let messages = sink.messages();
    assert_eq!(messages.len(), 5, "sent to the sink");
    let (rcpt, raw) = &messages[0];
    let text = String::from_utf8_lossy(raw).replace("\r\n ", " ");
    let header = text
        .lines()
        .find(|l| l.starts_with("List-Unsubscribe:"))
        .expect("List-Unsubscribe in the sent message");
    assert!(
        !header.contains(rcpt.as_str()),
        "no address in the link: {header}"
    );
    assert!(
        !text.contains("?u="),
        "the old address-carrying link is gone"
    );
    let start = header
        .find(&format!("{base}/u/"))
        .expect("link to the web node");
    let url = header[start..].split('>').next().unwrap().to_owned();
    let token = url.rsplit('/').next().unwrap();
    let target = UnsubscribeSigner::new(&unsubscribe_key)
        .verify_url_token(token)
        .expect("the sent token verifies");
    assert_eq!(target.campaign_id, "autumn-2026");
    assert!(
        text.contains(&url),
        "the body carries the same link ({{{{unsubscribe_url}}}})"
    );

    // A second campaign that runs while the browser watches the dashboard: the web node shows
    // what the coordinator sends it every second.
    let burst = tmp.path().join("burst");
    // 1,000 recipients at 10/s: still sending (100 s) after a loaded machine has started
    // Chromium, so the browser sees the counter move.
    newsletter(&burst, "burst", &sink.addr.to_string(), &base, 1000);
    let out = farm.campaign(&[
        "launch",
        burst.to_str().unwrap(),
        "--rate",
        "10/s",
        "--detach",
    ]);
    assert!(out.status.success(), "{out:?}");

    let shots = screenshots_dir();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web_browser.py");
    let run = tokio::process::Command::new(python)
        .arg(&script)
        .args(["--url", &url, "--base", &base, "--secret", &secret])
        .arg("--journal")
        .arg(journal_dir.join("journal.log"))
        .args(["--recipient-id", &target.recipient_id.to_string()])
        .args(["--watch-campaign", "burst"])
        .arg("--shots")
        .arg(&shots)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("browser run in time")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser scenario failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("GET changed nothing"), "{stdout}");
    assert!(stdout.contains("dashboard sent counter rose"), "{stdout}");

    // The web node forwarded it: the coordinator counts it and suppresses the address.
    let c = farm.wait_campaign("autumn-2026", Duration::from_secs(30), |c| {
        c["unsubscribed"] == 1
    });
    assert_eq!(c["unsubscribed"], 1, "{c}");
    for shot in [
        "01-unsubscribe-page.png",
        "02-unsubscribed.png",
        "03-dashboard-login.png",
        "04-dashboard.png",
    ] {
        let size = std::fs::metadata(shots.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(size > 1000, "screenshot {shot} saved");
    }
}
