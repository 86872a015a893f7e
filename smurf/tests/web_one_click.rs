//! The web role over real HTTP(S), playing the mailbox provider: an RFC 8058 one-click POST with
//! the headers and body a provider sends, over HTTPS (rustls both sides), to a link taken from
//! a rendered message. Also: GET changes nothing, bad tokens get a 4xx and change nothing, the
//! dashboard shows nothing without the operator's secret, plain HTTP off loopback is refused.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mailfarm_smurf::web::{
    Action, CampaignCounters, DashboardSnapshot, WebConfig, WebError, WebServer,
};
use mailfarm_templates::{
    derive_unsubscribe_key, MessageSettings, MessageTemplate, TemplateSources, VerpSigner,
};
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

const VERP_KEY: &[u8] = b"the farm's verp key, 32 bytes..!";
const SECRET: &str = "correct horse battery staple";

/// A real message rendered with the campaign's settings; returns its List-Unsubscribe header.
fn rendered_list_unsubscribe(base: &str, recipient_id: u64) -> (String, String) {
    let template = MessageTemplate::compile(
        &TemplateSources {
            subject: "Hello {{first_name}}".into(),
            text: "Hi {{first_name}}\nLeave: {{unsubscribe_url}}\n".into(),
            html: None,
        },
        MessageSettings {
            campaign_id: "autumn-2026".into(),
            from: "Acme Weekly <news@acme.example>".into(),
            reply_to: None,
            list_id: "weekly.acme.example".into(),
            bounce_domain: "bounces.acme.example".into(),
            list_unsubscribe: None,
            unsubscribe_base_url: Some(base.into()),
        },
        vec!["email".into(), "first_name".into()],
        VerpSigner::new(VERP_KEY),
    )
    .expect("template compiles");
    let message = template
        .render(
            recipient_id,
            "carol+news@example.org",
            &["carol+news@example.org".into(), "Carol".into()],
        )
        .expect("renders");
    let text = String::from_utf8(message.data).expect("ASCII message");
    let unfolded = text.replace("\r\n ", " ").replace("\r\n\t", " ");
    let header = unfolded
        .lines()
        .find_map(|l| l.strip_prefix("List-Unsubscribe: "))
        .expect("List-Unsubscribe header")
        .to_owned();
    assert_eq!(
        unfolded.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        base.starts_with("https://"),
        "one-click announced only with https"
    );
    assert!(
        !header.contains("carol"),
        "no address in the link: {header}"
    );
    let url = header
        .split(',')
        .next()
        .map(|u| u.trim().trim_start_matches('<').trim_end_matches('>'))
        .expect("first URL")
        .to_owned();
    (header, url)
}

struct Tls {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    connector: tokio_rustls::TlsConnector,
}

fn make_tls(dir: &Path) -> Tls {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["unsub.acme.example".into()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.join("web.pem");
    let key_path = dir.join("web.key");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Tls {
        cert: cert_path,
        key: key_path,
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
    }
}

fn config(dir: &Path, listen: &str, tls: Option<&Tls>) -> WebConfig {
    WebConfig {
        listen: listen.parse().unwrap(),
        tls: tls.map(|t| (t.cert.clone(), t.key.clone())),
        journal_dir: dir.join("journal"),
        unsubscribe_key: derive_unsubscribe_key(VERP_KEY),
        dashboard_hash: Some(mailfarm_pki::dashboard::hash_dashboard_secret(SECRET).unwrap()),
        undo_window: Duration::from_secs(3600),
    }
}

/// A parsed HTTP/1.1 response.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

async fn read_reply<S: AsyncRead + Unpin>(stream: &mut S) -> Reply {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("reply in time")
            .expect("read");
        assert!(n > 0, "connection closed before the reply headers");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let status = head[9..12].parse().expect("status code");
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    Reply {
        status,
        head,
        body: String::from_utf8_lossy(&buf[header_end..header_end + length]).to_string(),
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, request: &str) -> Reply {
    stream.write_all(request.as_bytes()).await.unwrap();
    read_reply(stream).await
}

async fn https(addr: SocketAddr, tls: &Tls) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tls.connector
        .connect(ServerName::try_from("unsub.acme.example").unwrap(), tcp)
        .await
        .expect("TLS handshake with the web node")
}

fn path_of(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    &after_scheme[after_scheme.find('/').unwrap_or(0)..]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_provider_one_click_post_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_tls(dir.path());
    let (_snap_tx, snap_rx) = watch::channel(DashboardSnapshot::default());
    let server = WebServer::start(config(dir.path(), "127.0.0.1:0", Some(&tls)), snap_rx)
        .await
        .expect("web role starts");
    let addr = server.local_addr();
    let (header, url) = rendered_list_unsubscribe("https://unsub.acme.example", 42);
    assert!(header.contains("mailto:u-autumn-2026-16-"), "{header}");
    let path = path_of(&url).to_owned();

    // A link scanner's GET first: it must change nothing.
    let mut conn = https(addr, &tls).await;
    let reply = exchange(
        &mut conn,
        &format!("GET {path} HTTP/1.1\r\nHost: unsub.acme.example\r\nUser-Agent: scanner\r\n\r\n"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.body.contains("<form method=\"post\""),
        "{}",
        reply.body
    );
    assert!(
        server.journal().pending().is_empty(),
        "GET never unsubscribes"
    );
    assert!(!reply.head.to_ascii_lowercase().contains("set-cookie"));

    // The provider's POST, as RFC 8058 section 3.2 shows it (what Gmail and Yahoo send): form
    // urlencoded, exactly `List-Unsubscribe=One-Click`, no cookies, no credentials.
    let post = format!(
        "POST {path} HTTP/1.1\r\n\
         Host: unsub.acme.example\r\n\
         User-Agent: Mozilla/5.0 (compatible; Google-Unsubscribe)\r\n\
         Content-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 26\r\n\
         Accept-Encoding: gzip, deflate, br\r\n\
         \r\n\
         List-Unsubscribe=One-Click"
    );
    let started = std::time::Instant::now();
    let reply = exchange(&mut conn, &post).await;
    let took = started.elapsed();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(took < Duration::from_secs(2), "answered quickly: {took:?}");
    assert!(!reply.head.to_ascii_lowercase().contains("set-cookie"));
    let pending = server.journal().pending();
    assert_eq!(pending.len(), 1, "on record before the 200");
    assert_eq!(pending[0].action, Action::Unsubscribe);
    assert_eq!(pending[0].campaign_id, "autumn-2026");
    assert_eq!(pending[0].list_id.as_deref(), Some("weekly.acme.example"));
    assert_eq!(pending[0].recipient_id, 42);
    let on_disk = std::fs::read_to_string(dir.path().join("journal/journal.log")).unwrap();
    assert!(on_disk.contains("\tU\t"), "{on_disk}");

    // Idempotent: the provider retries (multipart this time), still 200, nothing new.
    let body = "--xyz\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\n\
                One-Click\r\n--xyz--\r\n";
    let retry = format!(
        "POST {path} HTTP/1.1\r\nHost: unsub.acme.example\r\n\
         Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let reply = exchange(&mut conn, &retry).await;
    assert_eq!(reply.status, 200);
    assert_eq!(server.journal().pending().len(), 1, "idempotent");
    assert_eq!(
        server
            .counters()
            .repeated
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_change_nothing_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (_snap_tx, snap_rx) = watch::channel(DashboardSnapshot::default());
    let server = WebServer::start(config(dir.path(), "127.0.0.1:0", None), snap_rx)
        .await
        .expect("web role starts");
    let addr = server.local_addr();
    let (_, url) = rendered_list_unsubscribe(&format!("http://{addr}"), 7);
    let path = path_of(&url).to_owned();
    let token = path.trim_start_matches("/u/").to_owned();
    let mut flipped = token.clone().into_bytes();
    flipped[6] = if flipped[6] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    let foreign = mailfarm_templates::UnsubscribeSigner::from_verp_key(b"another farm").url_token(
        "autumn-2026",
        "weekly.acme.example",
        7,
    );
    let cases = [
        (token[..token.len() - 5].to_owned(), "truncated"),
        (flipped, "tampered"),
        (foreign, "forged"),
        (format!("{token}%21"), "malformed"),
        (format!("Ag{}", &token[2..]), "unknown"),
    ];
    let mut conn = TcpStream::connect(addr).await.unwrap();
    for (bad, kind) in &cases {
        for method in ["GET", "POST"] {
            let request = format!(
                "{method} /u/{bad} HTTP/1.1\r\nHost: x\r\nContent-Type: \
                 application/x-www-form-urlencoded\r\nContent-Length: 26\r\n\r\n\
                 List-Unsubscribe=One-Click"
            );
            let request = if method == "GET" {
                format!("GET /u/{bad} HTTP/1.1\r\nHost: x\r\n\r\n")
            } else {
                request
            };
            let reply = exchange(&mut conn, &request).await;
            assert_eq!(reply.status, 400, "{kind} {method}: {}", reply.body);
            assert!(
                reply.body.contains("not valid"),
                "plain page: {}",
                reply.body
            );
        }
        assert_eq!(server.counters().bad_tokens_of(kind), 2, "{kind} counted");
    }
    assert!(server.journal().pending().is_empty(), "nothing changed");
    // A POST without the one-click body does nothing either.
    let reply = exchange(
        &mut conn,
        &format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
    )
    .await;
    assert_eq!(reply.status, 400);
    assert!(server.journal().pending().is_empty());
    // /metrics shows the counts to a loopback client.
    let reply = exchange(&mut conn, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .body
            .contains("mailfarm_web_bad_tokens_total{kind=\"forged\"} 2"),
        "{}",
        reply.body
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_nothing_without_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = DashboardSnapshot {
        at_ms: 1,
        campaigns: vec![CampaignCounters {
            id: "secret-campaign".into(),
            sent: 1234,
            ..Default::default()
        }],
        ..Default::default()
    };
    let (_snap_tx, snap_rx) = watch::channel(snapshot);
    let server = WebServer::start(config(dir.path(), "127.0.0.1:0", None), snap_rx)
        .await
        .unwrap();
    let addr = server.local_addr();
    let mut conn = TcpStream::connect(addr).await.unwrap();
    for path in [
        "/dashboard",
        "/dashboard/events",
        "/dashboard/snapshot.json",
    ] {
        for cookie in ["", "Cookie: mf_dash=0123456789abcdef\r\n"] {
            let reply = exchange(
                &mut conn,
                &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{cookie}\r\n"),
            )
            .await;
            assert_eq!(reply.status, 401, "{path}");
            assert!(
                !reply.body.contains("secret-campaign"),
                "{path}: {}",
                reply.body
            );
            assert!(!reply.body.contains("1234"), "{path}");
        }
    }
    let login = |secret: &str| {
        let body = format!("secret={}", secret.replace(' ', "+"));
        format!(
            "POST /dashboard/login HTTP/1.1\r\nHost: x\r\nContent-Type: \
             application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let reply = exchange(&mut conn, &login("wrong")).await;
    assert_eq!(reply.status, 401);
    assert!(!reply.head.to_ascii_lowercase().contains("set-cookie"));
    let reply = exchange(&mut conn, &login(SECRET)).await;
    assert_eq!(reply.status, 303);
    let cookie = reply
        .head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("session cookie")
        .to_owned();
    let reply = exchange(
        &mut conn,
        &format!("GET /dashboard/snapshot.json HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("secret-campaign"), "{}", reply.body);
    server.shutdown().await;
}

#[tokio::test]
async fn plain_http_off_loopback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_tx, rx) = watch::channel(DashboardSnapshot::default());
    let err = WebServer::start(config(dir.path(), "0.0.0.0:0", None), rx)
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, WebError::PlainHttpNotLoopback(_)), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_resubscribes_within_the_window_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_tx, rx) = watch::channel(DashboardSnapshot::default());
    let server = WebServer::start(config(dir.path(), "127.0.0.1:0", None), rx)
        .await
        .unwrap();
    let addr = server.local_addr();
    let one_click = "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 26\r\n\r\n\
                     List-Unsubscribe=One-Click";
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let (_, url) = rendered_list_unsubscribe(&format!("http://{addr}"), 9);
    let path = path_of(&url).to_owned();
    let reply = exchange(
        &mut conn,
        &format!("POST {path} HTTP/1.1\r\nHost: x\r\n{one_click}"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("id=\"undo\""), "offers the undo");
    // Reopening the link shows the confirmation with the undo, still without changing anything.
    let reply = exchange(
        &mut conn,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"),
    )
    .await;
    assert!(
        reply.body.contains("You are unsubscribed"),
        "{}",
        reply.body
    );
    let undo = format!("POST {path}/undo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    let reply = exchange(&mut conn, &undo).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("subscribed again"), "{}", reply.body);
    let pending = server.journal().pending();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[1].action, Action::Resubscribe);
    let reply = exchange(&mut conn, &undo).await;
    assert_eq!(reply.status, 200);
    assert_eq!(server.journal().pending().len(), 2, "undo is idempotent");
    server.shutdown().await;

    // With the window passed, the undo is refused and changes nothing.
    let dir = tempfile::tempdir().unwrap();
    let (_tx, rx) = watch::channel(DashboardSnapshot::default());
    let mut expired = config(dir.path(), "127.0.0.1:0", None);
    expired.undo_window = Duration::ZERO;
    let server = WebServer::start(expired, rx).await.unwrap();
    let addr = server.local_addr();
    let (_, url) = rendered_list_unsubscribe(&format!("http://{addr}"), 9);
    let path = path_of(&url).to_owned();
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let reply = exchange(
        &mut conn,
        &format!("POST {path} HTTP/1.1\r\nHost: x\r\n{one_click}"),
    )
    .await;
    assert_eq!(reply.status, 200);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let reply = exchange(
        &mut conn,
        &format!("POST {path}/undo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
    )
    .await;
    assert_eq!(reply.status, 410);
    assert_eq!(server.journal().pending().len(), 1);
    server.shutdown().await;
}
