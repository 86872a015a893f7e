//! `mailfarm-bench`: measures mailfarm end to end against a real SMTP receiver and puts the
//! numbers next to Postfix's own SMTP blaster on the same receiver; measures how fast a launch
//! ingests a large recipient list; what durable coordinator state costs in throughput; and
//! what MX routing over real DNS with farm-wide shaping costs next to relay mode; how the
//! farm learns a throttling relay's rate; how fast the bounce analysis reads real bounces; how
//! many one-click unsubscribes per second the web role takes durably; and how fast the inbound
//! MX takes mail durably next to Postfix's smtpd; and all the peers side by side in one run
//! (`compare`).

#![warn(clippy::unwrap_used)]

mod bounce;
mod compare;
mod csvgen;
mod durability;
mod farm_run;
mod forward;
mod inbound;
mod ingest;
mod mx;
mod mx_check;
mod mx_report;
mod mx_sinks;
mod mx_text;
mod mx_zone;
mod netns;
mod operator;
mod postfix;
mod procs;
mod report;
mod sink;
mod source;
mod sys;
mod throttle;
mod throttle_svg;
mod throughput;
mod unsubscribe;
mod workload;

use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;

/// Benchmarks for mailfarm.
#[derive(Parser, Debug)]
#[command(name = "mailfarm-bench", version, about)]
struct Cli {
    /// What to measure.
    #[command(subcommand)]
    command: Command,
}

/// Benchmarks.
#[derive(Subcommand, Debug)]
enum Command {
    /// Throughput of mailfarm against Postfix smtp-sink, next to Postfix smtp-source.
    #[command(long_about = THROUGHPUT_HELP)]
    Throughput(throughput::Throughput),
    /// Streaming CSV ingest into the coordinator store, durable and not.
    #[command(long_about = INGEST_HELP)]
    Ingest(ingest::Ingest),
    /// The throughput campaign with a durable state folder and with the in-memory store.
    #[command(long_about = DURABILITY_HELP)]
    Durability(durability::Durability),
    /// MX routing over real DNS with farm-wide shaping, next to relay mode.
    #[command(long_about = MX_HELP)]
    Mx(mx::Mx),
    /// Bounce analysis (parse and classify) over a corpus of real bounces, one thread.
    #[command(long_about = BOUNCE_HELP)]
    Bounce(bounce::Bounce),
    /// One-click unsubscribe POSTs per second into the web role's durable journal, and none
    /// lost to kill -9.
    #[command(long_about = UNSUBSCRIBE_HELP)]
    Unsubscribe(unsubscribe::Unsubscribe),
    /// The web role as a child process for `unsubscribe` (internal).
    #[command(hide = true)]
    UnsubscribeServer(unsubscribe::UnsubscribeServer),
    /// The farm learning a throttling relay's rate and connection count (issue 11).
    #[command(long_about = THROTTLE_HELP)]
    Throttle(throttle::Throttle),
    /// The inbound MX (the `in` role) taking smtp-source's load durably, next to Postfix smtpd.
    #[command(long_about = INBOUND_HELP)]
    Inbound(inbound::Inbound),
    /// The peers side by side in one run: raw SMTP ceiling, a Postfix pipeline, mailfarm
    /// (separate processes and embedded, DKIM off and on) against one smtp-sink (issue 12).
    #[command(long_about = COMPARE_HELP)]
    Compare(compare::Compare),
    /// The farm across network namespaces: coordinator, 1..4 smurfs and the sink on their own
    /// "hosts"; coordinator CPU per recipient and smurfs per coordinator.
    #[command(long_about = netns::HELP)]
    Netns(netns::Netns),
    /// Forwarded messages per second on one `in` node, next to Postfix's virtual_alias_maps.
    Forward(forward::Forward),
}

/// Long help of `compare`.
const COMPARE_HELP: &str = "\
The peers side by side in one run, against one smtp-sink, with messages of the same size \
(default: the ~40 KB example newsletter, every message personalised):
1. the raw ceiling: smtp-source -> smtp-sink;
2. the traditional pipeline: the same personalised messages (rendered before the clock with \
the templates crate) injected over SMTP into a private Postfix instance relaying to the sink, \
timed until the sink has every message; CPU summed over all Postfix processes;
2b. optional: the same messages injected into a private Haraka (npm; `haraka` on PATH or \
--haraka PATH) relaying to the sink through its outbound queue, one worker per CPU; not run, \
and said so, when Haraka is not installed (npm install -g Haraka@3);
3. mailfarm as `mailfarm coordinator` + `mailfarm smurf` processes with durable state (needs \
the mailfarm binary: cargo build --release -p mailfarm), and the embedded farm;
4. the processes again with DKIM rsa-sha256 (2048 bits) and ed25519-sha256, plus a \
micro-measurement of the signer (body hash vs signature).
Prints msgs/s, msgs/hour, CPU seconds per 1,000 messages (all of a side's processes), peak RSS \
per process, latency percentiles (Postfix and Haraka: from their logs, to the sink's 250; mailfarm: \
the smurf worker taking the job to 250), the ratios and the issue's targets; --json and --svg \
write the report and a rate-over-time plot. --big-recipients N adds a separate-process run of \
N recipients (smurf memory at scale). Needs root for Postfix. Exits non-zero when a side did \
not deliver every message.";

/// Long help of `bounce`.
const BOUNCE_HELP: &str = "\
Bounce analysis (parse and classify) over a corpus of real bounces, one thread.

Reads every file of the corpus (default: the Sisimai corpus in ../shared/corpora/sisimai; mbox \
files are split) into memory, runs mailfarm_bounce::analyse once over all of it untimed, then \
--rounds times timed on this thread alone. Reports messages/s, microseconds per message, MB/s \
and the CPU time, and a problem when the rate is below --target.";

/// Long help of `unsubscribe`.
const UNSUBSCRIBE_HELP: &str = "\
One-click unsubscribe POSTs per second into the web role's durable journal, and none lost to \
kill -9.

Starts the web role (plain HTTP on 127.0.0.1, durable journal in a fresh folder under --tmp) \
as a child process, and sends --requests RFC 8058 one-click POSTs (body \
List-Unsubscribe=One-Click), one per distinct recipient with a real signed token, over \
--connections keep-alive connections. Every 200 comes after the unsubscribe was written and \
fsynced (group commit). Reports POSTs/s, latency percentiles and the server's CPU time. The \
server is then killed with SIGKILL and its journal reopened: every recipient answered 200 must \
be there. A second burst is interrupted by SIGKILL once 40% were answered, with requests in \
flight, and checked the same way. Exits non-zero when a 200 was lost.";

/// Long help of `throttle`.
const THROTTLE_HELP: &str = "\
The farm learning a throttling relay's rate and connection count (issue 11).

For each R of --rates: an in-process fault sink accepts R messages in any second and answers \
Amazon SES's 454 Throttling failure beyond (the session stays open); an embedded farm of \
--smurfs smurfs (--connections sessions each) sends it a campaign of 30 x R recipients (the \
example newsletter). Targets: every message accepted exactly once (distinct Message-IDs), \
finished within 1.25 x N / R + 5 s, at most 15 % of DATA attempts refused. Then R = 50 with \
the sink limited to --max-connections sessions (target: at most 5 % of connection attempts \
refused after the first 10 s), and a run whose limit is raised from --raise-from to \
--raise-to after --raise-after seconds (target: the farm-wide learnt rate within 20 % of the \
new limit in at most 30 s). --svg writes the rate-against-time plot. Exits non-zero when a \
target is missed.";

/// Long help of `inbound`.
const INBOUND_HELP: &str = "\
The inbound MX (the `in` role) taking smtp-source's load durably, next to Postfix smtpd.

1. Starts the inbound MX in this process on a free 127.0.0.1 port, its mail store in a fresh \
folder under --dir (default /var/tmp: on disk; every message is synced, file and folder, \
before its 250), and runs Postfix's smtp-source against it: --messages messages of \
--message-bytes bytes over --sessions parallel reused sessions.
2. Starts a private Postfix instance whose smtpd accepts the same load from loopback into its \
queue (each message put on hold, so Postfix writes and syncs the queue file but never \
delivers it) and runs the same smtp-source against it.

Reports messages per second and the CPU of each receiver (this process for the MX; the \
Postfix master and all its descendants) and of smtp-source. Needs root (Postfix). Exits \
non-zero unless both sides stored every message.";

/// Long help of `throughput`.
const THROUGHPUT_HELP: &str = "\
Throughput of mailfarm against Postfix smtp-sink, next to Postfix smtp-source.

1. Starts Postfix's smtp-sink on a free 127.0.0.1 port: it announces PIPELINING, accepts \
every message and stores nothing, and its own counter (-c) checks each side's delivery count.
2. Runs an embedded farm in this process (a coordinator and K smurfs over real QUIC with \
mutual TLS on loopback) sending a campaign of N recipients built from the campaign folder's \
templates (default: the ~40 KB example newsletter) and a synthetic recipient list. Every \
message is rendered per recipient and sent over K x C pooled SMTP sessions. Measured: wall time \
from the launch call until the last result, CPU time and peak RSS (VmHWM) of this process, \
QUIC bytes per recipient (recipient data + results + template shipments) against the rendered \
message size.
3. Runs the peer, Postfix's smtp-source, against the same sink: N messages, one recipient \
each, the same message size (the measured average), K x C parallel sessions reused for \
many messages (-d). It sends one fixed body: no rendering, no coordination, no pipelining. The \
difference is what per-recipient personalisation plus QUIC coordination cost.

Build with --release: a debug build's numbers are meaningless. Exits non-zero when a side \
did not deliver every message or the sink's count disagrees.";

/// Long help of `ingest`.
const INGEST_HELP: &str = "\
Streaming CSV ingest into the coordinator store, durable and not.

Generates a recipient CSV of --rows rows of about --row-bytes bytes while it is read (never \
the whole list in memory), with one malformed row in every --bad-every, and launches it into \
an embedded coordinator whose state folder is a fresh temporary directory: first with \
durable = true (every ingest transaction committed with fsync), then with durable = false. \
The campaign is scheduled an hour ahead, so its one smurf is never handed work and only the \
launch call (template compile, CSV parse, store writes, duplicate check) is timed. Reports \
rows/s, CPU, the peak RSS (VmHWM, reset right before each launch) before and after, the \
database size on disk and the rejects, which must equal the planted bad rows.";

/// Long help of `durability`.
const DURABILITY_HELP: &str = "\
The throughput campaign with a durable state folder and with the in-memory store.

Starts one Postfix smtp-sink and runs the throughput benchmark's mailfarm side twice \
against it: first with the coordinator's state in a durable folder (redb, fsync on every \
commit, e.g. every results batch), then with the in-memory store. Prints both side by side \
and their ratio, the cost of durability. Exits non-zero when a run did not deliver every \
message or the sink's count disagrees.";

/// Long help of `mx`.
const MX_HELP: &str = "\
MX routing over real DNS with farm-wide shaping, next to relay mode.

1. Starts unbound on a free loopback port with a zone of --domains domains d0.test, d1.test, \
... whose MX hosts resolve to 127.0.0.2-5 (in alternate blocks of four, domains share the \
MX host names mxN.shared.test, so they share a site, or have their own), plus throttled.test on \
127.0.0.6. Every address gets an in-process fault sink (accepts everything, stores nothing), \
all on one port, which the smurfs use as their SMTP port.
2. Runs an embedded farm (coordinator + --smurfs smurfs over QUIC) with a shaping file: \
[default] message_rate --site-rate/s, max_connections --site-connections, no ramp-up; \
[domain.\"throttled.test\"] message_rate --throttle-rate/s. The campaign (the example \
newsletter's templates, no relay) holds --recipients recipients spread evenly over the \
domains and --throttled at throttled.test, mixed evenly, delivered by MX lookup.
3. Runs the same well-behaved recipients on a fresh farm in relay mode to a single sink.

Reports msgs/s and msgs/hour of the well-behaved part in both modes (launch until the sinks \
counted the last message) and their ratio, the cost of MX routing; the whole MX run; the \
count per MX host; and throttled.test's configured limit against the farm-wide rate its \
sink measured (peak second, averages). Exits non-zero unless every recipient reached the \
sink of its domain's MX host exactly once, the farm's counts agree, and throttled.test \
stayed within its limit.";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("MAILFARM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let outcome =
        match &cli.command {
            Command::Throughput(o) => throughput::throughput(o)
                .and_then(|r| finish(&r.text(), &r.problems, &r, o.json.as_deref())),
            Command::Ingest(o) => ingest::ingest(o)
                .and_then(|r| finish(&r.text(), &r.problems, &r, o.json.as_deref())),
            Command::Durability(o) => durability::durability(o)
                .and_then(|r| finish(&r.text(), &r.problems, &r, o.json.as_deref())),
            Command::Mx(o) => {
                mx::mx(o).and_then(|r| finish(&r.text(), &r.problems, &r, o.json.as_deref()))
            }
            Command::Bounce(o) => {
                let report = bounce::bounce(o);
                report.and_then(|r| finish(&r.text(), &r.problems, &r, o.json.as_deref()))
            }
            Command::Unsubscribe(o) => unsubscribe::unsubscribe(o)
                .and_then(|r| finish(&r.text(), &r.problems, &r, o.json.as_deref())),
            Command::UnsubscribeServer(o) => unsubscribe::serve(o),
            Command::Throttle(o) => throttle::throttle(o)
                .and_then(|r| finish(&r.text(), &r.problems, &r, o.json.as_deref())),
            Command::Inbound(o) => inbound::inbound(o)
                .and_then(|r| finish(&r.text(), &r.problems, &r, o.json.as_deref())),
            Command::Compare(o) => compare::compare(o)
                .and_then(|r| finish(&r.text(), &r.problems, &r, o.json.as_deref())),
            Command::Netns(o) => {
                netns::netns(o).and_then(|r| finish(&r.text(), &r.problems, &r, o.json.as_deref()))
            }
            Command::Forward(o) => forward::forward(o)
                .and_then(|r| finish(&r.text(), &r.problems, &r, o.json.as_deref())),
        };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a report's text, writes its JSON when asked; true when it found no problem.
fn finish(
    text: &str,
    problems: &[String],
    report: &impl Serialize,
    json: Option<&Path>,
) -> anyhow::Result<bool> {
    print!("{text}");
    if let Some(path) = json {
        report::write_json(report, path)?;
    }
    Ok(problems.is_empty())
}
