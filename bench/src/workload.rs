//! The benchmark's campaign: the settings and templates of a campaign folder (by default the
//! example newsletter, whose HTML part is about 40 KB) with a synthetic list of N unique
//! recipients in the example's columns.

use std::path::Path;

use anyhow::Context;
use mailfarm_protocol::CampaignSubmission;

/// Files copied from the template campaign folder (`body.html.hbs` only when present).
const COPIED: [&str; 3] = ["campaign.toml", "body.txt.hbs", "body.html.hbs"];

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
/// SMTP connections per smurf.
pub fn build(template_dir: &Path, recipients: u64, connections: u16) -> anyhow::Result<Workload> {
    let (submission, template_source_bytes) = campaign(template_dir, connections)?;
    Ok(Workload {
        submission,
        template_source_bytes,
        csv: crate::csvgen::recipients_csv(recipients).into_bytes(),
    })
}

/// The campaign settings and templates of `template_dir` with `connections` SMTP connections
/// per smurf, and the bytes of its template sources. The folder is assembled in a temporary
/// directory (with an empty recipient list) and loaded with the coordinator's own loader, so
/// it is checked like an operator's folder.
pub fn campaign(
    template_dir: &Path,
    connections: u16,
) -> anyhow::Result<(CampaignSubmission, u64)> {
    let dir = tempfile::tempdir().context("creating a temporary campaign folder")?;
    for name in COPIED {
        let from = template_dir.join(name);
        if name == "body.html.hbs" && !from.exists() {
            continue;
        }
        std::fs::copy(&from, dir.path().join(name))
            .with_context(|| format!("copying {}", from.display()))?;
    }
    std::fs::write(dir.path().join("recipients.csv"), b"").context("writing the recipient list")?;
    let (mut submission, _csv_path) = mailfarm_coordinator::load_campaign_dir(dir.path())
        .with_context(|| format!("loading the campaign built from {}", template_dir.display()))?;
    submission.delivery.connections = connections;
    let template_source_bytes = (submission.subject.len()
        + submission.text.len()
        + submission.html.as_ref().map_or(0, String::len)) as u64;
    Ok((submission, template_source_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_campaign_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/newsletter");
        let workload = build(&dir, 50, 3).expect("example campaign builds");
        assert_eq!(workload.submission.delivery.connections, 3);
        assert!(workload.template_source_bytes > 30_000);
    }
}
