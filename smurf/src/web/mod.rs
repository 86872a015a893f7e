//! The `web` role: the farm's public HTTP(S) face for unsubscribes (RFC 8058 one-click, a GET
//! page that changes nothing and a button that POSTs, an undo), and the operators' private live
//! dashboard. A node takes it with `farm assign NODE web`; the role switch calls
//! [`WebServer::start`] and forwards the [`UnsubscribeJournal`]'s pending entries to the
//! coordinator.
//!
//! Routes:
//! - `GET /u/{token}`: page with one button; never unsubscribes (link scanners prefetch URLs).
//! - `POST /u/{token}` (body `List-Unsubscribe=One-Click`): unsubscribes, idempotent, 200 once
//!   the journal has it on disk. No cookie, no login.
//! - `POST /u/{token}/undo`: resubscribes within the undo window.
//! - `/dashboard`, `/dashboard/events` (SSE), `/dashboard/snapshot.json`: operators only.
//! - `GET /metrics`: the node's counters, to loopback clients only.

pub mod counters;
pub mod dashboard;
pub mod journal;
mod pages;
pub mod role;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use mailfarm_templates::{UnsubscribeSigner, UnsubscribeTarget};
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::warn;

pub use counters::{WebCounters, WebCountersSnapshot};
pub use dashboard::{CampaignCounters, DashboardSnapshot, InboundCounters, NodeInfo};
pub use journal::{Action, JournalEntry, JournalError, Recorded, UnsubscribeJournal};

use counters::WebCounters as Counters;

/// Largest request body read (a one-click POST is 26 bytes).
const MAX_BODY: usize = 4096;

/// Settings of the web role.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Where to listen. Without `tls`, it must be a loopback address.
    pub listen: SocketAddr,
    /// Certificate chain and private key (PEM) for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Folder of the unsubscribe journal.
    pub journal_dir: PathBuf,
    /// The farm's unsubscribe key: [`mailfarm_templates::derive_unsubscribe_key`] of the VERP
    /// key (the web node never needs the VERP key itself).
    pub unsubscribe_key: [u8; 32],
    /// argon2 PHC hash of the operators' dashboard secret (`dashboard.argon2` from `farm
    /// init`); `None` disables the dashboard entirely (every dashboard URL answers 404).
    pub dashboard_hash: Option<String>,
    /// How long after an unsubscribe the recipient may undo it.
    pub undo_window: Duration,
}

/// The web role could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// Plain HTTP was asked for on an address other than loopback.
    #[error(
        "refusing plain HTTP on {0}: unsubscribe links and the dashboard login must not cross \
         a network in clear; give a certificate and key (HTTPS) or listen on 127.0.0.1/::1"
    )]
    PlainHttpNotLoopback(SocketAddr),
    /// The certificate or key could not be used.
    #[error("TLS {path}: {reason}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The journal could not be opened.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

struct AppState {
    signer: UnsubscribeSigner,
    journal: UnsubscribeJournal,
    counters: Arc<Counters>,
    dashboard_hash: Option<String>,
    sessions: dashboard::Sessions,
    snapshot: watch::Receiver<DashboardSnapshot>,
    undo_window: Duration,
    secure_cookie: bool,
    /// At most two argon2 checks at once, so logins cannot eat the node's CPU.
    login_slots: Semaphore,
}

/// A running web role.
pub struct WebServer {
    local_addr: SocketAddr,
    journal: UnsubscribeJournal,
    counters: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl WebServer {
    /// Opens the journal, binds the listener and starts serving. `snapshot` feeds the
    /// dashboard; send a new [`DashboardSnapshot`] about once a second.
    pub async fn start(
        config: WebConfig,
        snapshot: watch::Receiver<DashboardSnapshot>,
    ) -> Result<WebServer, WebError> {
        if config.tls.is_none() && !config.listen.ip().is_loopback() {
            return Err(WebError::PlainHttpNotLoopback(config.listen));
        }
        let tls = match &config.tls {
            Some((cert, key)) => Some(tls::server_config(cert, key)?),
            None => None,
        };
        let journal = UnsubscribeJournal::open(&config.journal_dir)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| WebError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| WebError::Bind {
            addr: config.listen,
            source,
        })?;
        let counters = Arc::new(Counters::default());
        let state = Arc::new(AppState {
            signer: UnsubscribeSigner::new(&config.unsubscribe_key),
            journal: journal.clone(),
            counters: counters.clone(),
            dashboard_hash: config.dashboard_hash.clone(),
            sessions: dashboard::Sessions::default(),
            snapshot,
            undo_window: config.undo_window,
            secure_cookie: tls.is_some(),
            login_slots: Semaphore::new(2),
        });
        let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = match tls {
            Some(tls_config) => {
                let listener = tls::TlsListener::new(listener, tls_config).map_err(|source| {
                    WebError::Bind {
                        addr: config.listen,
                        source,
                    }
                })?;
                // TapIo gives the SocketAddr connect info (for /metrics) to any listener.
                let listener = axum::serve::ListenerExt::tap_io(listener, |_| {});
                serve(listener, app, stopped)
            }
            None => {
                let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                serve(listener, app, stopped)
            }
        };
        Ok(WebServer {
            local_addr,
            journal,
            counters,
            stop: Some(stop),
            task,
        })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The journal: forward [`UnsubscribeJournal::pending`] to the coordinator and
    /// [`UnsubscribeJournal::acknowledge`] what it committed.
    pub fn journal(&self) -> &UnsubscribeJournal {
        &self.journal
    }

    /// The node's counters (for `/metrics` and load reports).
    pub fn counters(&self) -> &Arc<WebCounters> {
        &self.counters
    }

    /// Stops accepting, lets requests in progress finish, and returns when the server is
    /// down. The journal stays valid (pending entries are kept for the next start).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Serves `app` on `listener` (plain TCP or TLS, tapped so that handlers get the peer's
/// address) until `stopped` fires, as a task.
fn serve<L, F>(
    listener: axum::serve::TapIo<L, F>,
    app: axum::extract::connect_info::IntoMakeServiceWithConnectInfo<Router, SocketAddr>,
    stopped: oneshot::Receiver<()>,
) -> JoinHandle<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    F: FnMut(&mut L::Io) + Send + 'static,
{
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            warn!("web server: {e}");
        }
    })
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/u/{token}", get(unsubscribe_page).post(one_click))
        .route("/u/{token}/undo", post(undo))
        .route("/dashboard", get(dashboard_home))
        .route("/dashboard/login", post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/events", get(dashboard_events))
        .route("/dashboard/snapshot.json", get(dashboard_json))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Headers every answer carries: no caching, no framing, no outside resources.
fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; form-action 'self'; \
                 frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn home() -> Response {
    html(
        StatusCode::OK,
        pages::page(
            "mailfarm",
            "<h1>mailfarm</h1><p>This server handles unsubscribe links.</p>",
        ),
    )
}

async fn not_found() -> Response {
    html(
        StatusCode::NOT_FOUND,
        pages::error_page("Not found", "There is nothing here."),
    )
}

/// Verifies a token, counting a bad one; `None` for a bad token (answer [`bad_token_page`]).
fn verify(state: &AppState, token: &str) -> Option<UnsubscribeTarget> {
    match state.signer.verify_url_token(token) {
        Ok(target) => Some(target),
        Err(error) => {
            state.counters.bad_token(&error);
            None
        }
    }
}

/// The answer to a bad token: 400 and a plain page.
fn bad_token_page() -> Response {
    html(
        StatusCode::BAD_REQUEST,
        pages::error_page(
            "This unsubscribe link is not valid",
            "The link may have been cut or changed. Nothing was changed. Use the link \
                 exactly as it is in the message, or reply to the message to ask to be removed.",
        ),
    )
}

fn list_name(target: &UnsubscribeTarget) -> &str {
    target.list_id.as_deref().unwrap_or("this list")
}

fn undo_hours(state: &AppState) -> u64 {
    (state.undo_window.as_secs() / 3600).max(1)
}

async fn unsubscribe_page(
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
) -> Response {
    let Some(target) = verify(&state, &token) else {
        return bad_token_page();
    };
    Counters::bump(&state.counters.pages_shown);
    let standing = state
        .journal
        .standing(&target.campaign_id, target.recipient_id);
    let body = match standing {
        Some(s) if s.action == Action::Unsubscribe => {
            pages::done_page(&token, list_name(&target), undo_hours(&state))
        }
        _ => pages::confirm_page(&token, list_name(&target)),
    };
    html(StatusCode::OK, body)
}

/// Whether a POST body asks for the one-click unsubscribe (urlencoded or multipart).
fn is_one_click(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .any(|pair| pair.trim() == "List-Unsubscribe=One-Click")
        || (text.contains("name=\"List-Unsubscribe\"") && text.contains("One-Click"))
}

async fn one_click(
    State(state): State<Arc<AppState>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let Some(target) = verify(&state, &token) else {
        return bad_token_page();
    };
    if !is_one_click(&body) {
        return html(
            StatusCode::BAD_REQUEST,
            pages::error_page(
                "Not an unsubscribe request",
                "The request did not ask to unsubscribe (List-Unsubscribe=One-Click).",
            ),
        );
    }
    let list = list_name(&target).to_owned();
    match state.journal.record(Action::Unsubscribe, target).await {
        Ok(Recorded::New(_)) => Counters::bump(&state.counters.unsubscribes),
        Ok(Recorded::Already) => Counters::bump(&state.counters.repeated),
        Err(e) => {
            Counters::bump(&state.counters.journal_errors);
            warn!("unsubscribe not recorded: {e}");
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::error_page(
                    "Please try again",
                    "Your request could not be recorded just now. Nothing was changed.",
                ),
            );
        }
    }
    html(
        StatusCode::OK,
        pages::done_page(&token, &list, undo_hours(&state)),
    )
}

async fn undo(State(state): State<Arc<AppState>>, Path(token): Path<String>) -> Response {
    let Some(target) = verify(&state, &token) else {
        return bad_token_page();
    };
    let list = list_name(&target).to_owned();
    let standing = state
        .journal
        .standing(&target.campaign_id, target.recipient_id);
    match standing {
        Some(s) if s.action == Action::Unsubscribe => {
            let age = journal::now_ms().saturating_sub(s.at_ms);
            if age > state.undo_window.as_millis() as u64 {
                Counters::bump(&state.counters.undo_expired);
                return html(
                    StatusCode::GONE,
                    pages::error_page(
                        "Too late to undo here",
                        "The time to undo this unsubscribe has passed. Subscribe again on the \
                         sender's site.",
                    ),
                );
            }
        }
        _ => return html(StatusCode::OK, pages::resubscribed_page(&list)),
    }
    match state.journal.record(Action::Resubscribe, target).await {
        Ok(Recorded::New(_)) => Counters::bump(&state.counters.resubscribes),
        Ok(Recorded::Already) => {}
        Err(e) => {
            Counters::bump(&state.counters.journal_errors);
            warn!("resubscribe not recorded: {e}");
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::error_page("Please try again", "Nothing was changed."),
            );
        }
    }
    html(StatusCode::OK, pages::resubscribed_page(&list))
}

/// `None` when the dashboard is allowed; otherwise the answer to give (login page or 404).
fn gate(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    if state.dashboard_hash.is_none() {
        return Some(not_found_now());
    }
    let cookie = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    if state.sessions.check(cookie) {
        None
    } else {
        Some(html(StatusCode::UNAUTHORIZED, dashboard::login_page(false)))
    }
}

fn not_found_now() -> Response {
    html(
        StatusCode::NOT_FOUND,
        pages::error_page("Not found", "There is nothing here."),
    )
}

async fn dashboard_home(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(refusal) = gate(&state, &headers) {
        return refusal;
    }
    let snapshot = state.snapshot.borrow().clone();
    html(
        StatusCode::OK,
        dashboard::dashboard_page(&snapshot, &state.counters.snapshot()),
    )
}

async fn dashboard_events(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(refusal) = gate(&state, &headers) {
        return refusal;
    }
    let mut response =
        dashboard::events(state.snapshot.clone(), state.counters.clone()).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn dashboard_json(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(refusal) = gate(&state, &headers) {
        return refusal;
    }
    let json = serde_json::to_string(&*state.snapshot.borrow()).unwrap_or_else(|_| "{}".into());
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json,
    )
        .into_response()
}

/// The `secret` field of a urlencoded login form.
fn form_secret(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let value = text
        .split('&')
        .find_map(|pair| pair.strip_prefix("secret="))?;
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

async fn login(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let Some(hash) = state.dashboard_hash.clone() else {
        return not_found_now();
    };
    let secret = form_secret(&body).unwrap_or_default();
    let ok = match state.login_slots.acquire().await {
        Ok(_permit) => tokio::task::spawn_blocking(move || {
            mailfarm_pki::dashboard::verify_dashboard_secret(&hash, &secret)
        })
        .await
        .unwrap_or(false),
        Err(_) => false,
    };
    if !ok {
        Counters::bump(&state.counters.login_failures);
        return html(StatusCode::UNAUTHORIZED, dashboard::login_page(true));
    }
    Counters::bump(&state.counters.logins);
    let id = state.sessions.create();
    let secure = if state.secure_cookie { "; Secure" } else { "" };
    let cookie = format!(
        "{}={id}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        dashboard::SESSION_COOKIE,
        dashboard::SESSION_TTL.as_secs()
    );
    let mut response = Redirect::to("/dashboard").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    state
        .sessions
        .remove(headers.get(header::COOKIE).and_then(|v| v.to_str().ok()));
    let mut response = Redirect::to("/dashboard").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("mf_dash=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

async fn metrics(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    if !peer.ip().is_loopback() {
        return not_found_now();
    }
    let mut out = String::with_capacity(2048);
    state.counters.render_prometheus(&mut out);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_click_bodies() {
        assert!(is_one_click(b"List-Unsubscribe=One-Click"));
        assert!(is_one_click(b"List-Unsubscribe=One-Click\r\n"));
        assert!(is_one_click(
            b"--b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--b--"
        ));
        assert!(!is_one_click(b""));
        assert!(!is_one_click(b"List-Unsubscribe=Maybe"));
    }

    #[test]
    fn login_form_is_decoded() {
        assert_eq!(form_secret(b"secret=abc"), Some("abc".into()));
        assert_eq!(form_secret(b"x=1&secret=a%20b+c"), Some("a b c".into()));
        assert_eq!(form_secret(b"secret=%zz"), None);
        assert_eq!(form_secret(b"secret=%4"), Some("%4".into()));
        assert_eq!(form_secret(b"nothing"), None);
    }
}
