//! `mailfarm man --out DIR`: writes one man page per command and subcommand (`mailfarm.1`,
//! `mailfarm-campaign-launch.1`, ...) generated from the clap definition, so the pages can
//! never drift from `--help`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::Cli;

/// Writes the pages into `out` (created if missing) and lists them.
pub fn write_pages(out: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    clap_mangen::generate_to(Cli::command(), out)
        .with_context(|| format!("writing man pages into {}", out.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(out)
        .with_context(|| format!("listing {}", out.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with("mailfarm") && name.ends_with(".1"))
        .collect();
    pages.sort();
    println!("{} man pages in {}:", pages.len(), out.display());
    for page in &pages {
        println!("  {page}");
    }
    println!(
        "read one with `man -l {}`; install with `mailfarm man --out /usr/local/share/man/man1`",
        out.join("mailfarm.1").display()
    );
    Ok(ExitCode::SUCCESS)
}
