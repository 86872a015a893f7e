//! `mailfarm sink`: a fault-injecting SMTP receiver for trying a farm against misbehaving
//! servers (temporary and permanent failures, throttling, slow replies, dropped connections).
//! It keeps no mail; it counts, and can record every accepted message's Message-ID.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use mailfarm_smurf::inbound::fault_sink::{FaultPlan, FaultSink, SinkStats};

/// Options of `mailfarm sink`.
#[derive(Args, Debug)]
pub struct SinkArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2525")]
    listen: SocketAddr,
    /// Fraction of recipients answered 451 4.3.0 (decided afresh on each attempt).
    #[arg(long, default_value_t = 0.0)]
    tempfail: f64,
    /// Fraction of recipients answered 550 5.1.1.
    #[arg(long, default_value_t = 0.0)]
    permfail: f64,
    /// Most messages accepted per second across all connections; beyond it: 421 and close.
    #[arg(long)]
    throttle: Option<f64>,
    /// Most messages accepted in any second, as a provider limits senders; beyond it:
    /// "454 Throttling failure: Maximum sending rate exceeded." at the end of DATA (Amazon
    /// SES's reply), the session staying open.
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// Most simultaneous connections; beyond it: "421 4.7.0 Error: too many connections" at
    /// the greeting.
    #[arg(long, value_name = "C")]
    max_connections: Option<usize>,
    /// Delay before each reply, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Fraction of DATA transfers cut before the final reply.
    #[arg(long, default_value_t = 0.0)]
    drop_mid_data: f64,
    /// Custom greeting line, code included (e.g. "554 no service here").
    #[arg(long)]
    greeting: Option<String>,
    /// Seed of the random decisions.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// On exit, write one line per accepted message: "MESSAGE-ID RECIPIENT".
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// On exit, write the accepted-messages-per-second histogram: "UNIX-SECOND COUNT".
    #[arg(long, value_name = "FILE")]
    per_second: Option<PathBuf>,
}

fn write_report(args: &SinkArgs, stats: &SinkStats) -> anyhow::Result<()> {
    if let Some(path) = &args.record {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for (id, rcpt) in stats.messages_snapshot() {
            writeln!(out, "{id} {rcpt}")?;
        }
        out.flush()?;
    }
    if let Some(path) = &args.per_second {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for (second, count) in stats.per_second_snapshot() {
            writeln!(out, "{second} {count}")?;
        }
        out.flush()?;
    }
    Ok(())
}

fn counters(stats: &SinkStats, rate_refused: u64) -> String {
    format!(
        "accepted {} tempfailed {} permfailed {} throttled {} rate-refused {rate_refused} dropped {} connections {} refused-connections {} peak-connections {}",
        stats.accepted.load(Ordering::Relaxed),
        stats.tempfailed.load(Ordering::Relaxed),
        stats.permfailed.load(Ordering::Relaxed),
        stats.throttled.load(Ordering::Relaxed),
        stats.dropped.load(Ordering::Relaxed),
        stats.connections.load(Ordering::Relaxed),
        stats.refused.load(Ordering::Relaxed),
        stats.peak_connections.load(Ordering::Relaxed),
    )
}

/// Runs the sink until SIGTERM or Ctrl-C, then writes the reports.
pub async fn run(
    args: SinkArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<ExitCode> {
    let plan = FaultPlan {
        tempfail_ratio: args.tempfail,
        permfail_ratio: args.permfail,
        throttle_rate: args.throttle,
        max_connections: args.max_connections,
        reply_delay: Duration::from_millis(args.delay_ms),
        drop_mid_data_ratio: args.drop_mid_data,
        greeting: args.greeting.clone(),
        seed: args.seed,
        provider_rate: args.rate,
    };
    let sink = FaultSink::bind(args.listen, plan)
        .await
        .with_context(|| format!("starting the sink on {}", args.listen))?;
    let stats = sink.stats();
    let rate = sink.provider_rate();
    let refused = move || {
        rate.as_ref()
            .map_or(0, |r| r.refused.load(Ordering::Relaxed))
    };
    println!("mailfarm sink listening on {}", sink.local_addr());
    let reporter = {
        let stats = stats.clone();
        let refused = refused.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!("sink: {}", counters(&stats, refused()));
            }
        })
    };
    sink.run(shutdown).await.context("sink failed")?;
    reporter.abort();
    write_report(&args, &stats)?;
    println!("sink stopped: {}", counters(&stats, refused()));
    Ok(ExitCode::SUCCESS)
}
