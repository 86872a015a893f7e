//! Turning an operator's submission into a running campaign: header and template checks, then
//! a streaming ingest of the CSV into the store, batch by batch, while sending already starts.

use std::io::{Read, Write};
use std::path::Path;

use mailfarm_protocol::{CampaignCounters, CampaignSubmission, ContentHash, TemplateBundle};

use crate::campaign::{valid_campaign_id, CsvRow, CsvRows, RejectedRow};
use crate::farm::{now_ms, Farm};
use crate::store::{CampaignRecord, CampaignStatus, RowVerdict, StoreError};

/// Rows per ingest transaction.
const INGEST_BATCH: usize = 5000;
/// Rejected rows kept in memory for the operator's answer (all go to the rejects file).
const REJECTS_SHOWN: usize = 100;

/// Why a launch was refused. Nothing was queued.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The campaign id is malformed or taken.
    #[error("campaign id: {0}")]
    Id(String),
    /// A template does not compile or uses a field the CSV lacks. The template error is the
    /// message, not a source, so an error chain (`{:#}`) does not print it twice.
    #[error("template: {0}")]
    Template(mailfarm_templates::TemplateError),
    /// The recipient list is unusable as a whole.
    #[error(transparent)]
    Recipients(#[from] crate::campaign::IngestError),
    /// The bundle could not be encoded for hashing.
    #[error("encoding the template bundle: {0}")]
    Encode(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The rejects report could not be written.
    #[error("writing the rejects report: {0}")]
    Rejects(std::io::Error),
}

impl From<mailfarm_templates::TemplateError> for LaunchError {
    fn from(error: mailfarm_templates::TemplateError) -> Self {
        LaunchError::Template(error)
    }
}

/// Outcome of a successful launch.
#[derive(Debug)]
pub struct Launched {
    /// Counters right after ingest.
    pub counters: CampaignCounters,
    /// The first rows set aside.
    pub rejects: Vec<RejectedRow>,
    /// The full rejects report, when one was written.
    pub rejects_file: Option<std::path::PathBuf>,
}

/// Content hash of a bundle: SHA-256 of its encoding with the hash field zeroed.
pub fn bundle_hash(bundle: &TemplateBundle) -> Result<ContentHash, LaunchError> {
    let mut unhashed = bundle.clone();
    unhashed.hash = ContentHash([0; 32]);
    let bytes = postcard::to_allocvec(&unhashed).map_err(|e| LaunchError::Encode(e.to_string()))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    Ok(ContentHash(hash))
}

/// Checks a campaign, stores it and ingests its CSV from `csv` (blocking; run it on a blocking
/// thread). Rejected rows are reported in `rejects_dir/<campaign>.rejects.txt` when given.
pub fn launch(
    farm: &Farm,
    submission: CampaignSubmission,
    csv: impl Read,
    verp_key: &[u8],
    rejects_dir: Option<&Path>,
) -> Result<Launched, LaunchError> {
    let max = mailfarm_templates::MAX_CAMPAIGN_ID_LEN;
    if !valid_campaign_id(&submission.id) {
        return Err(LaunchError::Id(format!(
            "{:?} must be 1-{max} letters, digits, '-' or '_'",
            submission.id
        )));
    }
    if farm.contains(&submission.id) {
        return Err(LaunchError::Id(format!(
            "{} already exists on this coordinator",
            submission.id
        )));
    }
    let mut rows = CsvRows::open(csv)?;
    let header = rows.header().clone();
    let mut bundle = TemplateBundle {
        hash: ContentHash([0; 32]),
        campaign_id: submission.id.clone(),
        subject: submission.subject,
        text: submission.text,
        html: submission.html,
        from: submission.from,
        reply_to: submission.reply_to,
        list_id: submission.list_id,
        bounce_domain: submission.bounce_domain,
        list_unsubscribe: submission.list_unsubscribe,
        field_names: header.field_names.clone(),
        email_field: header.email_field as u32,
        verp_key: verp_key.to_vec(),
        delivery: submission.delivery,
        unsubscribe_base_url: submission.unsubscribe_base_url,
    };
    // Compile here too, so a broken template fails the launch instead of every recipient.
    mailfarm_templates::compile_bundle(&bundle)?;
    bundle.hash = bundle_hash(&bundle)?;
    let record = farm
        .create_campaign(CampaignRecord {
            seq: 0,
            bundle,
            status: CampaignStatus::Running,
            created_ms: now_ms(),
            start_at_ms: submission.start_at_ms,
            rate_cap: submission.rate_cap,
            ingest_complete: false,
            total: 0,
            rejected_rows: 0,
            suppressed: 0,
            finished_ms: None,
        })
        .map_err(|e| LaunchError::Id(e.to_string()))?;
    let seq = record.seq;

    let mut report = match rejects_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(LaunchError::Rejects)?;
            let path = dir.join(format!("{}.rejects.txt", submission.id));
            let file = std::fs::File::create(&path).map_err(LaunchError::Rejects)?;
            Some((path, std::io::BufWriter::new(file)))
        }
        None => None,
    };
    let mut shown = Vec::new();
    let mut reject = |row: RejectedRow| -> Result<(), LaunchError> {
        if let Some((_, out)) = report.as_mut() {
            writeln!(out, "{row}").map_err(LaunchError::Rejects)?;
        }
        if shown.len() < REJECTS_SHOWN {
            shown.push(row);
        }
        Ok(())
    };
    let mut batch: Vec<(u32, String, Vec<String>)> = Vec::with_capacity(INGEST_BATCH);
    let mut lines = Vec::with_capacity(INGEST_BATCH);
    let mut next_row: u32 = 0;
    let mut done = false;
    while !done {
        let mut rejected = 0;
        while batch.len() < INGEST_BATCH {
            match rows.next_row() {
                None => {
                    done = true;
                    break;
                }
                Some(CsvRow::Rejected(row)) => {
                    rejected += 1;
                    reject(row)?;
                }
                Some(CsvRow::Row {
                    line,
                    email,
                    values,
                }) => {
                    batch.push((next_row, email, values));
                    lines.push(line);
                    next_row = next_row.saturating_add(1);
                }
            }
        }
        let verdicts = farm.ingest_rows(seq, &batch)?;
        for ((verdict, line), (_, email, _)) in verdicts.iter().zip(&lines).zip(&batch) {
            if *verdict == RowVerdict::Duplicate {
                reject(RejectedRow {
                    line: *line,
                    reason: format!("duplicate address {email}"),
                })?;
            }
        }
        farm.rows_rejected(seq, rejected);
        batch.clear();
        lines.clear();
    }
    let rejects_file = match report {
        Some((path, mut out)) => {
            out.flush().map_err(LaunchError::Rejects)?;
            Some(path)
        }
        None => None,
    };
    farm.ingest_done(seq)?;
    let counters = farm
        .counters(&submission.id)
        .ok_or_else(|| LaunchError::Id("campaign vanished during ingest".into()))?;
    Ok(Launched {
        counters,
        rejects: shown,
        rejects_file,
    })
}

#[cfg(test)]
mod error_tests {
    use super::*;

    #[test]
    fn a_template_error_is_said_once() {
        let bundle = TemplateBundle {
            hash: ContentHash([0; 32]),
            campaign_id: "c".into(),
            subject: "Hi {{town}}".into(),
            text: "x".into(),
            html: None,
            from: "a@b.example".into(),
            reply_to: None,
            list_id: "l.b.example".into(),
            bounce_domain: "b.example".into(),
            list_unsubscribe: None,
            field_names: vec!["email".into()],
            email_field: 0,
            verp_key: vec![1; 32],
            delivery: mailfarm_protocol::DeliveryTarget {
                relay: None,
                connections: 1,
            },
            unsubscribe_base_url: None,
        };
        let error = LaunchError::from(mailfarm_templates::compile_bundle(&bundle).unwrap_err());
        let chain = format!("{:#}", anyhow::Error::from(error));
        assert_eq!(chain.matches("unknown field").count(), 1, "{chain}");
        assert!(chain.starts_with("template: subject:1:"), "{chain}");
    }
}
