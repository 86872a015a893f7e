//! The farm-wide operator views: `farm nodes` (as a table or JSON), `farm watch` (the whole farm
//! second by second) and the JSON form of every answer, for scripts and tests.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use mailfarm_protocol::{FarmSnapshot, NodeInfo, OperatorRequest, OperatorResponse};

use crate::cli::Remote;

/// Prints an answer as JSON: the data itself (campaign counters, nodes, the farm snapshot), or
/// `{"ok": true, "message": ...}`; an error prints `{"error": ...}` and fails.
pub fn print_json(response: &OperatorResponse) -> anyhow::Result<ExitCode> {
    let value = match response {
        OperatorResponse::Status(list) => serde_json::to_value(list)?,
        OperatorResponse::Nodes(nodes) => serde_json::to_value(nodes)?,
        OperatorResponse::Farm(snapshot) => serde_json::to_value(snapshot)?,
        OperatorResponse::Sites(sites) => serde_json::to_value(sites)?,
        OperatorResponse::Launched { counters, .. } => serde_json::to_value(counters)?,
        OperatorResponse::Done { message } => serde_json::json!({ "ok": true, "message": message }),
        OperatorResponse::ForwardRules { version, rules } => {
            serde_json::json!({ "version": version, "rules": rules })
        }
        OperatorResponse::ForwardRefused { problems } => {
            println!(
                "{}",
                serde_json::json!({ "error": "nothing applied", "problems": problems })
            );
            return Ok(ExitCode::FAILURE);
        }
        OperatorResponse::Error { message } => {
            println!("{}", serde_json::json!({ "error": message }));
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("{value}");
    Ok(ExitCode::SUCCESS)
}

/// Prints the nodes as a table.
pub fn print_nodes(nodes: &[NodeInfo]) {
    if nodes.is_empty() {
        println!("no smurfs known to this coordinator");
        return;
    }
    println!(
        "{:<14} {:<7} {:<9} {:<10} {:>9} {:>7} {:>5} {:>9}  serving",
        "node", "role", "state", "version", "in-flight", "queued", "cpu%", "results"
    );
    for n in nodes {
        let state = if n.connected {
            n.state.as_str()
        } else {
            "offline"
        };
        let serving = match (&n.serving, &n.problem) {
            (_, Some(problem)) => format!("problem: {problem}"),
            (Some(addr), None) => addr.clone(),
            (None, None) => "-".into(),
        };
        println!(
            "{:<14} {:<7} {:<9} {:<10} {:>9} {:>7} {:>5} {:>9}  {serving}",
            n.node,
            n.role.as_str(),
            state,
            n.version,
            format!("{}/{}", n.in_flight, n.window),
            n.load.queued,
            n.load.cpu_percent,
            n.results
        );
    }
}

/// `farm watch`: the whole farm every second, until interrupted or `count` updates.
pub async fn watch(remote: &Remote, json: bool, count: Option<u64>) -> anyhow::Result<ExitCode> {
    let mut client = crate::remote::connect(remote).await?;
    let terminal = std::io::stdout().is_terminal() && !json;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut previous: Option<FarmSnapshot> = None;
    let mut shown = 0u64;
    while count.is_none_or(|c| shown < c) {
        tick.tick().await;
        let snapshot = match client.request(&OperatorRequest::Farm).await? {
            OperatorResponse::Farm(snapshot) => *snapshot,
            OperatorResponse::Error { message } => bail!("{message}"),
            other => bail!("unexpected answer from the coordinator: {other:?}"),
        };
        if json {
            println!("{}", serde_json::to_string(&snapshot)?);
        } else {
            if terminal {
                print!("\x1b[H\x1b[2J");
            }
            print_snapshot(&snapshot, previous.as_ref());
            let _ = std::io::stdout().flush();
        }
        previous = Some(snapshot);
        shown += 1;
    }
    client.close().await;
    Ok(ExitCode::SUCCESS)
}

/// Counts by reason as `reason n, reason n`.
fn by_reason(counts: &[(String, u64)]) -> String {
    let parts: Vec<String> = counts
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    parts.join(", ")
}

fn print_snapshot(now: &FarmSnapshot, before: Option<&FarmSnapshot>) {
    let secs = before
        .map(|b| (now.time_ms.saturating_sub(b.time_ms) as f64 / 1000.0).max(0.001))
        .unwrap_or(1.0);
    let per_second = |n: u64, b: Option<u64>| b.map_or(0.0, |b| n.saturating_sub(b) as f64 / secs);
    let inbound = &now.inbound;
    let received_rate = per_second(inbound.received, before.map(|b| b.inbound.received));
    let refused = by_reason(&inbound.refused);
    println!(
        "inbound: received {} ({received_rate:.0}/s)  kept {}  to-bounce {}  forwarded {}  \
         refused {} [{}]",
        inbound.received,
        inbound.kept,
        inbound.to_bounce,
        inbound.forwarded,
        inbound.refused_total(),
        refused
    );
    let suppressed = by_reason(&inbound.notices_suppressed);
    println!(
        "forwarding: relayed {} ({:.0}/s)  failed {}  notices sent {}  suppressed {} [{}]",
        inbound.forward_delivered,
        per_second(
            inbound.forward_delivered,
            before.map(|b| b.inbound.forward_delivered)
        ),
        inbound.forward_failed,
        inbound.notices_sent,
        inbound.notices_suppressed_total(),
        suppressed
    );
    let delivered: u64 = now.campaigns.iter().map(|c| c.delivered).sum();
    let before_delivered = before.map(|b| b.campaigns.iter().map(|c| c.delivered).sum());
    let sending = now.campaigns.iter().filter(|c| !c.finished).count();
    let feedback = |f: fn(&mailfarm_protocol::CampaignCounters) -> u64| {
        now.campaigns.iter().map(f).sum::<u64>()
    };
    println!(
        "campaigns: {} ({sending} not finished)  delivered {delivered} ({:.0}/s)  queued {}  \
         in-flight {}  deferred {}  failed {}  bounced {}  complaints {}  unsubscribed {}",
        now.campaigns.len(),
        per_second(delivered, before_delivered),
        now.campaigns.iter().map(|c| c.queued).sum::<u64>(),
        now.campaigns.iter().map(|c| c.in_flight).sum::<u64>(),
        now.campaigns.iter().map(|c| c.deferred).sum::<u64>(),
        now.campaigns.iter().map(|c| c.failed).sum::<u64>(),
        feedback(|c| c.bounced_hard + c.bounced_soft),
        feedback(|c| c.complaints),
        feedback(|c| c.unsubscribed),
    );
    println!(
        "bounce queue: {} returned messages waiting",
        now.bounce_queue
    );
    print_nodes(&now.nodes);
    println!();
}
