//! `bounce`: how fast the bounce analysis (parse and classify) goes over real bounces, on one
//! thread, in messages per second. The corpus is read into memory first, so only
//! `mailfarm_bounce::analyse` is timed.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use mailfarm_bounce::{analyse, split_mbox, Kind};
use serde::Serialize;

use crate::report::{thousands, write_machine};
use crate::sys::{self, Machine};
use crate::throughput::build_profile;

/// Options of `bounce`.
#[derive(clap::Args, Debug)]
pub struct Bounce {
    /// The bounce corpus: every file under it is read (mbox files are split).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpora/sisimai"))]
    pub corpus: PathBuf,
    /// Passes over the corpus that are timed (after one untimed warm-up pass).
    #[arg(long, default_value_t = 50)]
    pub rounds: u32,
    /// The run is reported as a problem below this many messages per second.
    #[arg(long, default_value_t = 20_000.0)]
    pub target: f64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What `bounce` measured.
#[derive(Debug, Serialize)]
pub struct BounceReport {
    /// The machine.
    pub machine: Machine,
    /// `release` or `debug`.
    pub build_profile: &'static str,
    /// The corpus folder.
    pub corpus: String,
    /// Messages in the corpus (after mbox splitting).
    pub messages: usize,
    /// Bytes of all messages.
    pub bytes: u64,
    /// Timed passes.
    pub rounds: u32,
    /// Wall time of the timed passes, in seconds.
    pub seconds: f64,
    /// CPU time of this process over the timed passes, in seconds.
    pub cpu_seconds: f64,
    /// Messages analysed per second of wall time, one thread.
    pub messages_per_sec: f64,
    /// Messages analysed per second of this process's CPU time: the rate the code runs at when
    /// other work on the machine takes part of the wall time.
    pub messages_per_cpu_sec: f64,
    /// Megabytes (10^6) analysed per second.
    pub megabytes_per_sec: f64,
    /// Mean time per message, in microseconds.
    pub micros_per_message: f64,
    /// One pass's verdicts: bounces, delays, complaints, auto-replies, others.
    pub kinds: KindCounts,
    /// The target in messages per second.
    pub target: f64,
    /// Checks that failed.
    pub problems: Vec<String>,
}

/// How many messages of each kind one pass found.
#[derive(Debug, Default, Serialize)]
pub struct KindCounts {
    /// Bounces.
    pub bounce: usize,
    /// Delay reports.
    pub delay: usize,
    /// ARF and JMRP complaints.
    pub feedback: usize,
    /// Auto-replies.
    pub auto_reply: usize,
    /// Not bounces.
    pub not_bounce: usize,
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Runs the benchmark.
pub fn bounce(opts: &Bounce) -> anyhow::Result<BounceReport> {
    let build_profile = build_profile();
    let machine = Machine::detect();
    let mut files = Vec::new();
    collect(&opts.corpus, &mut files)?;
    files.sort();
    let mut raw = Vec::new();
    for f in &files {
        // Only messages: skip the expected results, licences and notes.
        if f.extension()
            .is_some_and(|e| e == "tsv" || e == "md" || e == "json")
            || f.file_name().is_some_and(|n| n == "LICENSE")
        {
            continue;
        }
        raw.push(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?);
    }
    let messages: Vec<&[u8]> = raw.iter().flat_map(|d| split_mbox(d)).collect();
    if messages.is_empty() {
        bail!("no messages under {}", opts.corpus.display());
    }
    let bytes: u64 = messages.iter().map(|m| m.len() as u64).sum();

    let mut kinds = KindCounts::default();
    for m in &messages {
        match analyse(m).kind {
            Kind::Bounce => kinds.bounce += 1,
            Kind::Delay => kinds.delay += 1,
            Kind::Feedback => kinds.feedback += 1,
            Kind::AutoReply => kinds.auto_reply += 1,
            Kind::NotBounce => kinds.not_bounce += 1,
        }
    }

    let cpu_start = sys::usage(libc::RUSAGE_SELF)?.cpu;
    let start = Instant::now();
    for _ in 0..opts.rounds {
        for m in &messages {
            black_box(analyse(black_box(m)));
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = (sys::usage(libc::RUSAGE_SELF)?.cpu - cpu_start).as_secs_f64();
    let analysed = messages.len() as f64 * f64::from(opts.rounds);
    let messages_per_sec = analysed / seconds.max(1e-9);
    let mut problems = Vec::new();
    if messages_per_sec < opts.target {
        problems.push(format!(
            "{} messages/s is below the target of {}",
            thousands(messages_per_sec),
            thousands(opts.target)
        ));
    }
    Ok(BounceReport {
        machine,
        build_profile,
        corpus: opts.corpus.display().to_string(),
        messages: messages.len(),
        bytes,
        rounds: opts.rounds,
        seconds,
        cpu_seconds,
        messages_per_sec,
        messages_per_cpu_sec: analysed / cpu_seconds.max(1e-9),
        megabytes_per_sec: bytes as f64 * f64::from(opts.rounds) / seconds.max(1e-9) / 1e6,
        micros_per_message: seconds * 1e6 / analysed.max(1.0),
        kinds,
        target: opts.target,
        problems,
    })
}

impl BounceReport {
    /// The report as text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = write_machine(&mut out, &self.machine, self.build_profile);
        let _ = self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "corpus      {}", self.corpus)?;
        writeln!(
            out,
            "            {} messages, {:.1} MB; one pass: {} bounces, {} delays, {} complaints, \
             {} auto-replies, {} others",
            self.messages,
            self.bytes as f64 / 1e6,
            self.kinds.bounce,
            self.kinds.delay,
            self.kinds.feedback,
            self.kinds.auto_reply,
            self.kinds.not_bounce
        )?;
        writeln!(
            out,
            "timed       {} passes, {:.2} s wall, {:.2} s CPU, one thread",
            self.rounds, self.seconds, self.cpu_seconds
        )?;
        writeln!(
            out,
            "result      {} messages/s ({:.1} us each, {:.1} MB/s); target {} messages/s",
            thousands(self.messages_per_sec),
            self.micros_per_message,
            self.megabytes_per_sec,
            thousands(self.target)
        )?;
        writeln!(
            out,
            "            {} messages per CPU second (the rate when the thread has a core to \
             itself)",
            thousands(self.messages_per_cpu_sec)
        )?;
        for p in &self.problems {
            writeln!(out, "PROBLEM     {p}")?;
        }
        Ok(())
    }
}
