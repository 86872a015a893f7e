//! `mailfarm bounce inspect FILE...`: prints what the bounce analysis makes of messages on disk,
//! one JSON line per failed recipient (see `mailfarm_bounce::InspectLine`), so an operator can
//! check a bounce by hand and scripts can measure the classifier. The logic is in the
//! `mailfarm-bounce` crate; this is only the printing.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

/// `mailfarm bounce ...`
#[derive(Subcommand, Debug)]
pub enum BounceCommand {
    /// Analyse bounce messages (one message per file, or mbox files) and print one JSON line
    /// per failed recipient: file, recipient, status, reply_code, reason, hard_bounce,
    /// feedback_type, and the campaign and recipient id read from the VERP return path
    /// (without the farm's key: "verified": false). A message that is not a bounce prints one
    /// line with "reason": null.
    Inspect {
        /// Message or mbox files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Runs a `bounce` subcommand. Unreadable files are reported on stderr and make the exit
/// status 1; the other files are still printed.
pub fn run(command: BounceCommand) -> anyhow::Result<ExitCode> {
    let BounceCommand::Inspect { files } = command;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = false;
    for file in &files {
        match mailfarm_bounce::inspect_file(file) {
            Ok(lines) => {
                for line in lines {
                    serde_json::to_writer(&mut out, &line)?;
                    out.write_all(b"\n")?;
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    out.flush()?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
