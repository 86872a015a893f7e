//! Scenario (one-click unsubscribe, farm-wide): a node on web duty takes RFC 8058 one-click
//! POSTs for a running campaign. The link of a message really sent works, as does one for a
//! recipient not reached yet, who is then skipped; the campaign counts both, and the next
//! campaign to the same list sets both addresses aside at ingest. A forged token changes
//! nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use mailfarm_templates::UnsubscribeSigner;
use mailfarm_testkit::{free_port, write_campaign, ProcessFarm, SmtpSink};

const N: usize = 30;

/// POSTs the one-click body to `path` on `addr`; returns the status code.
fn one_click(addr: SocketAddr, path: &str) -> u16 {
    let mut conn = TcpStream::connect(addr).unwrap();
    let body = "List-Unsubscribe=One-Click";
    write!(
        conn,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {answer:?}"))
}

fn campaign_dir(dir: &std::path::Path, id: &str, relay: SocketAddr, web: SocketAddr) {
    let mut csv = String::from("email,first_name,code\n");
    for i in 0..N {
        csv.push_str(&format!("u{i}@list.test,N{i},{i}\n"));
    }
    write_campaign(dir, id, relay, &csv);
    let toml = std::fs::read_to_string(dir.join("campaign.toml")).unwrap();
    let toml = toml.replace(
        "[delivery]",
        &format!("unsubscribe_base_url = \"http://{web}\"\n[delivery]"),
    );
    std::fs::write(dir.join("campaign.toml"), toml).unwrap();
}

#[test]
fn one_click_unsubscribes_are_farm_wide_and_skip_unsent_mail() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&tmp.path().join("sink"));
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let farm = ProcessFarm::start_full(
        &tmp.path().join("farm"),
        2,
        4,
        "",
        &format!("[web]\nlisten = \"{web}\"\n"),
    );
    farm.assign("smurf-2", "web");
    farm.wait_role("smurf-2", "web");
    let first = tmp.path().join("first");
    campaign_dir(&first, "news", sink.addr, web);
    let out = farm.campaign(&[
        "launch",
        first.to_str().unwrap(),
        "--rate",
        "2/s",
        "--detach",
    ]);
    assert!(out.status.success(), "{out:?}");

    // The link of the first message that arrived.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (rcpt, url) = loop {
        let found = sink.messages_so_far().into_iter().find_map(|(rcpt, raw)| {
            let text = String::from_utf8_lossy(&raw).replace("\r\n ", " ");
            let header = text.lines().find(|l| l.starts_with("List-Unsubscribe:"))?;
            let start = header.find(&format!("<http://{web}"))? + 1;
            let end = start + header[start..].find('>')?;
            Some((rcpt, header[start..end].to_owned()))
        });
        if let Some(found) = found {
            break found;
        }
        assert!(std::time::Instant::now() < deadline, "no message arrived");
        std::thread::sleep(Duration::from_millis(100));
    };
    let path = url.trim_start_matches(&format!("http://{web}")).to_owned();
    assert_eq!(one_click(web, &path), 200, "{url}");
    assert_eq!(one_click(web, &path), 200, "one-click is idempotent");

    // A recipient the campaign has not reached yet (the last row), with a real token.
    let key = mailfarm_pki::load_secret(&farm.dir.join("verp.key")).unwrap();
    let signer = UnsubscribeSigner::from_verp_key(&key);
    let last = (N - 1) as u64;
    let token = signer.url_token("news", "tests.sender.test", last);
    assert_eq!(one_click(web, &format!("/u/{token}")), 200);
    // A forged token: refused, nothing changes.
    let forged = UnsubscribeSigner::from_verp_key(b"another farm's key, 32 bytes....").url_token(
        "news",
        "tests.sender.test",
        1,
    );
    let status = one_click(web, &format!("/u/{forged}"));
    assert!(
        (400..500).contains(&status),
        "forged token answered {status}"
    );

    let c = farm.wait_campaign("news", Duration::from_secs(120), |c| c["finished"] == true);
    assert_eq!(c["unsubscribed"], 2, "{c}");
    assert!(
        c["skipped"].as_u64().unwrap() >= 1,
        "the unreached one is skipped: {c}"
    );
    let last_address = format!("u{last}@list.test");
    assert!(
        sink.messages().iter().all(|(r, _)| *r != last_address),
        "mail went to {last_address} after the unsubscribe"
    );
    assert_ne!(rcpt, last_address);

    // The next campaign to the same list sets both aside at ingest.
    let second = tmp.path().join("second");
    campaign_dir(&second, "news-2", sink.addr, web);
    let out = farm.campaign(&["launch", second.to_str().unwrap(), "--detach"]);
    assert!(out.status.success(), "{out:?}");
    let c = farm.wait_campaign("news-2", Duration::from_secs(60), |c| c["finished"] == true);
    assert_eq!(c["suppressed"], 2, "{c}");
}
