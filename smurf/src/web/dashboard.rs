//! The operators' live dashboard: campaigns and their counters with a rate chart, the farm's
//! nodes, the bounce queue and the inbound counters, updated every second over server-sent
//! events. The integrator feeds it a [`DashboardSnapshot`] through a `watch` channel; this
//! module renders it. Private: every dashboard route wants a session cookie, which only a login
//! with the operator's secret (argon2-hashed by `farm init`) gives.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::watch;

use super::counters::WebCountersSnapshot;
use super::pages::escape;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "mf_dash";
/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// One campaign's counters, as `campaign status` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CampaignCounters {
    /// Campaign id.
    pub id: String,
    /// Status word (`running`, `paused`, `finished` ...).
    pub status: String,
    /// Recipients in the campaign.
    pub total: u64,
    /// Delivered.
    pub sent: u64,
    /// Deferred, waiting for a retry.
    pub deferred: u64,
    /// Failed permanently.
    pub failed: u64,
    /// Bounced after acceptance.
    pub bounced: u64,
    /// Complaints (feedback loops).
    pub complained: u64,
    /// Unsubscribed.
    pub unsubscribed: u64,
}

/// One node of the farm.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// Role: `out`, `in`, `bounce` or `web`.
    pub role: String,
    /// State: `starting`, `active`, `draining`, `idle`.
    pub state: String,
    /// Load, in percent of the node's capacity (or CPU percent).
    pub load_percent: u32,
    /// Address it serves in its role, for `in` and `web`.
    pub serves: Option<String>,
}

/// Inbound (`in` role) counters of the farm.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InboundCounters {
    /// Messages received.
    pub received: u64,
    /// Kept for the operator (postmaster@, abuse@, replies).
    pub kept: u64,
    /// Handed to bounce processing.
    pub to_bounce: u64,
    /// Refused.
    pub refused: u64,
}

/// Everything the dashboard shows, filled by the integrator from the coordinator about once a
/// second.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DashboardSnapshot {
    /// When it was taken, ms since the Unix epoch.
    pub at_ms: u64,
    /// Campaigns, newest first.
    pub campaigns: Vec<CampaignCounters>,
    /// The farm's nodes.
    pub nodes: Vec<NodeInfo>,
    /// Messages waiting in the bounce queue.
    pub bounce_queue_depth: u64,
    /// Inbound counters.
    pub inbound: InboundCounters,
}

/// One SSE event: the farm snapshot and this web node's own counters.
#[derive(Debug, Clone, serde::Serialize)]
struct Feed<'a> {
    farm: &'a DashboardSnapshot,
    web: WebCountersSnapshot,
}

/// Logged-in dashboard sessions (random ids, in memory: a restart logs everyone out).
#[derive(Debug, Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    /// Starts a session and returns its id.
    pub fn create(&self) -> String {
        let mut bytes = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut bytes[..]);
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, expires| *expires > now);
        sessions.insert(id.clone(), now + SESSION_TTL);
        id
    }

    /// Whether the request's `Cookie` header holds a live session.
    pub fn check(&self, cookie_header: Option<&str>) -> bool {
        let Some(id) = cookie_header.and_then(session_id) else {
            return false;
        };
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .get(id)
            .is_some_and(|expires| *expires > Instant::now())
    }

    /// Ends the session named in the `Cookie` header.
    pub fn remove(&self, cookie_header: Option<&str>) {
        if let Some(id) = cookie_header.and_then(session_id) {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.remove(id);
        }
    }
}

fn session_id(header: &str) -> Option<&str> {
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == SESSION_COOKIE).then_some(value)
    })
}

/// The SSE stream: the current snapshot at once, then each new one.
pub fn events(
    rx: watch::Receiver<DashboardSnapshot>,
    counters: std::sync::Arc<super::counters::WebCounters>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold((rx, true), move |(mut rx, first)| {
        let counters = counters.clone();
        async move {
            if !first {
                // A second tick also refreshes the web node's own counters when the farm
                // snapshot did not change.
                let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
            }
            let json = {
                let snapshot = rx.borrow_and_update();
                serde_json::to_string(&Feed {
                    farm: &snapshot,
                    web: counters.snapshot(),
                })
                .unwrap_or_else(|_| "{}".into())
            };
            Some((
                Ok(Event::default().event("snapshot").data(json)),
                (rx, false),
            ))
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The login page (also what any dashboard URL shows without a session: nothing else).
pub fn login_page(failed: bool) -> String {
    let notice = if failed {
        "<p id=\"login-failed\" style=\"color:#b5442a\">Wrong secret.</p>"
    } else {
        ""
    };
    super::pages::page(
        "mailfarm dashboard: log in",
        &format!(
            "<h1>mailfarm dashboard</h1>{notice}\
             <form method=\"post\" action=\"/dashboard/login\">\
             <label>Operator secret <input id=\"secret\" name=\"secret\" type=\"password\" \
             autocomplete=\"current-password\" autofocus></label> \
             <button id=\"login\" type=\"submit\">Log in</button></form>\
             <p class=\"small\">The secret was shown by <code>mailfarm farm init</code>.</p>"
        ),
    )
}

const DASHBOARD_STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#111;\
color:#ddd}header{padding:.8em 1.2em;background:#222;display:flex;justify-content:space-between}\
h1{font-size:1.2em;margin:0}h2{font-size:1em;color:#aaa;margin:1.2em 0 .4em}\
section{padding:0 1.2em}table{border-collapse:collapse;width:100%}th,td{padding:.3em .6em;\
text-align:right;border-bottom:1px solid #333}th:first-child,td:first-child{text-align:left}\
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{background:#1c1c1c;padding:.6em 1em;\
border-radius:6px;min-width:8em}.card b{display:block;font-size:1.6em;color:#fff}\
svg{background:#1c1c1c;border-radius:6px}button{background:#333;color:#ddd;border:0;\
padding:.4em .8em;border-radius:4px}#live{color:#7c7}";

const DASHBOARD_SCRIPT: &str = r##"
const hist = {}; let last = null;
function cell(tr, v) { const td = document.createElement('td'); td.textContent = v; tr.appendChild(td); }
function table(id, rows, cols) {
  const body = document.getElementById(id); body.textContent = '';
  for (const r of rows) { const tr = document.createElement('tr');
    for (const c of cols) cell(tr, typeof c === 'function' ? c(r) : (r[c] ?? ''));
    body.appendChild(tr); }
}
function chart(campaigns) {
  const svg = document.getElementById('chart'); const W = 600, H = 160;
  let max = 1; for (const id in hist) for (const v of hist[id]) max = Math.max(max, v);
  let html = '<text x="4" y="12" fill="#888" font-size="11">' + max.toFixed(0) + ' msg/s</text>';
  const colors = ['#f0b27a', '#7cc', '#c7c', '#7c7', '#cc7'];
  let i = 0;
  for (const id in hist) { const h = hist[id]; if (h.length < 2) { i++; continue; }
    const pts = h.map((v, k) => (W - (h.length - 1 - k) * (W / 120)).toFixed(1) + ',' + (H - 4 - v / max * (H - 20)).toFixed(1)).join(' ');
    html += '<polyline fill="none" stroke-width="2" stroke="' + colors[i % 5] + '" points="' + pts + '"/>';
    html += '<text x="' + (W - 150) + '" y="' + (14 + 12 * i) + '" fill="' + colors[i % 5] + '" font-size="11"></text>';
    i++; }
  svg.innerHTML = html;
  let j = 0; const labels = svg.querySelectorAll('text');
  for (const id in hist) { if (hist[id].length >= 2 && labels[1 + j]) { labels[1 + j].textContent = id; j++; } }
}
function apply(feed) {
  const farm = feed.farm, web = feed.web;
  if (last && farm.at_ms > last.at_ms) {
    const dt = (farm.at_ms - last.at_ms) / 1000;
    for (const c of farm.campaigns) {
      const prev = last.campaigns.find(p => p.id === c.id);
      const rate = prev ? Math.max(0, (c.sent - prev.sent) / dt) : 0;
      (hist[c.id] = hist[c.id] || []).push(rate); if (hist[c.id].length > 120) hist[c.id].shift();
    }
  }
  if (!last || farm.at_ms !== last.at_ms) last = farm;
  table('campaigns', farm.campaigns, ['id', 'status', 'total', 'sent', 'deferred', 'failed', 'bounced', 'complained', 'unsubscribed']);
  table('nodes', farm.nodes, ['name', 'role', 'state', r => r.load_percent + ' %', r => r.serves || '']);
  document.getElementById('bounce-queue').textContent = farm.bounce_queue_depth;
  for (const k of ['received', 'kept', 'to_bounce', 'refused']) document.getElementById('in-' + k).textContent = farm.inbound[k];
  document.getElementById('web-unsubscribes').textContent = web.unsubscribes;
  document.getElementById('web-resubscribes').textContent = web.resubscribes;
  document.getElementById('web-bad').textContent = web.bad_tokens.reduce((a, kv) => a + kv[1], 0);
  document.getElementById('updated').textContent = new Date(farm.at_ms || Date.now()).toLocaleTimeString();
  chart(farm.campaigns);
}
const es = new EventSource('/dashboard/events');
es.addEventListener('snapshot', e => { document.getElementById('live').textContent = 'live'; apply(JSON.parse(e.data)); });
es.onerror = () => { document.getElementById('live').textContent = 'reconnecting'; };
"##;

fn rows<T>(items: &[T], cells: impl Fn(&T) -> Vec<String>) -> String {
    let mut out = String::new();
    for item in items {
        out.push_str("<tr>");
        for c in cells(item) {
            out.push_str("<td>");
            out.push_str(&escape(&c));
            out.push_str("</td>");
        }
        out.push_str("</tr>");
    }
    out
}

/// The dashboard page, rendered with the current snapshot (so it is useful before the first
/// event arrives) and the script that keeps it live.
pub fn dashboard_page(snapshot: &DashboardSnapshot, web: &WebCountersSnapshot) -> String {
    let campaigns = rows(&snapshot.campaigns, |c| {
        vec![
            c.id.clone(),
            c.status.clone(),
            c.total.to_string(),
            c.sent.to_string(),
            c.deferred.to_string(),
            c.failed.to_string(),
            c.bounced.to_string(),
            c.complained.to_string(),
            c.unsubscribed.to_string(),
        ]
    });
    let nodes = rows(&snapshot.nodes, |n| {
        vec![
            n.name.clone(),
            n.role.clone(),
            n.state.clone(),
            format!("{} %", n.load_percent),
            n.serves.clone().unwrap_or_default(),
        ]
    });
    let bad: u64 = web.bad_tokens.iter().map(|(_, v)| v).sum();
    let i = &snapshot.inbound;
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>mailfarm dashboard</title><style>{DASHBOARD_STYLE}</style></head><body>\
         <header><h1>mailfarm farm</h1><span><span id=\"live\">connecting</span> · \
         updated <span id=\"updated\">-</span> · <form method=\"post\" \
         action=\"/dashboard/logout\" style=\"display:inline\"><button>Log out</button></form>\
         </span></header>\
         <section><h2>Campaigns</h2><table><thead><tr><th>Campaign</th><th>Status</th>\
         <th>Total</th><th>Sent</th><th>Deferred</th><th>Failed</th><th>Bounced</th>\
         <th>Complained</th><th>Unsubscribed</th></tr></thead><tbody id=\"campaigns\">\
         {campaigns}</tbody></table>\
         <h2>Sending rate (messages/s, last 2 minutes)</h2>\
         <svg id=\"chart\" width=\"600\" height=\"160\" viewBox=\"0 0 600 160\"></svg>\
         <h2>Nodes</h2><table><thead><tr><th>Node</th><th>Role</th><th>State</th>\
         <th>Load</th><th>Serves</th></tr></thead><tbody id=\"nodes\">{nodes}</tbody></table>\
         <h2>Queues and counters</h2><div class=\"cards\">\
         <div class=\"card\">Bounce queue<b id=\"bounce-queue\">{bq}</b></div>\
         <div class=\"card\">Inbound received<b id=\"in-received\">{ir}</b></div>\
         <div class=\"card\">Inbound kept<b id=\"in-kept\">{ik}</b></div>\
         <div class=\"card\">To bounce processing<b id=\"in-to_bounce\">{ib}</b></div>\
         <div class=\"card\">Inbound refused<b id=\"in-refused\">{irf}</b></div>\
         <div class=\"card\">Unsubscribes (this node)<b id=\"web-unsubscribes\">{wu}</b></div>\
         <div class=\"card\">Undos<b id=\"web-resubscribes\">{wr}</b></div>\
         <div class=\"card\">Bad tokens<b id=\"web-bad\">{bad}</b></div></div></section>\
         <script>{DASHBOARD_SCRIPT}</script></body></html>",
        bq = snapshot.bounce_queue_depth,
        ir = i.received,
        ik = i.kept,
        ib = i.to_bounce,
        irf = i.refused,
        wu = web.unsubscribes,
        wr = web.resubscribes,
    )
}
