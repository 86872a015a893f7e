//! `mailfarm forward`: the operator's forwarding rules (add, remove, list, import from CSV).
//! The coordinator checks every rule with the farm's one address check and applies a command
//! whole or not at all; the `in` nodes get the change at once.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use mailfarm_protocol::{ForwardRule, OperatorRequest, OperatorResponse};

use crate::cli::Remote;

/// Forwarding subcommands.
#[derive(Subcommand, Debug)]
pub enum ForwardCommand {
    /// Forward mail for OLD to NEW (or change where OLD's mail goes). The `in` nodes accept
    /// mail for OLD from now on, relay it to NEW (SRS envelope sender), and send the sender a
    /// change-of-address notice at most once per day.
    #[command(after_help = "Example: mailfarm forward add jane@old.example jane@new.example")]
    Add {
        /// The moved address (its domain's MX must be the farm's `in` nodes).
        old: String,
        /// Where its mail goes now.
        new: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop forwarding OLD: the `in` nodes refuse its mail (550 5.1.1) from the moment they
    /// have the change; messages already accepted are still delivered.
    Remove {
        /// The moved address.
        old: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show every rule (old, new) and the rule set's version.
    List {
        /// JSON: {"version": N, "rules": [{"old": ..., "new": ...}]}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Add or change many rules from a CSV file with two columns, old and new (an optional
    /// header line `old,new`). Every bad row is reported with its line number and then
    /// nothing is applied: fix the file and run it again.
    #[command(
        after_help = "Example file:\n  old,new\n  jane@old.example,jane@new.example\n  \
                            bob@old.example,robert@elsewhere.example"
    )]
    Import {
        /// The CSV file.
        file: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
}

/// Runs a forwarding subcommand.
pub async fn run(command: ForwardCommand) -> anyhow::Result<ExitCode> {
    match command {
        ForwardCommand::Add { old, new, remote } => {
            let rules = vec![(0, ForwardRule { old, new })];
            send(&remote, OperatorRequest::ForwardSet { rules }).await
        }
        ForwardCommand::Remove { old, remote } => {
            send(&remote, OperatorRequest::ForwardRemove { old }).await
        }
        ForwardCommand::List { json, remote } => list(&remote, json).await,
        ForwardCommand::Import { file, remote } => {
            let rules = read_csv(&file)?;
            if rules.is_empty() {
                bail!("{}: no rules in the file", file.display());
            }
            send(&remote, OperatorRequest::ForwardSet { rules }).await
        }
    }
}

/// Reads `old,new` rows; rows with the wrong number of columns are reported by line number.
fn read_csv(path: &Path) -> anyhow::Result<Vec<(u64, ForwardRule)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rules = Vec::new();
    let mut problems = Vec::new();
    // One row per line (an address never holds a line break), so every row keeps the line
    // number an operator sees in an editor, blank lines included.
    for (index, text) in text.lines().enumerate() {
        let line = index as u64 + 1;
        if text.trim().is_empty() {
            continue;
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let row = match reader.records().next() {
            Some(Ok(row)) => row,
            Some(Err(e)) => {
                problems.push(format!("line {line}: {e}"));
                continue;
            }
            None => continue,
        };
        let fields: Vec<&str> = row.iter().collect();
        match fields.as_slice() {
            [] | [""] => {}
            [old, new]
                if line == 1
                    && old.eq_ignore_ascii_case("old")
                    && new.eq_ignore_ascii_case("new") => {}
            [old, new] => rules.push((
                line,
                ForwardRule {
                    old: (*old).to_owned(),
                    new: (*new).to_owned(),
                },
            )),
            other => problems.push(format!(
                "line {line}: expected 2 columns (old,new), found {}",
                other.len()
            )),
        }
    }
    if !problems.is_empty() {
        bail!(
            "{}: nothing imported, fix these rows:\n  {}",
            path.display(),
            problems.join("\n  ")
        );
    }
    Ok(rules)
}

async fn send(remote: &Remote, request: OperatorRequest) -> anyhow::Result<ExitCode> {
    let mut client = crate::remote::connect(remote).await?;
    let response = client.request(&request).await?;
    client.close().await;
    match response {
        OperatorResponse::Done { message } => {
            println!("{message}");
            Ok(ExitCode::SUCCESS)
        }
        OperatorResponse::ForwardRefused { problems } => bail!(
            "nothing applied, {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        ),
        OperatorResponse::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from the coordinator: {other:?}"),
    }
}

async fn list(remote: &Remote, json: bool) -> anyhow::Result<ExitCode> {
    let mut client = crate::remote::connect(remote).await?;
    let response = client.request(&OperatorRequest::ForwardList).await?;
    client.close().await;
    let (version, rules) = match response {
        OperatorResponse::ForwardRules { version, rules } => (version, rules),
        OperatorResponse::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer from the coordinator: {other:?}"),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({ "version": version, "rules": rules })
        );
        return Ok(ExitCode::SUCCESS);
    }
    if rules.is_empty() {
        println!("no forwarding rules (version {version})");
        return Ok(ExitCode::SUCCESS);
    }
    let width = rules.iter().map(|r| r.old.len()).max().unwrap_or(3).max(3);
    println!("{:<width$}  new", "old");
    for rule in &rules {
        println!("{:<width$}  {}", rule.old, rule.new);
    }
    println!("{} rule(s), version {version}", rules.len());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_keep_their_line_numbers_and_bad_rows_fail_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.csv");
        std::fs::write(
            &good,
            "old,new\na@x.test,a@y.test\n\n b@x.test , b@y.test\n",
        )
        .unwrap();
        let rules = read_csv(&good).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].0, 2);
        assert_eq!(rules[1].0, 4);
        assert_eq!(rules[1].1.old, "b@x.test");
        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "a@x.test,a@y.test\nb@x.test\nc,d,e\n").unwrap();
        let e = read_csv(&bad).unwrap_err().to_string();
        assert!(e.contains("line 2: expected 2 columns"), "{e}");
        assert!(e.contains("line 3: expected 2 columns"), "{e}");
    }
}
