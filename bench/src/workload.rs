//! The benchmark's campaign: the settings and templates of a campaign folder (by default the
//! example newsletter, whose HTML part is about 40 KB) with a synthetic list of N unique
//! recipients in the example's columns.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use mailfarm_protocol::CampaignSubmission;

/// Files copied from the template campaign folder (`body.html.hbs` only when present).
const COPIED: [&str; 3] = ["campaign.toml", "body.txt.hbs", "body.html.hbs"];

/// First names, a few outside ASCII so headers and bodies see real encodings.
const FIRST: [&str; 12] = [
    "Mia", "Dmitri", "Ana", "Zoë", "Kenji", "Łukasz", "Fatima", "Oliver", "Chloé", "Sven", "Priya",
    "Tomás",
];
/// Last names.
const LAST: [&str; 10] = [
    "Ødegaard",
    "Smirnov",
    "García",
    "Müller",
    "Tanaka",
    "Nowak",
    "Haddad",
    "Brown",
    "Dubois",
    "Larsen",
];
/// Cities.
const CITIES: [&str; 10] = [
    "Toronto",
    "Chicago",
    "Lisbon",
    "München",
    "Osaka",
    "Kraków",
    "Marrakesh",
    "Leeds",
    "Lyon",
    "Bergen",
];

/// A campaign ready to launch, with the sizes the report quotes.
pub struct Workload {
    /// The submission (recipients included).
    pub submission: CampaignSubmission,
    /// Bytes of template sources (subject, text and HTML parts).
    pub template_source_bytes: u64,
    /// The recipient CSV, streamed into the launch.
    pub csv: Vec<u8>,
}

/// Builds the campaign from `template_dir` with `recipients` synthetic rows and `connections`
/// SMTP connections per smurf. The folder is assembled in a temporary directory and loaded
/// with the coordinator's own loader, so it is checked like an operator's folder.
pub fn build(template_dir: &Path, recipients: u64, connections: u16) -> anyhow::Result<Workload> {
    let dir = tempfile::tempdir().context("creating a temporary campaign folder")?;
    for name in COPIED {
        let from = template_dir.join(name);
        if name == "body.html.hbs" && !from.exists() {
            continue;
        }
        std::fs::copy(&from, dir.path().join(name))
            .with_context(|| format!("copying {}", from.display()))?;
    }
    let csv = recipients_csv(recipients).into_bytes();
    std::fs::write(dir.path().join("recipients.csv"), &csv)
        .context("writing the recipient list")?;
    let (mut submission, _csv_path) = mailfarm_coordinator::load_campaign_dir(dir.path())
        .with_context(|| format!("loading the campaign built from {}", template_dir.display()))?;
    submission.delivery.connections = connections;
    let template_source_bytes = (submission.subject.len()
        + submission.text.len()
        + submission.html.as_ref().map_or(0, String::len)) as u64;
    Ok(Workload {
        submission,
        template_source_bytes,
        csv,
    })
}

/// A CSV with the example's columns and `n` unique, deterministic rows.
pub fn recipients_csv(n: u64) -> String {
    let mut csv = String::from("email,first_name,last_name,city,plan,points,vip\n");
    for i in 0..n {
        let pick = |len: usize, salt: u64| (i.wrapping_mul(salt) / 7 % len as u64) as usize;
        let plan = match i % 10 {
            0..=5 => "basic",
            6..=8 => "plus",
            _ => "pro",
        };
        let vip = if i % 11 == 0 { "yes" } else { "" };
        let _ = writeln!(
            csv,
            "user{i}@d{}.example,{},{},{},{plan},{},{vip}",
            i % 20,
            FIRST[pick(FIRST.len(), 31)],
            LAST[pick(LAST.len(), 17)],
            CITIES[pick(CITIES.len(), 13)],
            i.wrapping_mul(7919) % 5000,
        );
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_unique_and_complete() {
        let csv = recipients_csv(100);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 101);
        let emails: std::collections::HashSet<&str> = lines[1..]
            .iter()
            .filter_map(|l| l.split(',').next())
            .collect();
        assert_eq!(emails.len(), 100);
        assert!(lines[1..].iter().all(|l| l.split(',').count() == 7));
    }

    #[test]
    fn the_example_campaign_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/newsletter");
        let workload = build(&dir, 50, 3).expect("example campaign builds");
        assert_eq!(workload.submission.delivery.connections, 3);
        assert!(workload.template_source_bytes > 30_000);
    }
}
