//! Prometheus `/metrics` endpoint of the coordinator: campaign counters and farm figures in
//! the text exposition format, so any Prometheus-compatible scraper can watch the farm.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;

use crate::farm::Farm;

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Counts by reason as `reason="..."` labels.
fn by_reason(counts: &[(String, u64)]) -> Vec<(String, u64)> {
    counts
        .iter()
        .map(|(reason, n)| (format!("reason=\"{}\"", escape(reason)), *n))
        .collect()
}

/// Appends one metric family: its HELP and TYPE lines, then one sample per `(labels, value)`
/// (labels already formatted, e.g. `campaign="c1"`; empty for none).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// Renders the farm's figures in the Prometheus text format.
pub fn render(farm: &Farm) -> String {
    let mut out = String::new();
    let campaigns = farm.all_counters();
    let per_campaign = |value: fn(&mailfarm_protocol::CampaignCounters) -> u64| {
        campaigns
            .iter()
            .map(|c| (format!("campaign=\"{}\"", escape(&c.id)), value(c)))
            .collect::<Vec<_>>()
    };
    let mut recipients = Vec::new();
    for c in &campaigns {
        let id = escape(&c.id);
        for (state, value) in [
            ("queued", c.queued),
            ("in_flight", c.in_flight),
            ("delivered", c.delivered),
            ("deferred", c.deferred),
            ("failed", c.failed),
            ("suppressed", c.suppressed),
            ("skipped", c.skipped),
            ("rejected", c.rejected_rows),
        ] {
            recipients.push((format!("campaign=\"{id}\",state=\"{state}\""), value));
        }
    }
    family(
        &mut out,
        "mailfarm_campaign_recipients",
        "gauge",
        "Recipients of a campaign by state.",
        &recipients,
    );
    family(
        &mut out,
        "mailfarm_campaign_attempts_total",
        "counter",
        "Delivery attempts of a campaign.",
        &per_campaign(|c| c.attempts),
    );
    family(
        &mut out,
        "mailfarm_campaign_quic_bytes_total",
        "counter",
        "QUIC payload bytes of a campaign (template and data).",
        &per_campaign(|c| c.wire_bytes + c.template_bytes),
    );
    let mut bounces = Vec::new();
    for c in &campaigns {
        let id = escape(&c.id);
        for (kind, value) in [
            ("hard", c.bounced_hard),
            ("soft", c.bounced_soft),
            ("complaint", c.complaints),
            ("unsubscribe", c.unsubscribed),
        ] {
            bounces.push((format!("campaign=\"{id}\",kind=\"{kind}\""), value));
        }
    }
    family(
        &mut out,
        "mailfarm_campaign_feedback_total",
        "counter",
        "Bounces (hard, soft), complaints and unsubscribes of a campaign.",
        &bounces,
    );
    let reasons: Vec<(String, u64)> = campaigns
        .iter()
        .flat_map(|c| {
            c.bounce_reasons.iter().map(move |(reason, n)| {
                (
                    format!(
                        "campaign=\"{}\",reason=\"{}\"",
                        escape(&c.id),
                        escape(reason)
                    ),
                    *n,
                )
            })
        })
        .collect();
    family(
        &mut out,
        "mailfarm_campaign_bounces_by_reason_total",
        "counter",
        "Bounces of a campaign by reason (Sisimai's vocabulary).",
        &reasons,
    );
    family(
        &mut out,
        "mailfarm_bounce_queue",
        "gauge",
        "Returned messages waiting for a bounce node.",
        &[(String::new(), farm.bounce_depth())],
    );
    let nodes = farm.nodes();
    let per_node = |value: fn(&mailfarm_protocol::NodeInfo) -> u64| {
        nodes
            .iter()
            .map(|n| (format!("node=\"{}\"", escape(&n.node)), value(n)))
            .collect::<Vec<_>>()
    };
    family(
        &mut out,
        "mailfarm_smurfs_connected",
        "gauge",
        "Smurfs connected to the coordinator.",
        &[(
            String::new(),
            nodes.iter().filter(|n| n.connected).count() as u64,
        )],
    );
    let roles: Vec<(String, u64)> = nodes
        .iter()
        .map(|n| {
            (
                format!(
                    "node=\"{}\",role=\"{}\",state=\"{}\"",
                    escape(&n.node),
                    n.role.as_str(),
                    if n.connected {
                        n.state.as_str()
                    } else {
                        "offline"
                    }
                ),
                1,
            )
        })
        .collect();
    family(
        &mut out,
        "mailfarm_node_role",
        "gauge",
        "The role and state each known node holds (always 1).",
        &roles,
    );
    let inbound = farm.inbound_totals();
    family(
        &mut out,
        "mailfarm_inbound_messages_total",
        "counter",
        "Messages `in` nodes received and stored, by what they are.",
        &[
            ("kind=\"local\"".to_owned(), inbound.kept),
            ("kind=\"bounce\"".to_owned(), inbound.to_bounce),
            ("kind=\"forward\"".to_owned(), inbound.forwarded),
        ],
    );
    family(
        &mut out,
        "mailfarm_inbound_sessions_total",
        "counter",
        "SMTP sessions `in` nodes accepted.",
        &[(String::new(), inbound.sessions)],
    );
    let refused = by_reason(&inbound.refused);
    family(
        &mut out,
        "mailfarm_inbound_refused_total",
        "counter",
        "Refusals by `in` nodes, by reason.",
        &refused,
    );
    family(
        &mut out,
        "mailfarm_forwarded_total",
        "counter",
        "Forwarded messages that reached their end on `in` nodes, by outcome.",
        &[
            (
                "outcome=\"delivered\"".to_owned(),
                inbound.forward_delivered,
            ),
            ("outcome=\"failed\"".to_owned(), inbound.forward_failed),
        ],
    );
    family(
        &mut out,
        "mailfarm_forward_notices_sent_total",
        "counter",
        "Change-of-address notices sent.",
        &[(String::new(), inbound.notices_sent)],
    );
    let suppressed = by_reason(&inbound.notices_suppressed);
    family(
        &mut out,
        "mailfarm_forward_notices_suppressed_total",
        "counter",
        "Change-of-address notices not sent, by reason.",
        &suppressed,
    );
    family(
        &mut out,
        "mailfarm_smurf_in_flight",
        "gauge",
        "Recipients in flight on a smurf.",
        &per_node(|n| n.in_flight),
    );
    family(
        &mut out,
        "mailfarm_smurf_bog_queued",
        "gauge",
        "Messages a smurf holds in its bog lane.",
        &per_node(|n| u64::from(n.load.bog_queued)),
    );
    sites(&mut out, farm);
    out
}

/// Throttling sites, farm-wide (issue 11). Rates are in thousandths of a message per second
/// (the families take whole numbers); a site without a learnt value has no learnt sample.
fn sites(out: &mut String, farm: &Farm) {
    let sites = farm.throttle().sites();
    let label = |s: &mailfarm_protocol::throttle::SiteView| format!("site=\"{}\"", escape(&s.site));
    let samples = |value: fn(&mailfarm_protocol::throttle::SiteView) -> Option<u64>| {
        sites
            .iter()
            .filter_map(|s| value(s).map(|v| (label(s), v)))
            .collect::<Vec<_>>()
    };
    family(
        out,
        "mailfarm_site_configured_rate_millis",
        "gauge",
        "Configured message rate of a throttling site, farm-wide, in thousandths per second.",
        &samples(|s| s.configured_milli),
    );
    family(
        out,
        "mailfarm_site_learnt_rate_millis",
        "gauge",
        "Message rate learnt from a site's throttling replies, farm-wide, thousandths per second.",
        &samples(|s| s.learnt_milli),
    );
    family(
        out,
        "mailfarm_site_configured_connections",
        "gauge",
        "Configured connection cap of a throttling site, farm-wide.",
        &samples(|s| Some(u64::from(s.configured_connections))),
    );
    family(
        out,
        "mailfarm_site_learnt_connections",
        "gauge",
        "Connection count learnt from a site's \"too many connections\" replies, farm-wide.",
        &samples(|s| s.learnt_connections.map(u64::from)),
    );
    family(
        out,
        "mailfarm_site_connections",
        "gauge",
        "Sessions open to a throttling site, farm-wide.",
        &samples(|s| Some(u64::from(s.connections))),
    );
    family(
        out,
        "mailfarm_site_throttled_total",
        "counter",
        "Throttling replies from a site, farm-wide.",
        &samples(|s| Some(s.throttled)),
    );
    let last: Vec<(String, u64)> = sites
        .iter()
        .filter_map(|s| {
            let reply = s.last_reply.as_deref()?;
            Some((format!("{},reply=\"{}\"", label(s), escape(reply)), 1))
        })
        .collect();
    family(
        out,
        "mailfarm_site_last_throttle_info",
        "gauge",
        "The last throttling reply of a site (in the reply label).",
        &last,
    );
}

/// Serves `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    farm: Arc<dyn Fn() -> String + Send + Sync>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let farm = farm.clone();
            async move { ([("content-type", "text/plain; version=0.0.4")], farm()) }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
