//! Per-recipient rendering of campaign templates into complete MIME messages, with signed VERP
//! return paths.
//!
//! A smurf receives a campaign's templates once and compiles them with
//! [`MessageTemplate::compile`], which also finds the mistakes that would fail every recipient
//! (syntax errors, variables that are not columns). It then calls [`MessageTemplate::render`]
//! for each recipient on the hot path, which produces the envelope addresses and the RFC 5322
//! message. [`VerpSigner`] makes and checks the return paths that bounces come back to.
//!
//! Templates are handlebars in strict mode. Values are inserted verbatim in the Subject and the
//! text part and HTML-escaped in the HTML part. The helper `{{urlencode x}}` percent-encodes a
//! value for a URL.

#![warn(clippy::unwrap_used)]

pub mod address;
mod bundle;
mod error;
mod fields;
mod mime;
mod render;
mod unsubscribe;
mod verp;

pub use bundle::compile_bundle;
pub use error::{
    RenderError, TemplateError, UnsubscribeError, VerpError, HTML_FILE, SUBJECT_FILE, TEXT_FILE,
    UNSUBSCRIBE_FILE,
};
pub use render::{MessageTemplate, RenderedMessage, UNSUBSCRIBE_URL_FIELD, URLENCODE_HELPER};
pub use unsubscribe::{
    derive_unsubscribe_key, UnsubscribeSigner, UnsubscribeTarget, UNSUBSCRIBE_KEY_LABEL,
    UNSUBSCRIBE_PATH,
};
pub use verp::{VerpSigner, VerpToken, MAX_CAMPAIGN_ID_LEN};

/// How the text and HTML parts travel: what the receiving server accepts decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BodyTransport {
    /// For any server: quoted-printable (or 7bit when the text needs no encoding).
    #[default]
    SevenBit,
    /// For a server that announced 8BITMIME (RFC 6152): each part as it is, `8bit` (or `7bit`
    /// when it is ASCII), CRLF line endings, when every line fits in 998 octets; a part with a
    /// longer line falls back to quoted-printable. Saves the encoding, about two thirds of a
    /// render (docs/profile.md), and the bytes it adds.
    EightBit,
}

/// Template sources as read from a campaign folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSources {
    /// Handlebars source of the Subject header (from campaign.toml).
    pub subject: String,
    /// Handlebars source of the text/plain part (body.txt.hbs).
    pub text: String,
    /// Handlebars source of the text/html part (body.html.hbs), if the campaign has one.
    pub html: Option<String>,
}

/// Per-campaign header settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSettings {
    /// Campaign id: 1 to [`MAX_CAMPAIGN_ID_LEN`] of `[A-Za-z0-9_-]`.
    pub campaign_id: String,
    /// From header: `Display Name <addr@domain>` or `addr@domain`; the display name may be
    /// non-ASCII or quoted.
    pub from: String,
    /// Reply-To header, same syntax as `from`.
    pub reply_to: Option<String>,
    /// List identifier, e.g. `weekly.acme.example`, sent as `List-Id: <weekly.acme.example>`.
    pub list_id: String,
    /// Domain of the VERP return path.
    pub bounce_domain: String,
    /// Handlebars source of the List-Unsubscribe URL (https, http or mailto), if any. Excludes
    /// `unsubscribe_base_url`.
    pub list_unsubscribe: Option<String>,
    /// Base URL of the farm's web node (`https://unsub.acme.example`). When set, every message
    /// gets signed unsubscribe links: `List-Unsubscribe: <base/u/TOKEN>, <mailto:u-...@bounce
    /// domain>`, RFC 8058 one-click when the base is https, and `{{unsubscribe_url}}` in the
    /// templates.
    pub unsubscribe_base_url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_template_is_shareable_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<MessageTemplate>();
        assert_send_sync::<VerpSigner>();
        assert_send_sync::<UnsubscribeSigner>();
    }
}
