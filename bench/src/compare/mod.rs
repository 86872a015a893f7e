//! `mailfarm-bench compare`: the peers side by side in one run, one after another on the same
//! machine against the same smtp-sink with messages of the same size (issue 12): the raw SMTP
//! ceiling (smtp-source), the traditional pipeline (personalised messages injected into a
//! private Postfix relaying to the sink), mailfarm as separate `coordinator` and `smurf`
//! processes with durable state (DKIM off, rsa-sha256 2048 and ed25519), and the embedded farm;
//! optionally Haraka (npm) as the outbound relay, when it is installed.

pub mod dkim;
pub mod farm;
pub mod haraka;
pub mod plot;
pub mod postfix;
pub mod render;
pub mod report;
mod sides;

use std::path::PathBuf;

use anyhow::Context;
use mailfarm_smurf::outbound::dkim::DkimAlgorithm;

use crate::sys::Machine;
use crate::throughput::{build_profile, require_program, FarmArgs};
use report::{CompareReport, Coordination, SideKey};

/// Options of `compare`.
#[derive(clap::Args, Debug)]
pub struct Compare {
    /// Farm and campaign (messages per side, smurfs, connections, sink).
    #[command(flatten)]
    pub farm: FarmArgs,
    /// Postfix smtp-source program (the raw ceiling).
    #[arg(long, default_value = "/usr/sbin/smtp-source")]
    pub smtp_source: PathBuf,
    /// Postfix control program (the traditional pipeline).
    #[arg(long, default_value = "/usr/sbin/postfix")]
    pub postfix: PathBuf,
    /// openssl, to make the DKIM keys.
    #[arg(long, default_value = "/usr/bin/openssl")]
    pub openssl: PathBuf,
    /// Haraka's `haraka` program (npm: `npm install -g Haraka@3`), the optional fourth peer
    /// (default: `haraka` on PATH; not run when there is none).
    #[arg(long)]
    pub haraka: Option<PathBuf>,
    /// The `mailfarm` binary (default: next to this one, or MAILFARM_BIN).
    #[arg(long)]
    pub mailfarm: Option<PathBuf>,
    /// Also run a separate-process campaign of this many recipients (e.g. 200000) to show
    /// whether smurf memory grows with campaign size.
    #[arg(long)]
    pub big_recipients: Option<u64>,
    /// Sides to leave out: ceiling, postfix, haraka, mailfarm, embedded, dkim.
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Times the DKIM micro-measurement signs its 200 messages.
    #[arg(long, default_value_t = 5)]
    pub dkim_rounds: usize,
    /// Folder for state folders, Postfix's queue aside (default: the system's temporary
    /// folder).
    #[arg(long)]
    pub tmp: Option<PathBuf>,
    /// Write the rate-over-time plot (SVG) here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl Compare {
    fn runs(&self, side: &str) -> bool {
        !self.skip.iter().any(|s| s == side)
    }
}

/// Runs every side and builds the report.
pub fn compare(o: &Compare) -> anyhow::Result<CompareReport> {
    let f = &o.farm;
    f.check()?;
    let profile = build_profile();
    let machine = Machine::detect();
    let started = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let mailfarm = crate::operator::mailfarm_binary(o.mailfarm.as_deref());
    if o.runs("mailfarm") || o.runs("dkim") {
        crate::operator::require_mailfarm(&mailfarm)?;
    }
    if o.runs("ceiling") {
        require_program("smtp-source", &o.smtp_source)?;
    }
    if o.runs("postfix") {
        require_program("postfix", &o.postfix)?;
    }
    let mut not_run = Vec::new();
    let haraka_program = if o.runs("haraka") {
        match haraka::locate(o.haraka.as_deref()) {
            Some(program) => {
                let version = haraka::version(&program)?;
                Some((program, version))
            }
            None => {
                not_run.push(format!(
                    "Haraka (optional peer): `haraka` is not on PATH; {}",
                    haraka::INSTALL
                ));
                None
            }
        }
    } else {
        None
    };
    let tmp = tempfile::Builder::new()
        .prefix("mailfarm-compare.")
        .tempdir_in(o.tmp.clone().unwrap_or_else(std::env::temp_dir))
        .context("creating the work folder")?;
    let ctx = sides::Context::new(f, mailfarm, tmp.path())?;
    let mut sides_out = Vec::new();
    let mut problems = Vec::new();
    let mut coordination = Coordination::default();
    let mut dkim_costs = Vec::new();

    let message_bytes = ctx.message_bytes()?;
    if o.runs("ceiling") {
        eprintln!("1. raw ceiling: smtp-source -> smtp-sink ...");
        sides_out.push(ctx.ceiling(&o.smtp_source, message_bytes, &mut problems)?);
    }
    if o.runs("mailfarm") {
        eprintln!("3. mailfarm: coordinator + smurf processes, durable ...");
        let (side, coord) = ctx.processes(SideKey::Mailfarm, None, f.recipients, &mut problems)?;
        coordination = coord;
        sides_out.push(side);
    }
    if o.runs("embedded") {
        eprintln!("3b. mailfarm: embedded farm, durable ...");
        sides_out.push(ctx.embedded(&mut problems)?);
    }
    if o.runs("postfix") {
        eprintln!("2. traditional pipeline: render, inject into Postfix, relay to the sink ...");
        sides_out.push(ctx.postfix(&o.postfix, &mut problems)?);
    }
    if let Some((program, version)) = &haraka_program {
        eprintln!("2b. Haraka {version}: inject the same messages, outbound relay to the sink ...");
        sides_out.push(ctx.haraka(program, version, &mut problems)?);
    }
    if o.runs("dkim") {
        let domain = dkim::from_domain(&ctx.work.submission.from)?;
        for algorithm in [DkimAlgorithm::RsaSha256, DkimAlgorithm::Ed25519Sha256] {
            let key = dkim::generate(&o.openssl, tmp.path(), algorithm)?;
            eprintln!("4. mailfarm with DKIM {} ...", key.label);
            dkim_costs.push(ctx.dkim_micro(&domain, &key, o.dkim_rounds)?);
            let section = dkim::smurf_section(&domain, &key);
            let k = match algorithm {
                DkimAlgorithm::RsaSha256 => SideKey::MailfarmRsa,
                DkimAlgorithm::Ed25519Sha256 => SideKey::MailfarmEd25519,
            };
            let (side, _) = ctx.processes(k, Some(&section), f.recipients, &mut problems)?;
            sides_out.push(side);
        }
    }
    if let Some(big) = o.big_recipients {
        eprintln!("5. mailfarm processes, {big} recipients (smurf memory) ...");
        coordination.big = Some(ctx.big(big, &mut problems)?);
    }

    let mut report = CompareReport {
        machine,
        load_average_end: Machine::detect().load_average,
        started,
        build_profile: profile,
        recipients: f.recipients,
        sessions: f.sessions(),
        smurfs: f.smurfs,
        message_bytes,
        sink_command: ctx.sink.command.clone(),
        sides: sides_out,
        coordination,
        dkim: dkim_costs,
        targets: Vec::new(),
        peer_ratios: Vec::new(),
        not_run,
        problems,
    };
    report.targets = report.compute_targets();
    report.peer_ratios = report.compute_peer_ratios();
    if let Some(path) = &o.svg {
        let title = format!(
            "messages/s at smtp-sink, {} x {} B, {} sessions (load {})",
            f.recipients, message_bytes, report.sessions, report.machine.load_average
        );
        std::fs::write(path, plot::plot(&report.sides, &title))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}
