//! Turning an operator's submission into a running campaign: compile check, ingest, bundle.

use mailfarm_protocol::{CampaignCounters, CampaignSubmission, ContentHash, TemplateBundle};
use mailfarm_templates::{MessageSettings, MessageTemplate, TemplateSources, VerpSigner};

use crate::campaign::{ingest_recipients, valid_campaign_id, RejectedRow};
use crate::farm::Farm;

/// Why a launch was refused. Nothing was queued.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The campaign id is malformed or taken.
    #[error("campaign id: {0}")]
    Id(String),
    /// A template does not compile or uses a field the CSV lacks.
    #[error("template: {0}")]
    Template(#[from] mailfarm_templates::TemplateError),
    /// The recipient list is unusable as a whole.
    #[error(transparent)]
    Recipients(#[from] crate::campaign::IngestError),
    /// The bundle could not be encoded for hashing.
    #[error("encoding the template bundle: {0}")]
    Encode(String),
}

/// Outcome of a successful launch.
#[derive(Debug)]
pub struct Launched {
    /// Counters right after ingest.
    pub counters: CampaignCounters,
    /// Rows set aside.
    pub rejects: Vec<RejectedRow>,
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

/// Checks, ingests and queues a campaign.
pub fn launch(
    farm: &Farm,
    submission: CampaignSubmission,
    verp_key: &[u8],
) -> Result<Launched, LaunchError> {
    if !valid_campaign_id(&submission.id) {
        return Err(LaunchError::Id(format!(
            "{:?} must be 1-{} letters, digits, '-' or '_'",
            submission.id,
            mailfarm_templates::MAX_CAMPAIGN_ID_LEN
        )));
    }
    if farm.contains(&submission.id) {
        return Err(LaunchError::Id(format!(
            "{} already exists on this coordinator",
            submission.id
        )));
    }
    let ingested = ingest_recipients(&submission.recipients_csv)?;
    let sources = TemplateSources {
        subject: submission.subject.clone(),
        text: submission.text.clone(),
        html: submission.html.clone(),
    };
    let settings = MessageSettings {
        campaign_id: submission.id.clone(),
        from: submission.from.clone(),
        reply_to: submission.reply_to.clone(),
        list_id: submission.list_id.clone(),
        bounce_domain: submission.bounce_domain.clone(),
        list_unsubscribe: submission.list_unsubscribe.clone(),
    };
    // Compile here too, so a broken template fails the launch instead of every recipient.
    MessageTemplate::compile(
        &sources,
        settings,
        ingested.field_names.clone(),
        VerpSigner::new(verp_key),
    )?;
    let mut bundle = TemplateBundle {
        hash: ContentHash([0; 32]),
        campaign_id: submission.id,
        subject: submission.subject,
        text: submission.text,
        html: submission.html,
        from: submission.from,
        reply_to: submission.reply_to,
        list_id: submission.list_id,
        bounce_domain: submission.bounce_domain,
        list_unsubscribe: submission.list_unsubscribe,
        field_names: ingested.field_names,
        email_field: ingested.email_field as u32,
        verp_key: verp_key.to_vec(),
        delivery: submission.delivery,
    };
    bundle.hash = bundle_hash(&bundle)?;
    let counters = farm
        .add_campaign(bundle, ingested.rows, ingested.rejects.len() as u64)
        .map_err(LaunchError::Id)?;
    Ok(Launched {
        counters,
        rejects: ingested.rejects,
    })
}
