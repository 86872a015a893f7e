//! `ingest`: how fast a launch streams a large recipient CSV into the coordinator's store, and
//! what it costs in memory and disk, with a durable state folder and with `durable = false`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use mailfarm_protocol::{CampaignState, CampaignSubmission};
use serde::Serialize;

use crate::csvgen::{ListShape, RecipientRows};
use crate::farm_run::{self, FarmShape, Routing, StateStore};
use crate::report::{mib, text_of, thousands, write_heading, write_verdict};
use crate::sys::{self, Machine};
use crate::throughput::{build_profile, secs};
use crate::workload;

/// The campaign is scheduled this far ahead, so nothing is leased while it ingests.
const START_DELAY: Duration = Duration::from_secs(3600);

/// One cell of a report row, from a run.
type Cell<'a> = &'a dyn Fn(&IngestRun) -> String;

/// Options of `ingest`.
#[derive(clap::Args, Debug)]
pub struct Ingest {
    /// Rows in the generated CSV (malformed rows included).
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Bytes per row, newline included (rows are padded with a `note` column).
    #[arg(long, default_value_t = 120)]
    pub row_bytes: usize,
    /// One malformed row (address without '@') in every this many rows.
    #[arg(long, default_value_t = 100_000)]
    pub bad_every: u64,
    /// Campaign folder whose campaign.toml and templates are used.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/newsletter"))]
    pub campaign: PathBuf,
    /// Folder in which the temporary state folders are created (default: the system's).
    #[arg(long)]
    pub tmp: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What `ingest` measured.
#[derive(Debug, Serialize)]
pub struct IngestReport {
    /// The machine.
    pub machine: Machine,
    /// `release` or `debug`.
    pub build_profile: &'static str,
    /// Rows generated (malformed included).
    pub rows: u64,
    /// Malformed rows planted.
    pub bad_rows: u64,
    /// Bytes of the generated CSV.
    pub csv_bytes: u64,
    /// Bytes of template sources.
    pub template_source_bytes: u64,
    /// Campaign folder used.
    pub campaign_dir: String,
    /// File system of the state folders.
    pub state_fs: String,
    /// Rows per second of the CSV generator alone (its cost is inside every run).
    pub generator_rows_per_sec: f64,
    /// Whether the peak RSS could be reset before each launch.
    pub peak_reset: bool,
    /// One run per store setting.
    pub runs: Vec<IngestRun>,
    /// Checks that failed.
    pub problems: Vec<String>,
}

/// One launch.
#[derive(Debug, Serialize)]
pub struct IngestRun {
    /// `durable` setting of the coordinator.
    pub durable: bool,
    /// Seconds in the launch call (template compile, parse, store, dedupe).
    pub seconds: f64,
    /// Rows (all) per second.
    pub rows_per_sec: f64,
    /// CPU seconds of this process during the launch.
    pub cpu_seconds: f64,
    /// Recipients stored (campaign total).
    pub accepted: u64,
    /// Rows rejected.
    pub rejected: u64,
    /// Campaign state right after the launch.
    pub state: String,
    /// Recipients leased to the idle smurf or attempted during the launch (must be 0).
    pub leased: u64,
    /// `VmRSS` right before the launch.
    pub rss_before_bytes: u64,
    /// `VmHWM` right before the launch.
    pub peak_before_bytes: u64,
    /// `VmHWM` right after the launch.
    pub peak_after_bytes: u64,
    /// Whether `state.redb` exists on disk.
    pub db_on_disk: bool,
    /// Size of `state.redb`.
    pub db_bytes: u64,
    /// Size of the whole state folder (database, rejects report, accounting log).
    pub state_dir_bytes: u64,
}

/// Runs the ingest benchmark: the durable run, then `durable = false`.
pub fn ingest(o: &Ingest) -> anyhow::Result<IngestReport> {
    if o.rows == 0 || o.bad_every == 0 {
        bail!("--rows and --bad-every must be at least 1");
    }
    let profile = build_profile();
    let machine = Machine::detect();
    let (mut submission, template_source_bytes) = workload::campaign(&o.campaign, 1)?;
    let start_at = SystemTime::now().duration_since(UNIX_EPOCH)? + START_DELAY;
    submission.start_at_ms = Some(u64::try_from(start_at.as_millis())?);
    let shape = ListShape {
        row_bytes: Some(o.row_bytes),
        bad_every: Some(o.bad_every),
    };
    let bad_rows = shape.bad_rows(o.rows);
    eprintln!("generator alone: {} rows ...", o.rows);
    let started = Instant::now();
    let mut rows = RecipientRows::new(o.rows, shape);
    std::io::copy(&mut rows, &mut std::io::sink()).context("generating the CSV")?;
    let generator_rows_per_sec = o.rows as f64 / secs(started.elapsed()).max(1e-9);
    let csv_bytes = rows.produced();
    let parent = o.tmp.clone().unwrap_or_else(std::env::temp_dir);

    let mut runs = Vec::new();
    let mut peak_reset = true;
    let mut problems = Vec::new();
    for durable in [true, false] {
        eprintln!("ingest: {} rows, durable={durable} ...", o.rows);
        let dir = tempfile::tempdir_in(&parent)
            .with_context(|| format!("creating a state folder in {}", parent.display()))?;
        let rows = RecipientRows::new(o.rows, shape);
        let (run, reset) = launch_once(dir.path().to_owned(), durable, submission.clone(), rows)?;
        peak_reset &= reset;
        let label = if durable { "durable" } else { "durable=false" };
        if run.rejected != bad_rows {
            problems.push(format!(
                "{label}: {} rows rejected, {bad_rows} planted",
                run.rejected
            ));
        }
        if run.accepted != o.rows - bad_rows {
            problems.push(format!(
                "{label}: {} recipients stored of {}",
                run.accepted,
                o.rows - bad_rows
            ));
        }
        if run.leased > 0 {
            problems.push(format!(
                "{label}: {} recipients leased during ingest",
                run.leased
            ));
        }
        runs.push(run);
    }
    Ok(IngestReport {
        machine,
        build_profile: profile,
        rows: o.rows,
        bad_rows,
        csv_bytes,
        template_source_bytes,
        campaign_dir: std::fs::canonicalize(&o.campaign)
            .unwrap_or_else(|_| o.campaign.clone())
            .display()
            .to_string(),
        state_fs: sys::fs_type(&parent),
        generator_rows_per_sec,
        peak_reset,
        runs,
        problems,
    })
}

/// Starts an embedded farm (one smurf, relay on a closed port) with its state in `dir`,
/// launches `submission` with `csv` and measures the launch call. Also returns whether the
/// peak RSS could be reset before it.
fn launch_once(
    dir: PathBuf,
    durable: bool,
    submission: CampaignSubmission,
    csv: RecipientRows,
) -> anyhow::Result<(IngestRun, bool)> {
    // A port nobody listens on: the smurf is never handed work, but must not reach anyone.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free loopback port")?;
    let shape = FarmShape {
        smurfs: 1,
        window: None,
        batch_size: None,
        state: StateStore::Folder {
            dir: dir.clone(),
            durable,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async {
        let (farm, _, _) = farm_run::start(&shape, Routing::Relay(closed.to_string())).await?;
        let measured = async {
            farm_run::wait_joined(&farm, 1).await?;
            let id = submission.id.clone();
            let reset = sys::reset_peak_rss();
            let rss_before_bytes = sys::self_status_bytes("VmRSS:")?;
            let peak_before_bytes = sys::self_status_bytes("VmHWM:")?;
            let cpu_before = sys::usage(libc::RUSAGE_SELF)?.cpu;
            let started = Instant::now();
            let launched = farm
                .handle()
                .launch(submission, csv)
                .await
                .context("launching the campaign")?;
            let seconds = secs(started.elapsed());
            let cpu = sys::usage(libc::RUSAGE_SELF)?
                .cpu
                .saturating_sub(cpu_before);
            let peak_after_bytes = sys::self_status_bytes("VmHWM:")?;
            let c = farm
                .handle()
                .farm()
                .counters(&id)
                .unwrap_or(launched.counters);
            let db = dir.join("state.redb");
            let rows = c.total + c.rejected_rows;
            let run = IngestRun {
                durable,
                seconds,
                rows_per_sec: rows as f64 / seconds.max(1e-9),
                cpu_seconds: secs(cpu),
                accepted: c.total,
                rejected: c.rejected_rows,
                state: match c.state {
                    CampaignState::Scheduled => "scheduled".into(),
                    other => format!("{other:?}").to_lowercase(),
                },
                leased: c.in_flight + c.attempts,
                rss_before_bytes,
                peak_before_bytes,
                peak_after_bytes,
                db_on_disk: db.is_file(),
                db_bytes: sys::disk_bytes(&db),
                state_dir_bytes: sys::disk_bytes(&dir),
            };
            anyhow::Ok((run, reset))
        }
        .await;
        farm.shutdown().await;
        measured
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

impl IngestReport {
    /// The report as text.
    pub fn text(&self) -> String {
        text_of(|out| self.write_text(out))
    }

    /// Writes the text report into `out`.
    fn write_text(&self, out: &mut String) -> std::fmt::Result {
        write_heading(
            out,
            "mailfarm-bench ingest: streaming CSV launch into the coordinator store",
            &self.machine,
            self.build_profile,
        )?;
        let avg_row = self.csv_bytes as f64 / self.rows.max(1) as f64;
        writeln!(
            out,
            "conditions  {} rows ({} malformed planted), {avg_row:.1} B/row avg, CSV {} B \
             generated while read (never held in memory)",
            thousands(self.rows as f64),
            self.bad_rows,
            thousands(self.csv_bytes as f64)
        )?;
        writeln!(
            out,
            "            templates {} B from {}",
            thousands(self.template_source_bytes as f64),
            self.campaign_dir
        )?;
        writeln!(
            out,
            "            embedded coordinator + 1 idle smurf; campaign scheduled +1 h, so nothing \
             is leased during ingest"
        )?;
        writeln!(
            out,
            "            state folders in a fresh tempdir on {}; peak RSS reset before each \
             launch: {}",
            self.state_fs,
            if self.peak_reset {
                "yes"
            } else {
                "NO (peaks are cumulative)"
            }
        )?;
        writeln!(
            out,
            "            CSV generator alone: {} rows/s (its cost is included below)",
            thousands(self.generator_rows_per_sec)
        )?;
        writeln!(out)?;
        write!(out, "{:<30}", "")?;
        for r in &self.runs {
            write!(
                out,
                "{:>16}",
                ["durable=false", "durable"][usize::from(r.durable)]
            )?;
        }
        writeln!(out)?;
        let rows: [(&str, Cell); 15] = [
            ("store", &|r| {
                ["in memory", "redb file"][usize::from(r.db_on_disk)].into()
            }),
            ("launch seconds", &|r| format!("{:.3}", r.seconds)),
            ("rows/s", &|r| thousands(r.rows_per_sec)),
            ("CSV MB/s", &|r| {
                format!("{:.1}", self.csv_bytes as f64 / 1e6 / r.seconds.max(1e-9))
            }),
            ("CPU seconds", &|r| format!("{:.2}", r.cpu_seconds)),
            ("recipients stored", &|r| thousands(r.accepted as f64)),
            ("rows rejected", &|r| r.rejected.to_string()),
            ("campaign state after", &|r| r.state.clone()),
            ("VmRSS before launch", &|r| mib(r.rss_before_bytes)),
            ("VmHWM before launch", &|r| mib(r.peak_before_bytes)),
            ("VmHWM after launch", &|r| mib(r.peak_after_bytes)),
            ("peak growth", &|r| {
                mib(r.peak_after_bytes.saturating_sub(r.peak_before_bytes))
            }),
            ("state.redb on disk", &|r| mib(r.db_bytes)),
            ("state folder on disk", &|r| mib(r.state_dir_bytes)),
            ("disk bytes / recipient", &|r| {
                format!("{:.0}", r.db_bytes as f64 / r.accepted.max(1) as f64)
            }),
        ];
        for (name, value) in rows {
            write!(out, "{name:<30}")?;
            for r in &self.runs {
                write!(out, "{:>16}", value(r))?;
            }
            writeln!(out)?;
        }
        if let [durable, memory] = &self.runs[..] {
            if memory.seconds > 0.0 {
                writeln!(
                    out,
                    "durable / durable=false launch time: {:.2}",
                    durable.seconds / memory.seconds
                )?;
            }
            if !memory.db_on_disk {
                writeln!(
                    out,
                    "note: with durable=false the coordinator keeps its store in memory even \
                     with a state folder (Store::open), so that column's growth is the store; \
                     its VmRSS before launch includes heap the durable run left behind"
                )?;
            }
        }
        writeln!(out)?;
        write_verdict(
            out,
            &self.problems,
            "every valid row stored, every planted bad row rejected",
        )
    }
}
