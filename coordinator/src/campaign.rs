//! Campaigns as the operator writes them (a folder) and as the coordinator ingests them.
//!
//! A campaign folder holds `campaign.toml`, `body.txt.hbs`, an optional `body.html.hbs` and
//! `recipients.csv`. [`load_campaign_dir`] turns it into a [`CampaignSubmission`], reporting
//! every problem of the folder at once. [`CsvRows`] reads the CSV row by row in constant memory,
//! setting aside bad rows with their line numbers instead of failing the campaign.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use mailfarm_protocol::{CampaignSubmission, DeliveryTarget};
use mailfarm_templates::address::normalize_recipient;

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
    unsubscribe_base_url: Option<String>,
    delivery: DeliveryFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryFile {
    relay: Option<String>,
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

/// Reads and checks a campaign folder. Returns the submission and the path of its
/// `recipients.csv`, which is streamed separately.
pub fn load_campaign_dir(dir: &Path) -> Result<(CampaignSubmission, PathBuf), CampaignDirError> {
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
    let csv_path = dir.join("recipients.csv");
    let csv = match std::fs::metadata(&csv_path) {
        Ok(m) if m.is_file() => Some(()),
        Ok(_) => {
            problems.push("recipients.csv: not a file".into());
            None
        }
        Err(e) => {
            problems.push(format!("recipients.csv: {e}"));
            None
        }
    };
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
        if let Some(relay) = &f.delivery.relay {
            if !relay.contains(':') {
                problems.push(format!(
                    "campaign.toml: delivery.relay {relay:?} must be host:port (leave it out to \
                     deliver directly to each domain's MX hosts)"
                ));
            }
        }
    }
    match (file, text, csv) {
        (Some(f), Some(text), Some(())) if problems.is_empty() => Ok((
            CampaignSubmission {
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
                start_at_ms: None,
                rate_cap: None,
                unsubscribe_base_url: f.unsubscribe_base_url,
            },
            csv_path,
        )),
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

/// Problems that make the whole recipient list unusable.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The file has nothing in it, not even a header row.
    #[error(
        "recipients.csv is empty: it needs a header row naming the columns, one of them `email`, \
         then one row per recipient"
    )]
    Empty,
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

/// The header of a recipient CSV.
#[derive(Debug, Clone)]
pub struct CsvHeader {
    /// Column names, in order (the address column is normalised to `email`).
    pub field_names: Vec<String>,
    /// Index of the `email` column.
    pub email_field: usize,
}

/// One data row of a recipient CSV, after checks.
#[derive(Debug)]
pub enum CsvRow {
    /// A usable row.
    Row {
        /// 1-based line number.
        line: u64,
        /// The address, trimmed.
        email: String,
        /// Field values (may be shorter than the header: missing trailing fields).
        values: Vec<String>,
    },
    /// A row set aside.
    Rejected(RejectedRow),
}

/// Reads a recipient CSV row by row in constant memory: header row with an `email` column;
/// malformed rows come out as [`CsvRow::Rejected`] with their line numbers.
pub struct CsvRows<R: std::io::Read> {
    reader: csv::Reader<R>,
    header: CsvHeader,
    record: csv::ByteRecord,
    failed: bool,
}

impl<R: std::io::Read> CsvRows<R> {
    /// Reads and checks the header row.
    pub fn open(input: R) -> Result<Self, IngestError> {
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(true)
            .from_reader(input);
        let headers = reader
            .headers()
            .map_err(|e| IngestError::Header(e.to_string()))?
            .clone();
        if headers.is_empty() {
            return Err(IngestError::Empty);
        }
        let mut field_names: Vec<String> = headers.iter().map(|h| h.trim().to_owned()).collect();
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
        field_names[email_field] = "email".into();
        Ok(Self {
            reader,
            header: CsvHeader {
                field_names,
                email_field,
            },
            record: csv::ByteRecord::new(),
            failed: false,
        })
    }

    /// The header.
    pub fn header(&self) -> &CsvHeader {
        &self.header
    }

    /// The next row, or None at the end of the input.
    pub fn next_row(&mut self) -> Option<CsvRow> {
        if self.failed {
            return None;
        }
        let line = self.reader.position().line();
        let reject = |line, reason: String| Some(CsvRow::Rejected(RejectedRow { line, reason }));
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => return None,
            Ok(true) => {}
            Err(e) => {
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    // The input itself failed (upload cut short): report once, then stop.
                    self.failed = true;
                    return reject(line, format!("input ended early: {e}"));
                }
                return reject(line, format!("unreadable CSV: {e}"));
            }
        }
        let line = self.record.position().map_or(line, |p| p.line());
        let columns = self.header.field_names.len();
        if self.record.len() > columns {
            return reject(
                line,
                format!("{} fields, the header has {columns}", self.record.len()),
            );
        }
        let values: Result<Vec<String>, _> = self
            .record
            .iter()
            .map(|v| std::str::from_utf8(v).map(str::to_owned))
            .collect();
        let Ok(mut values) = values else {
            return reject(line, "not valid UTF-8".into());
        };
        let Some(email) = values.get_mut(self.header.email_field) else {
            return reject(line, "no email field".into());
        };
        let trimmed = email.trim();
        *email = match normalize_recipient(trimmed) {
            Ok(address) => address.into_owned(),
            Err(reason) => return reject(line, format!("bad address {trimmed:?}: {reason}")),
        };
        let email = email.clone();
        Some(CsvRow::Row {
            line,
            email,
            values,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(csv: &[u8]) -> (Vec<Vec<String>>, Vec<RejectedRow>) {
        let mut rows = CsvRows::open(csv).unwrap();
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        while let Some(row) = rows.next_row() {
            match row {
                CsvRow::Row { values, .. } => ok.push(values),
                CsvRow::Rejected(r) => bad.push(r),
            }
        }
        (ok, bad)
    }

    #[test]
    fn bad_rows_are_set_aside_with_line_numbers() {
        let csv = b"email,first_name,city\n\
            a@example.com,Ann,Oslo\n\
            not-an-address,Bob,Rome\n\
            c@example.com,Cy,Paris,extra\n\
            d@example.com,D\xff,Lima\n\
            e@example.com,Eve\n\
            \"unterminated@example.com,X\n";
        let (rows, rejects) = collect(csv);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1], vec!["e@example.com", "Eve"]);
        let lines: Vec<u64> = rejects.iter().map(|r| r.line).collect();
        assert_eq!(&lines[..3], &[3, 4, 5]);
        assert!(rejects[2].reason.contains("UTF-8"));
    }

    #[test]
    fn rows_that_would_fail_to_render_are_set_aside_at_ingest() {
        let csv = "email,name\n\
            two@@example.test,A\n\
            trailing.dot.@example.test,B\n\
            heidi@bücher.test,Heidi\n\
            ok@example.test,C\n";
        let mut rows = CsvRows::open(csv.as_bytes()).unwrap();
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        while let Some(row) = rows.next_row() {
            match row {
                CsvRow::Row {
                    line,
                    email,
                    values,
                } => ok.push((line, email, values)),
                CsvRow::Rejected(r) => bad.push(r),
            }
        }
        let lines: Vec<u64> = bad.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 3], "{bad:?}");
        assert!(bad.iter().all(|r| r.reason.contains("quoting")), "{bad:?}");
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].0, 4);
        assert_eq!(ok[0].1, "heidi@xn--bcher-kva.test");
        assert_eq!(ok[0].2[0], "heidi@xn--bcher-kva.test");
        // Whatever ingest lets through, rendering accepts.
        for (_, email, _) in &ok {
            assert!(mailfarm_templates::address::check_recipient(email).is_ok());
        }
    }

    #[test]
    fn an_empty_file_is_called_empty() {
        for empty in [&b""[..], b"\n", b"\r\n\r\n"] {
            let err = CsvRows::open(empty).err().expect("refused");
            assert!(matches!(err, IngestError::Empty), "{err}");
            assert!(err.to_string().contains("is empty"), "{err}");
        }
    }

    #[test]
    fn header_without_email_is_refused() {
        assert!(matches!(
            CsvRows::open(&b"name,city\nA,B\n"[..]),
            Err(IngestError::NoEmailColumn(_))
        ));
        assert!(matches!(
            CsvRows::open(&b"email,a,a\n"[..]),
            Err(IngestError::DuplicateColumn(_))
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
