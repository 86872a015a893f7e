//! Scenario, in a real browser (Debian's chromium, headless, through chromidriver and
//! Selenium): a farm of real processes sends the example newsletter to smtp-sink; the
//! unsubscribe link is taken from a message as the sink received it; chromium opens it (the GET
//! changes nothing), clicks the button, sees the confirmation, and the web node's journal has
//! the unsubscribe. Then chromium logs in to the dashboard with the secret `farm init` printed
//! and watches the sent counter of a running campaign rise. Screenshots go to
//! `<target>/screenshots/` (copies in docs/web/). Missing chromium, chromedriver or selenium
//! fails the test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mailfarm_smurf::web::{Action, CampaignCounters, DashboardSnapshot, WebConfig, WebServer};
use mailfarm_templates::{derive_unsubscribe_key, UnsubscribeSigner};
use mailfarm_testkit::{mailfarm, require, ProcessFarm, SmtpSink};
use tokio::sync::watch;

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

fn counters_of(farm: &ProcessFarm, id: &str) -> CampaignCounters {
    let status = farm.status(id);
    let n = |k: &str| mailfarm_testkit::number(&status, k);
    CampaignCounters {
        id: id.into(),
        status: status.get("state").cloned().unwrap_or_default(),
        total: n("total"),
        sent: n("delivered"),
        deferred: n("deferred"),
        failed: n("failed"),
        ..Default::default()
    }
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
    let farm = ProcessFarm::start(&farm_dir, 1, 64);
    let sink = SmtpSink::start(&tmp.path().join("sink"));

    // The web node, with the farm's unsubscribe key and dashboard hash.
    let verp_key = mailfarm_pki::load_secret(&farm_dir.join("verp.key")).unwrap();
    let unsubscribe_key = derive_unsubscribe_key(&verp_key);
    let journal_dir = tmp.path().join("web-journal");
    let (snap_tx, snap_rx) = watch::channel(DashboardSnapshot::default());
    let web = WebServer::start(
        WebConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            journal_dir: journal_dir.clone(),
            unsubscribe_key,
            dashboard_hash: Some(
                mailfarm_pki::dashboard::load_dashboard_hash(&farm_dir.join("dashboard.argon2"))
                    .unwrap(),
            ),
            undo_window: Duration::from_secs(24 * 3600),
        },
        snap_rx,
    )
    .await
    .expect("web node starts");
    let base = format!("http://{}", web.local_addr());

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

    // A second campaign that runs while the browser watches the dashboard; its counters come
    // from the real coordinator every half second.
    let burst = tmp.path().join("burst");
    newsletter(&burst, "burst", &sink.addr.to_string(), &base, 400);
    let out = farm.campaign(&[
        "launch",
        burst.to_str().unwrap(),
        "--rate",
        "25/s",
        "--detach",
    ]);
    assert!(out.status.success(), "{out:?}");
    let farm = std::sync::Arc::new(farm);
    let feeder_farm = farm.clone();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let feeder = std::thread::spawn(move || {
        while stop_rx.try_recv().is_err() {
            let snapshot = DashboardSnapshot {
                at_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64,
                campaigns: vec![
                    counters_of(&feeder_farm, "burst"),
                    counters_of(&feeder_farm, "autumn-2026"),
                ],
                nodes: vec![mailfarm_smurf::web::NodeInfo {
                    name: "smurf-1".into(),
                    role: "out".into(),
                    state: "active".into(),
                    load_percent: 40,
                    serves: None,
                }],
                ..Default::default()
            };
            snap_tx.send_replace(snapshot);
            std::thread::sleep(Duration::from_millis(500));
        }
    });

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
    let _ = stop_tx.send(());
    let _ = feeder.join();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser scenario failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("GET changed nothing"), "{stdout}");
    assert!(stdout.contains("dashboard sent counter rose"), "{stdout}");

    // The web node has it on record, for the coordinator.
    let pending = web.journal().pending();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].action, Action::Unsubscribe);
    assert_eq!(pending[0].campaign_id, "autumn-2026");
    assert_eq!(pending[0].recipient_id, target.recipient_id);
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
    web.shutdown().await;
}
