//! The compiled campaign: templates parsed and checked once by [`MessageTemplate::compile`],
//! then rendered per recipient by [`MessageTemplate::render`] on the hot path. Two handlebars
//! registries are kept because the escape function is registry-wide: one without escaping for
//! the Subject, the text part and the List-Unsubscribe URL, one with HTML escaping for the HTML
//! part.

use std::collections::HashMap;

use handlebars::{
    no_escape, Context, Handlebars, Helper, HelperDef, JsonRender, RenderContext,
    RenderErrorReason, ScopedJson, Template,
};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::Rng;
use serde_json::{Map, Value};

use crate::address::{check_recipient, is_domain, is_dot_atom};
use crate::error::{
    RenderError, TemplateError, HTML_FILE, SUBJECT_FILE, TEXT_FILE, UNSUBSCRIBE_FILE,
};
use crate::fields::FieldCheck;
use crate::mime::{self, Mailbox, Parts};
use crate::verp::{is_campaign_id, push_base36, MAX_CAMPAIGN_ID_LEN};
use crate::{BodyTransport, MessageSettings, TemplateSources, VerpSigner};

/// Name of the helper that percent-encodes its argument for use in a URL:
/// `{{urlencode email}}`.
pub const URLENCODE_HELPER: &str = "urlencode";

/// Name under which the recipient address is always available to templates, whether or not
/// the recipient list has such a column.
const EMAIL_FIELD: &str = "email";

/// Name under which templates find the recipient's signed one-click unsubscribe link, when the
/// campaign has an `unsubscribe_base_url`: `{{unsubscribe_url}}`.
pub const UNSUBSCRIBE_URL_FIELD: &str = "unsubscribe_url";

/// Column index standing for [`UNSUBSCRIBE_URL_FIELD`] when it is not a real column.
const UNSUBSCRIBE_URL_INDEX: usize = usize::MAX - 1;

/// Longest unsubscribe base URL accepted.
const MAX_BASE_URL_LEN: usize = 400;

/// The signed unsubscribe links of a campaign with an `unsubscribe_base_url`.
#[derive(Debug)]
struct SignedUnsubscribe {
    /// Base URL without its trailing `/`.
    base: String,
    /// Whether the base is https (only then is the link announced as one-click).
    https: bool,
    /// Whether a template uses `{{unsubscribe_url}}`, so the link goes into the context.
    in_templates: bool,
}

/// A campaign's templates and header settings, compiled once and rendered per recipient.
/// Cheap to share between threads (`Send + Sync`).
#[derive(Debug)]
pub struct MessageTemplate {
    /// Subject, text body and List-Unsubscribe: values are inserted verbatim.
    plain: Handlebars<'static>,
    /// HTML body, with HTML escaping of values; `None` when there is no HTML part.
    html: Option<Handlebars<'static>>,
    has_unsubscribe: bool,
    signed_unsubscribe: Option<SignedUnsubscribe>,
    field_names: Vec<String>,
    /// For each template file, the columns it uses (to refuse short rows up front).
    uses: Vec<(&'static str, Vec<usize>)>,
    settings: MessageSettings,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    /// `<list_id>`, ready for the List-Id header.
    list_id_header: String,
    verp: VerpSigner,
}

/// One recipient's message, ready for SMTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedMessage {
    /// Signed VERP address for the envelope MAIL FROM.
    pub return_path: String,
    /// Envelope RCPT TO: the recipient's address.
    pub recipient: String,
    /// Message-ID without angle brackets, unique per recipient and per render.
    pub message_id: String,
    /// The complete RFC 5322 message, CRLF line endings, not dot-stuffed.
    pub data: Vec<u8>,
}

impl MessageTemplate {
    /// Compiles and checks a campaign's templates and settings.
    ///
    /// `field_names` are the recipient list's column names in order (normally including
    /// `email`; the recipient address is available as `{{email}}` in any case). Fails on a
    /// template syntax error, a variable that is not a column, an unknown helper, partials or
    /// decorators, or an invalid setting.
    pub fn compile(
        sources: &TemplateSources,
        settings: MessageSettings,
        field_names: Vec<String>,
        verp: VerpSigner,
    ) -> Result<Self, TemplateError> {
        check_campaign_id(&settings.campaign_id)?;
        let from =
            Mailbox::parse(&settings.from).map_err(|reason| TemplateError::InvalidAddress {
                setting: "from",
                value: settings.from.clone(),
                reason,
            })?;
        let reply_to = match &settings.reply_to {
            Some(value) => {
                Some(
                    Mailbox::parse(value).map_err(|reason| TemplateError::InvalidAddress {
                        setting: "reply_to",
                        value: value.clone(),
                        reason,
                    })?,
                )
            }
            None => None,
        };
        if settings.list_id.len() > 255 || !is_dot_atom(&settings.list_id) {
            return Err(TemplateError::InvalidSetting {
                setting: "list_id",
                value: settings.list_id.clone(),
                reason: "must be a dot-atom like weekly.acme.example, at most 255 bytes",
            });
        }
        if !is_domain(&settings.bounce_domain) {
            return Err(TemplateError::InvalidSetting {
                setting: "bounce_domain",
                value: settings.bounce_domain.clone(),
                reason: "must be a DNS domain name",
            });
        }

        let signed_base = match &settings.unsubscribe_base_url {
            Some(base) => {
                if settings.list_unsubscribe.is_some() {
                    return Err(TemplateError::InvalidSetting {
                        setting: "list_unsubscribe",
                        value: settings.list_unsubscribe.clone().unwrap_or_default(),
                        reason: "leave it out when unsubscribe_base_url is set: the signed links \
                                 replace it",
                    });
                }
                Some(check_base_url(base)?)
            }
            None => None,
        };

        let mut columns: HashMap<&str, usize> = HashMap::with_capacity(field_names.len() + 2);
        for (index, name) in field_names.iter().enumerate() {
            if columns.insert(name.as_str(), index).is_some() {
                return Err(TemplateError::DuplicateField(name.clone()));
            }
        }
        // The address is always present, even without an `email` column: give it an index no
        // row can be short of.
        columns.entry(EMAIL_FIELD).or_insert(usize::MAX);
        // The signed link wins over a column of the same name; without a base URL, a column
        // called `unsubscribe_url` is used as it is.
        if signed_base.is_some() {
            columns.insert(UNSUBSCRIBE_URL_FIELD, UNSUBSCRIBE_URL_INDEX);
        } else {
            columns
                .entry(UNSUBSCRIBE_URL_FIELD)
                .or_insert(UNSUBSCRIBE_URL_INDEX);
        }

        let mut plain = new_registry();
        plain.register_escape_fn(no_escape);
        let mut uses = Vec::with_capacity(4);
        add_template(
            &mut plain,
            SUBJECT_FILE,
            &sources.subject,
            &columns,
            &mut uses,
        )?;
        add_template(&mut plain, TEXT_FILE, &sources.text, &columns, &mut uses)?;
        if let Some(source) = &settings.list_unsubscribe {
            check_unsubscribe_source(source)?;
            add_template(&mut plain, UNSUBSCRIBE_FILE, source, &columns, &mut uses)?;
        }
        let html = match &sources.html {
            Some(source) => {
                let mut html = new_registry();
                add_template(&mut html, HTML_FILE, source, &columns, &mut uses)?;
                Some(html)
            }
            None => None,
        };
        let uses_signed_link = uses
            .iter()
            .any(|(_, used)| used.contains(&UNSUBSCRIBE_URL_INDEX));
        if uses_signed_link && signed_base.is_none() {
            return Err(TemplateError::InvalidSetting {
                setting: "unsubscribe_base_url",
                value: String::new(),
                reason: "the templates use {{unsubscribe_url}}: set unsubscribe_base_url in \
                         campaign.toml to the farm's web node (https://...)",
            });
        }
        let signed_unsubscribe = signed_base.map(|(base, https)| SignedUnsubscribe {
            base,
            https,
            in_templates: uses_signed_link,
        });
        // Only real columns matter for the short-row check.
        for (_, used) in &mut uses {
            used.retain(|&index| index < field_names.len());
        }

        Ok(MessageTemplate {
            plain,
            html,
            has_unsubscribe: settings.list_unsubscribe.is_some(),
            signed_unsubscribe,
            uses,
            list_id_header: format!("<{}>", settings.list_id),
            field_names,
            settings,
            from,
            reply_to,
            verp,
        })
    }

    /// The settings the template was compiled with.
    pub fn settings(&self) -> &MessageSettings {
        &self.settings
    }

    /// The recipient list's column names, as given to [`MessageTemplate::compile`].
    pub fn field_names(&self) -> &[String] {
        &self.field_names
    }

    /// Renders the complete message for one recipient.
    ///
    /// `values[i]` belongs to `field_names[i]`; a shorter `values` leaves the trailing fields
    /// absent (not empty), and any template that uses an absent field fails for this recipient
    /// with [`RenderError::MissingField`]. `email` is the envelope recipient and is also the
    /// `{{email}}` value.
    pub fn render(
        &self,
        recipient_id: u64,
        email: &str,
        values: &[String],
    ) -> Result<RenderedMessage, RenderError> {
        self.render_for(recipient_id, email, values, BodyTransport::SevenBit)
    }

    /// [`MessageTemplate::render`], with the parts written for `transport`: the same message
    /// text, encoded for what the receiving server accepts.
    pub fn render_for(
        &self,
        recipient_id: u64,
        email: &str,
        values: &[String],
        transport: BodyTransport,
    ) -> Result<RenderedMessage, RenderError> {
        if values.len() > self.field_names.len() {
            return Err(RenderError::TooManyValues {
                got: values.len(),
                expected: self.field_names.len(),
            });
        }
        if values.len() < self.field_names.len() {
            self.check_present(values.len())?;
        }
        check_recipient(email).map_err(|reason| RenderError::InvalidRecipient {
            email: truncate(email, 254).to_owned(),
            reason,
        })?;

        let mut map = Map::new();
        for (name, value) in self.field_names.iter().zip(values) {
            map.insert(name.clone(), Value::String(value.clone()));
        }
        map.insert(EMAIL_FIELD.to_owned(), Value::String(email.to_owned()));
        let signed_url = self.signed_unsubscribe.as_ref().map(|signed| {
            self.verp.unsubscribe_signer().url(
                &signed.base,
                &self.settings.campaign_id,
                &self.settings.list_id,
                recipient_id,
            )
        });
        if let (Some(url), Some(signed)) = (&signed_url, &self.signed_unsubscribe) {
            if signed.in_templates {
                map.insert(UNSUBSCRIBE_URL_FIELD.to_owned(), Value::String(url.clone()));
            }
        }
        let context = Context::from(Value::Object(map));

        let subject = self.render_one(&self.plain, SUBJECT_FILE, &context)?;
        let text = self.render_one(&self.plain, TEXT_FILE, &context)?;
        let html = match &self.html {
            Some(registry) => Some(self.render_one(registry, HTML_FILE, &context)?),
            None => None,
        };
        let unsubscribe = if let (Some(url), Some(signed)) = (signed_url, &self.signed_unsubscribe)
        {
            let mailto = self.verp.unsubscribe_signer().mailto_address(
                &self.settings.campaign_id,
                recipient_id,
                &self.settings.bounce_domain,
            );
            Some((
                vec![url, format!("mailto:{mailto}?subject=unsubscribe")],
                signed.https,
            ))
        } else if self.has_unsubscribe {
            let rendered = self.render_one(&self.plain, UNSUBSCRIBE_FILE, &context)?;
            let (url, one_click) = mime::unsubscribe_url(&rendered).map_err(|reason| {
                RenderError::InvalidUnsubscribe {
                    value: truncate(&rendered, 200).to_owned(),
                    reason,
                }
            })?;
            Some((vec![url], one_click))
        } else {
            None
        };

        let message_id = self.message_id(recipient_id);
        let data = mime::build(Parts {
            from: &self.from,
            reply_to: self.reply_to.as_ref(),
            to: email,
            subject: &mime::one_line(&subject),
            message_id: &message_id,
            list_id: &self.list_id_header,
            unsubscribe,
            text: mime::clean_body(text),
            html: html.map(mime::clean_body),
            transport,
        });
        Ok(RenderedMessage {
            return_path: self.verp.return_path(
                &self.settings.campaign_id,
                recipient_id,
                &self.settings.bounce_domain,
            ),
            recipient: email.to_owned(),
            message_id,
            data,
        })
    }

    /// Fails if a template uses a column at or past `present` (the row's length).
    fn check_present(&self, present: usize) -> Result<(), RenderError> {
        for (file, used) in &self.uses {
            if let Some(&index) = used.iter().find(|&&index| index >= present) {
                return Err(RenderError::MissingField {
                    file,
                    field: self.field_names[index].clone(),
                });
            }
        }
        Ok(())
    }

    fn render_one(
        &self,
        registry: &Handlebars<'static>,
        file: &'static str,
        context: &Context,
    ) -> Result<String, RenderError> {
        registry
            .render_with_context(file, context)
            .map_err(|error| match error.reason() {
                RenderErrorReason::MissingVariable(Some(name))
                    if self.field_names.iter().any(|f| f == name) =>
                {
                    RenderError::MissingField {
                        file,
                        field: name.clone(),
                    }
                }
                reason => RenderError::Template {
                    file,
                    line: error.line_no,
                    column: error.column_no,
                    reason: reason.to_string(),
                },
            })
    }

    /// `<campaign>.<recipient base36>.<64 random bits hex>@<From domain>`.
    fn message_id(&self, recipient_id: u64) -> String {
        let domain = self.from.domain();
        let mut id = String::with_capacity(self.settings.campaign_id.len() + domain.len() + 34);
        id.push_str(&self.settings.campaign_id);
        id.push('.');
        push_base36(&mut id, recipient_id);
        id.push('.');
        let random: u64 = rand::thread_rng().gen();
        id.push_str(&format!("{random:016x}"));
        id.push('@');
        id.push_str(domain);
        id
    }
}

fn check_campaign_id(id: &str) -> Result<(), TemplateError> {
    if is_campaign_id(id) {
        return Ok(());
    }
    let reason = if id.is_empty() {
        "empty"
    } else if id.len() > MAX_CAMPAIGN_ID_LEN {
        "longer than 31 characters (the VERP return path must fit in 64 octets)"
    } else {
        "only letters, digits, '-' and '_' are allowed"
    };
    Err(TemplateError::InvalidCampaignId {
        id: id.to_owned(),
        reason,
    })
}

/// Checks the web node's base URL: http(s), a host, no query or fragment, nothing that needs
/// escaping. Returns it without its trailing `/`, and whether it is https.
fn check_base_url(base: &str) -> Result<(String, bool), TemplateError> {
    let bad = |reason| TemplateError::InvalidSetting {
        setting: "unsubscribe_base_url",
        value: base.to_owned(),
        reason,
    };
    let trimmed = base.trim().trim_end_matches('/');
    let lower = trimmed.to_ascii_lowercase();
    let (https, rest) = if let Some(rest) = lower.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = lower.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(bad(
            "must start with https:// (or http:// for a test on loopback)",
        ));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("has no host"));
    }
    if trimmed.len() > MAX_BASE_URL_LEN {
        return Err(bad("longer than 400 bytes"));
    }
    if !trimmed
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && !b"<>\"\\^`{|}?#".contains(&b))
    {
        return Err(bad(
            "may hold only printable ASCII, without spaces, a query (?) or a fragment (#)",
        ));
    }
    Ok((trimmed.to_owned(), https))
}

/// The List-Unsubscribe source must show its scheme, unless it comes whole from a variable.
fn check_unsubscribe_source(source: &str) -> Result<(), TemplateError> {
    let start = source.trim_start();
    let ok = start.starts_with("{{")
        || ["https://", "http://", "mailto:"].iter().any(|scheme| {
            start.len() >= scheme.len()
                && start.as_bytes()[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
        });
    if ok {
        Ok(())
    } else {
        Err(TemplateError::InvalidSetting {
            setting: "list_unsubscribe",
            value: source.to_owned(),
            reason: "must start with https://, http:// or mailto:",
        })
    }
}

fn new_registry() -> Handlebars<'static> {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    registry.register_helper(URLENCODE_HELPER, Box::new(UrlEncode));
    registry
}

fn add_template(
    registry: &mut Handlebars<'static>,
    file: &'static str,
    source: &str,
    columns: &HashMap<&str, usize>,
    uses: &mut Vec<(&'static str, Vec<usize>)>,
) -> Result<(), TemplateError> {
    let template = Template::compile_with_name(source, file.to_owned()).map_err(|error| {
        let (line, column) = error.pos().unzip();
        TemplateError::Syntax {
            file,
            line,
            column,
            reason: error.reason().to_string(),
        }
    })?;
    uses.push((file, FieldCheck::run(file, &template, columns)?));
    registry.register_template(file, template);
    Ok(())
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `{{urlencode value}}`: percent-encodes everything but RFC 3986 unreserved characters.
struct UrlEncode;

impl HelperDef for UrlEncode {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, handlebars::RenderError> {
        let param = h.param(0).ok_or(RenderErrorReason::ParamNotFoundForIndex(
            URLENCODE_HELPER,
            0,
        ))?;
        if r.strict_mode() && param.is_value_missing() {
            return Err(RenderErrorReason::MissingVariable(
                param.relative_path().map(ToOwned::to_owned),
            )
            .into());
        }
        let text = param.value().render();
        // RFC 3986 unreserved characters stay; every other byte is percent-encoded.
        const ENCODED: &AsciiSet = &NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        let out = utf8_percent_encode(&text, ENCODED).to_string();
        Ok(ScopedJson::Derived(Value::String(out)))
    }
}
