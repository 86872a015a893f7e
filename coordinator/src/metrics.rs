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

/// Renders the farm's figures in the Prometheus text format.
pub fn render(farm: &Farm) -> String {
    let mut out = String::new();
    let campaigns = farm.all_counters();
    let _ = writeln!(
        out,
        "# HELP mailfarm_campaign_recipients Recipients of a campaign by state.\n\
         # TYPE mailfarm_campaign_recipients gauge"
    );
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
            let _ = writeln!(
                out,
                "mailfarm_campaign_recipients{{campaign=\"{id}\",state=\"{state}\"}} {value}"
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP mailfarm_campaign_attempts_total Delivery attempts of a campaign.\n\
         # TYPE mailfarm_campaign_attempts_total counter"
    );
    for c in &campaigns {
        let _ = writeln!(
            out,
            "mailfarm_campaign_attempts_total{{campaign=\"{}\"}} {}",
            escape(&c.id),
            c.attempts
        );
    }
    let _ = writeln!(
        out,
        "# HELP mailfarm_campaign_quic_bytes_total QUIC payload bytes of a campaign (template and data).\n\
         # TYPE mailfarm_campaign_quic_bytes_total counter"
    );
    for c in &campaigns {
        let _ = writeln!(
            out,
            "mailfarm_campaign_quic_bytes_total{{campaign=\"{}\"}} {}",
            escape(&c.id),
            c.wire_bytes + c.template_bytes
        );
    }
    let nodes = farm.nodes();
    let _ = writeln!(
        out,
        "# HELP mailfarm_smurfs_connected Smurfs connected to the coordinator.\n\
         # TYPE mailfarm_smurfs_connected gauge\nmailfarm_smurfs_connected {}",
        nodes.len()
    );
    let _ = writeln!(
        out,
        "# HELP mailfarm_smurf_in_flight Recipients in flight on a smurf.\n\
         # TYPE mailfarm_smurf_in_flight gauge"
    );
    for n in &nodes {
        let _ = writeln!(
            out,
            "mailfarm_smurf_in_flight{{node=\"{}\"}} {}",
            escape(&n.node),
            n.in_flight
        );
    }
    let _ = writeln!(
        out,
        "# HELP mailfarm_smurf_bog_queued Messages a smurf holds in its bog lane.\n\
         # TYPE mailfarm_smurf_bog_queued gauge"
    );
    for n in &nodes {
        let _ = writeln!(
            out,
            "mailfarm_smurf_bog_queued{{node=\"{}\"}} {}",
            escape(&n.node),
            n.load.bog_queued
        );
    }
    out
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
