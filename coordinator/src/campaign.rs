//! Campaigns as the operator writes them (a folder) and as the coordinator ingests them.
//!
//! A campaign folder holds `campaign.toml`, `body.txt.hbs`, an optional `body.html.hbs` and
//! `recipients.csv`. [`load_campaign_dir`] turns it into a [`CampaignSubmission`], reporting
//! every problem of the folder at once. [`ingest_recipients`] turns the CSV into recipient rows,
//! setting aside bad rows with their line numbers instead of failing the campaign.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use mailfarm_protocol::{CampaignSubmission, DeliveryTarget};
use serde::Deserialize;

/// Problems with a campaign folder; all of them are collected before reporting.
#[derive(Debug, thiserror::Error)]
#[error("campaign {dir}:\n  - {}", problems.join("\n  - "))]
pub struct CampaignDirError {
    /// The folder.
    pub dir: PathBuf,
    /// Every problem found.
    pub problems: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignFile {
    id: String,
    from: String,
    reply_to: Option<String>,
    subject: String,
    list_id: String,
    bounce_domain: String,
    list_unsubscribe: Option<String>,
    delivery: DeliveryFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryFile {
    relay: String,
    #[serde(default = "default_connections")]
    connections: u16,
}

fn default_connections() -> u16 {
    4
}

/// Whether `id` is a usable campaign identifier.
pub fn valid_campaign_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= mailfarm_templates::MAX_CAMPAIGN_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Reads and checks a campaign folder.
pub fn load_campaign_dir(dir: &Path) -> Result<CampaignSubmission, CampaignDirError> {
    let mut problems = Vec::new();
    let mut read = |name: &str, required: bool| -> Option<Vec<u8>> {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => None,
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                None
            }
        }
    };
    let toml_bytes = read("campaign.toml", true);
    let text = read("body.txt.hbs", true);
    let html = read("body.html.hbs", false);
    let csv = read("recipients.csv", true);
    let mut utf8 = |name: &str, bytes: Option<Vec<u8>>| {
        bytes.and_then(|b| match String::from_utf8(b) {
            Ok(s) => Some(s),
            Err(e) => {
                problems.push(format!("{name}: not UTF-8 ({e})"));
                None
            }
        })
    };
    let toml_text = utf8("campaign.toml", toml_bytes);
    let text = utf8("body.txt.hbs", text);
    let html = utf8("body.html.hbs", html);
    let file = toml_text.and_then(|t| match toml::from_str::<CampaignFile>(&t) {
        Ok(f) => Some(f),
        Err(e) => {
            problems.push(format!("campaign.toml: {}", e.to_string().trim_end()));
            None
        }
    });
    if let Some(f) = &file {
        if !valid_campaign_id(&f.id) {
            problems.push(format!(
                "campaign.toml: id {:?} must be 1-{} letters, digits, '-' or '_'",
                f.id,
                mailfarm_templates::MAX_CAMPAIGN_ID_LEN
            ));
        }
        if f.delivery.connections == 0 {
            problems.push("campaign.toml: delivery.connections must be at least 1".into());
        }
        if !f.delivery.relay.contains(':') {
            problems.push(format!(
                "campaign.toml: delivery.relay {:?} must be host:port",
                f.delivery.relay
            ));
        }
    }
    match (file, text, csv) {
        (Some(f), Some(text), Some(csv)) if problems.is_empty() => Ok(CampaignSubmission {
            id: f.id,
            from: f.from,
            reply_to: f.reply_to,
            subject: f.subject,
            list_id: f.list_id,
            bounce_domain: f.bounce_domain,
            list_unsubscribe: f.list_unsubscribe,
            text,
            html,
            delivery: DeliveryTarget {
                relay: f.delivery.relay,
                connections: f.delivery.connections,
            },
            recipients_csv: csv,
        }),
        _ => Err(CampaignDirError {
            dir: dir.to_owned(),
            problems,
        }),
    }
}

/// A CSV row that was set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    /// 1-based line number in the file.
    pub line: u64,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for RejectedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// The recipients of a campaign after ingest.
#[derive(Debug, Default)]
pub struct IngestedRecipients {
    /// Column names from the header row.
    pub field_names: Vec<String>,
    /// Index of the `email` column.
    pub email_field: usize,
    /// Accepted rows; each may be shorter than `field_names` (missing trailing fields).
    pub rows: Vec<Vec<String>>,
    /// Rows set aside.
    pub rejects: Vec<RejectedRow>,
}

/// Problems that make the whole recipient list unusable.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The header row is missing or unreadable.
    #[error("recipients.csv: no readable header row: {0}")]
    Header(String),
    /// No column is called `email`.
    #[error("recipients.csv: the header has no `email` column (columns: {0})")]
    NoEmailColumn(String),
    /// Two columns share a name.
    #[error("recipients.csv: column {0:?} appears twice in the header")]
    DuplicateColumn(String),
}

/// A light syntactic check of an address: what a recipient row must pass to be sent.
pub fn plausible_address(address: &str) -> Result<(), &'static str> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err("no '@' in address");
    };
    if local.is_empty() || local.len() > 64 {
        return Err("local part empty or longer than 64 octets");
    }
    if domain.is_empty() || domain.len() > 253 || !domain.contains('.') {
        return Err("domain missing or not fully qualified");
    }
    if address
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'))
    {
        return Err("whitespace, control or separator character in address");
    }
    if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
        return Err("malformed domain");
    }
    Ok(())
}

/// Reads a recipient CSV: header row with an `email` column; bad rows are set aside.
pub fn ingest_recipients(csv_bytes: &[u8]) -> Result<IngestedRecipients, IngestError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(csv_bytes);
    let headers = reader
        .headers()
        .map_err(|e| IngestError::Header(e.to_string()))?
        .clone();
    let field_names: Vec<String> = headers.iter().map(|h| h.trim().to_owned()).collect();
    let mut seen_columns = HashSet::new();
    for name in &field_names {
        if !seen_columns.insert(name.as_str()) {
            return Err(IngestError::DuplicateColumn(name.clone()));
        }
    }
    let email_field = field_names
        .iter()
        .position(|h| h.eq_ignore_ascii_case("email"))
        .ok_or_else(|| IngestError::NoEmailColumn(field_names.join(",")))?;
    let mut out = IngestedRecipients {
        field_names,
        email_field,
        ..Default::default()
    };
    out.field_names[email_field] = "email".into();
    let mut seen = HashSet::new();
    let mut record = csv::ByteRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                out.rejects.push(RejectedRow {
                    line,
                    reason: format!("unreadable CSV: {e}"),
                });
                continue;
            }
        }
        let line = record.position().map_or(line, |p| p.line());
        if record.len() > out.field_names.len() {
            out.rejects.push(RejectedRow {
                line,
                reason: format!(
                    "{} fields, the header has {}",
                    record.len(),
                    out.field_names.len()
                ),
            });
            continue;
        }
        let values: Result<Vec<String>, _> = record
            .iter()
            .map(|v| std::str::from_utf8(v).map(str::to_owned))
            .collect();
        let Ok(mut values) = values else {
            out.rejects.push(RejectedRow {
                line,
                reason: "not valid UTF-8".into(),
            });
            continue;
        };
        let Some(email) = values.get_mut(email_field) else {
            out.rejects.push(RejectedRow {
                line,
                reason: "no email field".into(),
            });
            continue;
        };
        *email = email.trim().to_owned();
        if let Err(reason) = plausible_address(email) {
            out.rejects.push(RejectedRow {
                line,
                reason: format!("bad address {email:?}: {reason}"),
            });
            continue;
        }
        if !seen.insert(email.to_lowercase()) {
            out.rejects.push(RejectedRow {
                line,
                reason: format!("duplicate address {email}"),
            });
            continue;
        }
        out.rows.push(values);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_rows_are_set_aside_with_line_numbers() {
        let csv = b"email,first_name,city\n\
            a@example.com,Ann,Oslo\n\
            not-an-address,Bob,Rome\n\
            c@example.com,Cy,Paris,extra\n\
            A@Example.com,Dup,Oslo\n\
            d@example.com,D\xff,Lima\n\
            e@example.com,Eve\n";
        let got = ingest_recipients(csv).unwrap();
        assert_eq!(got.rows.len(), 2);
        assert_eq!(got.rows[1], vec!["e@example.com", "Eve"]);
        let lines: Vec<u64> = got.rejects.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6]);
        assert!(got.rejects[2].reason.contains("duplicate"));
        assert!(got.rejects[3].reason.contains("UTF-8"));
    }

    #[test]
    fn header_without_email_is_refused() {
        assert!(matches!(
            ingest_recipients(b"name,city\nA,B\n"),
            Err(IngestError::NoEmailColumn(_))
        ));
    }

    #[test]
    fn campaign_dir_reports_every_problem_at_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("campaign.toml"),
            "id = \"bad id!\"\nfrom = \"a@b.example\"\nsubject = \"s\"\nlist_id = \"l\"\n\
             bounce_domain = \"b.example\"\n[delivery]\nrelay = \"nohost\"\nconnections = 0\n",
        )
        .unwrap();
        let err = load_campaign_dir(dir.path()).unwrap_err();
        let text = err.to_string();
        for needle in [
            "body.txt.hbs",
            "recipients.csv",
            "id",
            "connections",
            "relay",
        ] {
            assert!(text.contains(needle), "{needle} missing from: {text}");
        }
    }
}
