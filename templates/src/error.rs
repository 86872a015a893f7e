//! Typed errors of the crate. Launch errors ([`TemplateError`]) stop a campaign before any mail
//! leaves, per-recipient errors ([`RenderError`]) fail one recipient while the others go on, and
//! [`VerpError`] tells a bounce handler why an address is not one of ours; a daemon logs, counts
//! and reacts to each kind differently, so they are kept apart.

use std::fmt;

use thiserror::Error;

/// Template file name of the Subject header source (from campaign.toml).
pub const SUBJECT_FILE: &str = "subject";
/// Template file name of the plain text body.
pub const TEXT_FILE: &str = "body.txt.hbs";
/// Template file name of the HTML body.
pub const HTML_FILE: &str = "body.html.hbs";
/// Template file name of the List-Unsubscribe source (from campaign.toml).
pub const UNSUBSCRIBE_FILE: &str = "list_unsubscribe";

/// Formats a position in a template file: `file`, `file:line` or `file:line:column`.
struct Location<'a> {
    file: &'a str,
    line: Option<usize>,
    column: Option<usize>,
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "{}:{line}:{column}", self.file),
            (Some(line), None) => write!(f, "{}:{line}", self.file),
            _ => f.write_str(self.file),
        }
    }
}

fn at<'a>(file: &'a str, line: &Option<usize>, column: &Option<usize>) -> Location<'a> {
    Location {
        file,
        line: *line,
        column: *column,
    }
}

/// A campaign that cannot be launched: a template does not compile or a setting is invalid.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// A template has a handlebars syntax error.
    #[error("{}: {reason}", at(.file, .line, .column))]
    Syntax {
        /// Template file, one of the `*_FILE` constants.
        file: &'static str,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// What the parser objected to.
        reason: String,
    },
    /// A template uses a variable that is not a column of the recipient list, so every
    /// recipient would fail.
    #[error("{}: unknown field `{name}`: the recipient list has no such column", at(.file, .line, .column))]
    UnknownField {
        /// Template file, one of the `*_FILE` constants.
        file: &'static str,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// The variable as written in the template.
        name: String,
    },
    /// A template uses a helper that does not exist.
    #[error("{}: unknown helper `{name}`", at(.file, .line, .column))]
    UnknownHelper {
        /// Template file, one of the `*_FILE` constants.
        file: &'static str,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// The helper name.
        name: String,
    },
    /// A template uses a handlebars feature this engine does not offer (partials, decorators).
    #[error("{}: {what} are not supported in campaign templates", at(.file, .line, .column))]
    Unsupported {
        /// Template file, one of the `*_FILE` constants.
        file: &'static str,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// The feature, plural ("partials").
        what: &'static str,
    },
    /// The campaign id is not 1 to [`crate::MAX_CAMPAIGN_ID_LEN`] of `[A-Za-z0-9_-]`.
    #[error("invalid campaign id {id:?}: {reason}")]
    InvalidCampaignId {
        /// The id as given.
        id: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The From or Reply-To setting is not a usable address.
    #[error("invalid {setting} address {value:?}: {reason}")]
    InvalidAddress {
        /// `from` or `reply_to`.
        setting: &'static str,
        /// The value as given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Another setting (list_id, bounce_domain, list_unsubscribe) is invalid.
    #[error("invalid {setting} {value:?}: {reason}")]
    InvalidSetting {
        /// The setting's name.
        setting: &'static str,
        /// The value as given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The recipient list names the same column twice.
    #[error("the recipient list has the column `{0}` twice")]
    DuplicateField(String),
}

/// One recipient's message could not be rendered; other recipients are not affected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// A template uses a field this recipient's row does not have (the row is shorter than the
    /// header).
    #[error(
        "{file} uses field `{field}`, which this recipient's row does not have (row too short)"
    )]
    MissingField {
        /// The template file that uses it.
        file: &'static str,
        /// The field name.
        field: String,
    },
    /// The row has more values than the recipient list has columns.
    #[error("recipient row has {got} values but the recipient list has {expected} columns")]
    TooManyValues {
        /// Values in the row.
        got: usize,
        /// Columns of the list.
        expected: usize,
    },
    /// The recipient address cannot be used in an envelope or a To header.
    #[error("invalid recipient address {email:?}: {reason}")]
    InvalidRecipient {
        /// The address as given (control characters escaped by Debug).
        email: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The rendered List-Unsubscribe value is unusable.
    #[error("{UNSUBSCRIBE_FILE}: rendered value {value:?} is unusable: {reason}")]
    InvalidUnsubscribe {
        /// The rendered value, cut to 200 bytes.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Handlebars failed while rendering for this recipient.
    #[error("{}: {reason}", at(.file, .line, .column))]
    Template {
        /// Template file, one of the `*_FILE` constants.
        file: &'static str,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// What went wrong.
        reason: String,
    },
}

/// An address given to [`crate::VerpSigner::verify`] is not a valid return path of ours.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VerpError {
    /// The address is not shaped like a VERP return path (`b-<campaign>-<id>-<sig>@<domain>`).
    #[error("not a VERP return path: {0}")]
    Malformed(&'static str),
    /// The address is well formed but its signature does not match: forged or altered.
    #[error("VERP signature does not match (forged or altered address)")]
    BadSignature,
    /// The address is for another bounce domain than the expected one.
    #[error("VERP address is for domain {got:?}, expected {expected:?}")]
    WrongDomain {
        /// Domain of the address.
        got: String,
        /// Domain that was expected.
        expected: String,
    },
}

/// A token given to [`crate::UnsubscribeSigner`] is not a valid unsubscribe token of ours. The
/// kinds are kept apart so that a web node can count them: a burst of `Forged` is an attack, a
/// trickle of `Truncated` is mail clients breaking long links.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum UnsubscribeError {
    /// Not shaped like a token: characters outside the alphabet, trailing data, a field that
    /// does not parse.
    #[error("not an unsubscribe token: {0}")]
    Malformed(&'static str),
    /// The token ends early: characters were lost (a link cut by a mail client).
    #[error("unsubscribe token is truncated")]
    Truncated,
    /// The token's integrity check fails: it was altered (or damaged) after it was made.
    #[error("unsubscribe token was altered")]
    Tampered,
    /// The token is well formed and whole but its signature does not match: made by someone
    /// without the farm's key.
    #[error("unsubscribe token signature does not match (forged)")]
    Forged,
    /// The token is of a version this farm does not issue.
    #[error("unknown unsubscribe token version {version}")]
    Unknown {
        /// The version byte found.
        version: u8,
    },
    /// A mailto token for another domain than the bounce domain.
    #[error("unsubscribe address is not at the bounce domain")]
    WrongDomain,
}

impl UnsubscribeError {
    /// A short stable name for counters and logs: `malformed`, `truncated`, `tampered`,
    /// `forged`, `unknown`, `wrong_domain`.
    pub fn kind(&self) -> &'static str {
        match self {
            UnsubscribeError::Malformed(_) => "malformed",
            UnsubscribeError::Truncated => "truncated",
            UnsubscribeError::Tampered => "tampered",
            UnsubscribeError::Forged => "forged",
            UnsubscribeError::Unknown { .. } => "unknown",
            UnsubscribeError::WrongDomain => "wrong_domain",
        }
    }
}
