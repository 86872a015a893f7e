//! Commands that talk to a running coordinator over the operator link: launch (streaming the
//! CSV), status, list, watch, pause, resume, cancel, nodes, drain.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mailfarm_coordinator::{load_campaign_dir, OperatorClient};
use mailfarm_pki::{FarmFiles, Identity};
use mailfarm_protocol::throttle::SiteView;
use mailfarm_protocol::{CampaignCounters, OperatorRequest, OperatorResponse, Rate};

use crate::cli::Remote;
use crate::progress::{print_launched, print_summary, Follower};

/// Connects to the coordinator with the operator certificate.
pub async fn connect(remote: &Remote) -> anyhow::Result<OperatorClient> {
    let identity = Identity::load(&FarmFiles::in_dir(&remote.farm, &remote.operator))
        .with_context(|| {
            format!(
                "loading the operator certificate {:?} from {} (use --farm)",
                remote.operator,
                remote.farm.display()
            )
        })?;
    Ok(OperatorClient::connect(remote.coordinator, &identity, &remote.operator).await?)
}

/// Parses `--start-at` (UTC `YYYY-MM-DDTHH:MM:SSZ`) or `--start-in` (duration) into ms since
/// the epoch.
pub fn start_time(start_at: Option<&str>, start_in: Option<&str>) -> anyhow::Result<Option<u64>> {
    if let Some(delay) = start_in {
        let delay = mailfarm_coordinator::config::parse_duration(delay)
            .map_err(|e| anyhow::anyhow!("--start-in {e}"))?;
        return Ok(Some(
            mailfarm_coordinator::farm::now_ms() + delay.as_millis() as u64,
        ));
    }
    let Some(text) = start_at else {
        return Ok(None);
    };
    parse_utc(text)
        .map(Some)
        .ok_or_else(|| anyhow::anyhow!("--start-at {text:?}: write UTC like 2026-11-27T08:00:00Z"))
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` into ms since the epoch.
fn parse_utc(text: &str) -> Option<u64> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000).ok()
}

/// Sends one request and prints the answer: as JSON with `json` (the answer's data, or
/// `{"error": ...}` with a failing exit status), else for a person.
pub async fn simple(
    remote: &Remote,
    request: OperatorRequest,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut client = connect(remote).await?;
    let response = client.request(&request).await?;
    client.close().await;
    if json {
        return crate::farm_cmd::print_json(&response);
    }
    match response {
        OperatorResponse::Status(list) => {
            if list.is_empty() {
                println!("no campaigns");
            }
            for c in &list {
                print_status_line(c);
            }
        }
        OperatorResponse::Nodes(nodes) => crate::farm_cmd::print_nodes(&nodes),
        OperatorResponse::Done { message } => println!("{message}"),
        OperatorResponse::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from the coordinator: {other:?}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Launches a campaign folder on a running farm and (unless detached) follows it; with `json`,
/// what it prints on stdout is JSON events (see [`crate::progress`]).
pub async fn launch(
    dir: &Path,
    detach: bool,
    remote: &Remote,
    start_at_ms: Option<u64>,
    rate: Option<Rate>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (mut submission, csv_path) = load_campaign_dir(dir)?;
    submission.start_at_ms = start_at_ms;
    submission.rate_cap = rate;
    let id = submission.id.clone();
    let csv = tokio::fs::File::open(&csv_path)
        .await
        .with_context(|| format!("opening {}", csv_path.display()))?;
    let mut client = connect(remote).await?;
    let counters = match client.launch(submission, csv).await? {
        OperatorResponse::Launched {
            counters,
            rejects,
            rejects_file,
        } => {
            print_launched(&counters, &rejects, rejects_file.as_deref(), json, true)?;
            counters
        }
        OperatorResponse::Error { message } => bail!("launch refused: {message}"),
        other => bail!("unexpected answer from the coordinator: {other:?}"),
    };
    if detach {
        client.close().await;
        return Ok(ExitCode::SUCCESS);
    }
    let mut follower = Follower::new(counters.total, json);
    let last = loop {
        let counters = fetch(&mut client, &id).await?;
        follower.update(&counters)?;
        if counters.finished {
            break counters;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    follower.finish();
    client.close().await;
    print_summary(&last, None, json)?;
    Ok(ExitCode::SUCCESS)
}

async fn fetch(client: &mut OperatorClient, id: &str) -> anyhow::Result<CampaignCounters> {
    let response = client
        .request(&OperatorRequest::Status {
            campaign_id: id.to_owned(),
        })
        .await?;
    match response {
        OperatorResponse::Status(mut list) => list
            .pop()
            .ok_or_else(|| anyhow::anyhow!("campaign {id} vanished from the coordinator")),
        OperatorResponse::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from the coordinator: {other:?}"),
    }
}

/// A rate in thousandths per second, for people.
fn per_second(milli: Option<u64>) -> String {
    milli.map_or_else(
        || "unlimited".to_owned(),
        |m| format!("{:.1}/s", mailfarm_protocol::throttle::from_milli(m)),
    )
}

/// `farm sites`: the sites that throttled the farm, farm-wide.
pub async fn sites(remote: &Remote, json: bool) -> anyhow::Result<ExitCode> {
    let mut client = connect(remote).await?;
    let response = client.request(&OperatorRequest::Sites).await?;
    client.close().await;
    let sites = match response {
        OperatorResponse::Sites(sites) => sites,
        OperatorResponse::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from the coordinator: {other:?}"),
    };
    if sites.is_empty() && !json {
        println!("no site throttled the farm");
    }
    for s in sites {
        if json {
            println!("{}", serde_json::to_string(&s)?);
            continue;
        }
        let learnt = s
            .learnt_milli
            .map_or_else(|| "-".to_owned(), |m| per_second(Some(m)));
        let learnt_connections = s
            .learnt_connections
            .map_or_else(|| "-".to_owned(), |c| c.to_string());
        println!(
            "{}: rate {} learnt {}  connections {}/{} learnt {}  smurfs {}  throttled {}  last: {}",
            s.site,
            per_second(s.configured_milli),
            learnt,
            s.connections,
            s.configured_connections,
            learnt_connections,
            s.smurfs,
            s.throttled,
            s.last_reply.as_deref().unwrap_or("-"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `campaign watch`: one line per second with counters and rates, until the campaign ends.
/// With `json`, each line is the campaign's counters (as `campaign status --json` prints
/// them) with the rates, the bog and the throttled sites added.
pub async fn watch(id: &str, remote: &Remote, json: bool) -> anyhow::Result<ExitCode> {
    let mut client = connect(remote).await?;
    let terminal = !json && std::io::stdout().is_terminal();
    let mut previous: Option<(Instant, CampaignCounters)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let c = fetch(&mut client, id).await?;
        let nodes = match client.request(&OperatorRequest::Nodes).await? {
            OperatorResponse::Nodes(nodes) => nodes,
            _ => Vec::new(),
        };
        let bog: u64 = nodes.iter().map(|n| u64::from(n.load.bog_queued)).sum();
        let throttled: Vec<SiteView> = match client.request(&OperatorRequest::Sites).await? {
            OperatorResponse::Sites(sites) => sites
                .into_iter()
                .filter(|s| s.learnt_milli.is_some() || s.learnt_connections.is_some())
                .collect(),
            _ => Vec::new(),
        };
        let (rate, attempt_rate) = match &previous {
            Some((at, p)) => {
                let secs = at.elapsed().as_secs_f64().max(0.001);
                (
                    (c.delivered.saturating_sub(p.delivered)) as f64 / secs,
                    (c.attempts.saturating_sub(p.attempts)) as f64 / secs,
                )
            }
            None => (0.0, 0.0),
        };
        if json {
            println!("{}", watch_json(&c, rate, attempt_rate, bog, &throttled)?);
        } else {
            let sites: String = throttled
                .iter()
                .map(|s| {
                    format!(
                        "  [{} learnt {} of {}, {} conns]",
                        s.site,
                        per_second(s.learnt_milli),
                        per_second(s.configured_milli),
                        s.connections
                    )
                })
                .collect();
            let line = format!(
                "{} {:<9} queued {:>8}  in-flight {:>6}  delivered {:>8}  deferred {:>6}  failed {:>6}  bog {:>5}  {:>7.0} delivered/s  {:>7.0} attempts/s",
                c.id, c.state.as_str(), c.queued, c.in_flight, c.delivered, c.deferred, c.failed, bog, rate, attempt_rate
            ) + &sites;
            if terminal {
                print!("\r{line}\x1b[K");
                use std::io::Write;
                let _ = std::io::stdout().flush();
            } else {
                println!("{line}");
            }
        }
        if c.finished {
            if terminal {
                println!();
            }
            break;
        }
        previous = Some((Instant::now(), c));
    }
    client.close().await;
    Ok(ExitCode::SUCCESS)
}

/// One `campaign watch --json` line: the counters, as `campaign status --json` prints them,
/// plus `delivered_per_second` and `attempts_per_second` (since the previous line; 0 on the
/// first), `bog_queued` (messages waiting in bogged sites, farm-wide) and `throttled_sites`
/// (the sites with a learnt rate or connection count, as `farm sites --json` shows them).
fn watch_json(
    counters: &CampaignCounters,
    delivered_per_second: f64,
    attempts_per_second: f64,
    bog_queued: u64,
    throttled: &[SiteView],
) -> anyhow::Result<serde_json::Value> {
    let round = |x: f64| (x * 10.0).round() / 10.0;
    crate::progress::counters_json(
        counters,
        serde_json::json!({
            "delivered_per_second": round(delivered_per_second),
            "attempts_per_second": round(attempts_per_second),
            "bog_queued": bog_queued,
            "throttled_sites": throttled,
        }),
    )
}

fn print_status_line(c: &CampaignCounters) {
    println!(
        "{id}: {state}  total {total}  queued {queued}  in-flight {in_flight}  delivered {delivered}  \
         deferred {deferred}  failed {failed}  suppressed {suppressed}  skipped {skipped}  \
         rejected-rows {rejected}  attempts {attempts}  elapsed {secs:.1}s  \
         template-shipments {shipments}  wire-bytes {wire}  rendered-bytes {rendered}  \
         bounced-hard {hard}  bounced-soft {soft}  complaints {complaints}  \
         unsubscribed {unsubscribed}{reasons}{since}",
        id = c.id,
        state = c.state.as_str(),
        total = c.total,
        queued = c.queued,
        in_flight = c.in_flight,
        delivered = c.delivered,
        deferred = c.deferred,
        failed = c.failed,
        suppressed = c.suppressed,
        skipped = c.skipped,
        rejected = c.rejected_rows,
        attempts = c.attempts,
        secs = c.elapsed_ms as f64 / 1000.0,
        shipments = c.template_shipments,
        wire = c.wire_bytes + c.template_bytes,
        rendered = c.rendered_bytes,
        hard = c.bounced_hard,
        soft = c.bounced_soft,
        complaints = c.complaints,
        unsubscribed = c.unsubscribed,
        since = if c.traffic_since_ms == 0 {
            String::new()
        } else {
            let ago = mailfarm_coordinator::farm::now_ms().saturating_sub(c.traffic_since_ms);
            format!(
                "  (shipments and bytes since the coordinator restarted {:.0}s ago)",
                ago as f64 / 1000.0
            )
        },
        reasons = if c.bounce_reasons.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = c
                .bounce_reasons
                .iter()
                .map(|(reason, n)| format!("{reason}={n}"))
                .collect();
            format!("  bounce-reasons {}", list.join(","))
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_parse() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_utc("2000-03-01T00:00:01Z"), Some(951_868_801_000));
        assert_eq!(parse_utc("2026-11-27T08:00:00"), None);
        assert_eq!(parse_utc("2026-13-27T08:00:00Z"), None);
    }
}
