//! DKIM signing (RFC 6376) of every outgoing message, keyed by the domain of its `From:`.
//!
//! Keys are `rsa-sha256` (RFC 6376, RFC 8301: 2048 bits and up) or `ed25519-sha256`
//! (RFC 8463), loaded once from PEM files by [`DkimSigner::load`]. Each message is signed with
//! relaxed/relaxed canonicalisation; the `DKIM-Signature` header is prepended to the message.
//!
//! The cryptography and canonicalisation come from `mail-auth` on its `ring` backend (RSA
//! signatures from the system's OpenSSL in a build with the `openssl-dkim` feature: see
//! `dkim_key`). The message is walked once here: that pass finds the `From:` domain (which
//! picks the key) and collects the header fields to sign, and the body after it is hashed in
//! place, so nothing is parsed twice.
//!
//! Which header fields are signed: those of the key's list (by default
//! [`DEFAULT_SIGNED_HEADERS`]) that are present in the message, every instance of each, plus
//! `From` once more than it occurs. That extra `From` is an "over-signed" null entry
//! (RFC 6376 §5.4.2): a second `From:` added in transit breaks the signature. Absent headers are
//! not claimed otherwise, so a relay that adds, say, a missing `Date:` does not break it.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256, SigningKey};

use super::dkim_key::SignerKey;
pub use super::dkim_key::RSA_SIGNER;
use mail_auth::common::headers::{Writable, Writer};
use mail_auth::dkim::canonicalize::CanonicalHeaders;
use mail_auth::dkim::{Canonicalization, Signature};
use mailfarm_templates::address::is_dns_name;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use serde::Deserialize;

/// Header fields signed when a key's configuration names none (each only when present).
pub const DEFAULT_SIGNED_HEADERS: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
];

/// Errors of DKIM key loading and message signing.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    /// One or more configured keys are unusable; every problem found is listed, not just the first.
    #[error("{} DKIM key problem(s): {}", .0.len(), join_problems(.0))]
    Keys(Vec<DkimKeyProblem>),
    /// The message has no `From:` header field, so no signing domain can be chosen.
    #[error("message has no From header")]
    MissingFrom,
    /// The message has more than one `From:` header field (RFC 5322 allows exactly one).
    #[error("message has {0} From headers")]
    MultipleFrom(usize),
    /// The `From:` header field holds no address with a domain (the raw value is kept).
    #[error("From header has no address with a domain: {0:?}")]
    FromWithoutDomain(String),
    /// A line of the header block is neither a `Name: value` field nor a folded continuation.
    #[error("malformed header line: {0:?}")]
    MalformedHeader(String),
    /// The cryptographic library refused to produce the signature.
    #[error("DKIM signing for {domain} failed: {reason}")]
    Signing {
        /// The signing domain (`d=`).
        domain: String,
        /// The library's explanation.
        reason: String,
    },
}

/// Joins key problems for [`DkimError::Keys`]'s message.
fn join_problems(problems: &[DkimKeyProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What is wrong with one configured key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimKeyProblem {
    /// The configured signing domain.
    pub domain: String,
    /// The configured selector.
    pub selector: String,
    /// The configured private key file.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for DkimKeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "domain {:?} selector {:?} key {}: {}",
            self.domain,
            self.selector,
            self.path.display(),
            self.reason
        )
    }
}

/// A DKIM signing algorithm, spelled as in the `a=` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DkimAlgorithm {
    /// RSA PKCS#1 v1.5 with SHA-256 (RFC 6376); keys of 2048 to 8192 bits.
    #[serde(rename = "rsa-sha256")]
    RsaSha256,
    /// Ed25519 over the SHA-256 of the signed data (RFC 8463).
    #[serde(rename = "ed25519-sha256")]
    Ed25519Sha256,
}

/// One signing key: which `From:` domain it signs for and where its private key is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKeyConfig {
    /// The `From:` domain this key signs for; also the `d=` tag. Matched case-insensitively and
    /// exactly (a key for `example.com` does not sign mail from `news.example.com`).
    pub domain: String,
    /// The selector (`s=`): the key record is published at `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// `"rsa-sha256"` or `"ed25519-sha256"`.
    pub algorithm: DkimAlgorithm,
    /// PEM private key: PKCS#8 (`PRIVATE KEY`) for both algorithms, or PKCS#1
    /// (`RSA PRIVATE KEY`) for RSA.
    pub private_key: PathBuf,
    /// Header fields to sign (when present); must include `From`. Defaults to
    /// [`DEFAULT_SIGNED_HEADERS`].
    #[serde(default)]
    pub headers: Option<Vec<String>>,
}

/// One loaded key with its signature template.
struct DomainKey {
    /// The private key.
    key: SignerKey,
    /// `v`, `a`, `d`, `s` and canonicalisation filled in; per-message tags are added on a clone.
    template: Signature,
    /// Header field names to sign, in configured spelling.
    headers: Vec<String>,
}

/// DKIM keys per `From:` domain; signs messages on the hot path. Cheap to share (`Arc`); all
/// methods take `&self`.
pub struct DkimSigner {
    /// Keys by lower-case domain without trailing dot.
    keys: HashMap<String, DomainKey>,
}

impl fmt::Debug for DkimSigner {
    /// Lists the domains and selectors, never key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (domain, key) in &self.keys {
            map.entry(domain, &key.template.s);
        }
        map.finish()
    }
}

impl DkimSigner {
    /// Loads every configured key. All problems (unreadable or malformed key files, a key that
    /// does not match its algorithm, bad domain/selector/header names, two keys for one domain)
    /// are collected and reported together in [`DkimError::Keys`].
    pub fn load(keys: &[DkimKeyConfig]) -> Result<Self, DkimError> {
        let mut loaded = HashMap::with_capacity(keys.len());
        let mut problems = Vec::new();
        for config in keys {
            let problem = |reason: String| DkimKeyProblem {
                domain: config.domain.clone(),
                selector: config.selector.clone(),
                path: config.private_key.clone(),
                reason,
            };
            let domain = normalise_domain(&config.domain);
            let mut reasons = Vec::new();
            if !is_dns_name(&domain) {
                reasons.push("domain is not an ASCII DNS name".to_string());
            }
            if !is_dns_name(&config.selector) {
                reasons.push("selector is not an ASCII DNS name".to_string());
            }
            let headers = match &config.headers {
                Some(list) => list.clone(),
                None => DEFAULT_SIGNED_HEADERS
                    .iter()
                    .map(|h| h.to_string())
                    .collect(),
            };
            if let Some(bad) = headers.iter().find(|h| !is_header_name(h)) {
                reasons.push(format!("{bad:?} is not a header field name"));
            }
            if !headers.iter().any(|h| h.eq_ignore_ascii_case("From")) {
                reasons.push("headers must include From".to_string());
            }
            if loaded.contains_key(&domain) {
                reasons.push("a key for this domain is already configured".to_string());
            }
            let key = match read_key(&config.private_key, config.algorithm) {
                Ok(key) => Some(key),
                Err(reason) => {
                    reasons.push(reason);
                    None
                }
            };
            match key {
                Some(key) if reasons.is_empty() => {
                    let template = Signature {
                        v: 1,
                        a: key.algorithm(),
                        d: domain.clone(),
                        s: config.selector.clone(),
                        ch: Canonicalization::Relaxed,
                        cb: Canonicalization::Relaxed,
                        ..Default::default()
                    };
                    loaded.insert(
                        domain,
                        DomainKey {
                            key,
                            template,
                            headers,
                        },
                    );
                }
                _ => problems.extend(reasons.into_iter().map(problem)),
            }
        }
        if problems.is_empty() {
            Ok(Self { keys: loaded })
        } else {
            Err(DkimError::Keys(problems))
        }
    }

    /// True when no key is configured (then [`DkimSigner::sign`] never signs).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Signs `message` (a complete RFC 5322 message with CRLF line ends) if a key exists for
    /// its `From:` domain, returning the message with a `DKIM-Signature` header prepended;
    /// `Ok(None)` when no key matches. A message without exactly one `From:` address with a
    /// domain is an error.
    pub fn sign(&self, message: &[u8]) -> Result<Option<Vec<u8>>, DkimError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.sign_at(message, now)
    }

    /// [`DkimSigner::sign`] with an explicit signing time (`t=`, seconds since the epoch).
    pub fn sign_at(&self, message: &[u8], now: u64) -> Result<Option<Vec<u8>>, DkimError> {
        // One pass over the header block: every field, and the From value.
        let (fields, body) = split_message(message)?;
        let mut from = None;
        let mut from_count = 0usize;
        for &(name, value) in &fields {
            if name.trim_ascii().eq_ignore_ascii_case(b"From") {
                from_count += 1;
                from = Some(value);
            }
        }
        let from = match (from, from_count) {
            (Some(value), 1) => value,
            (None, _) => return Err(DkimError::MissingFrom),
            (_, n) => return Err(DkimError::MultipleFrom(n)),
        };
        let Some(domain) = from_domain(from) else {
            return Err(DkimError::FromWithoutDomain(
                String::from_utf8_lossy(from).trim().to_string(),
            ));
        };
        let Some(key) = self.keys.get(&domain) else {
            return Ok(None);
        };

        // Fields to sign, in message order; h= lists them bottom-up, as CanonicalHeaders
        // hashes them (so repeated names pair with their instances the way verifiers pick).
        let mut signed = Vec::with_capacity(fields.len());
        let mut names = Vec::with_capacity(fields.len() + 1);
        for &(name, value) in &fields {
            let name_trimmed = name.trim_ascii();
            if let Some(configured) = key
                .headers
                .iter()
                .find(|h| name_trimmed.eq_ignore_ascii_case(h.as_bytes()))
            {
                signed.push((name, value));
                names.push(configured.clone());
            }
        }
        names.reverse();
        names.push("From".to_string()); // over-signed: no second From can be added

        let mut signature = key.template.clone();
        signature.t = now;
        signature.h = names;
        signature.bh = key
            .key
            .hash(Canonicalization::Relaxed.canonical_body(body, 0))
            .as_ref()
            .to_vec();
        let headers = Canonicalization::Relaxed.canonical_headers(signed);
        signature.b = key
            .key
            .sign(SignedData {
                headers,
                signature: &signature,
            })
            .map_err(|err| DkimError::Signing {
                domain: domain.clone(),
                reason: err.to_string(),
            })?;

        let mut out = Vec::with_capacity(message.len() + 512);
        signature.write(&mut out, true);
        out.extend_from_slice(message);
        Ok(Some(out))
    }
}

/// What the signature covers: the canonical signed header fields, then the canonical
/// `DKIM-Signature` field itself with an empty `b=` and no trailing CRLF (RFC 6376 §3.7).
struct SignedData<'a> {
    /// The signed header fields, canonicalised.
    headers: CanonicalHeaders<'a>,
    /// The signature being made (its `b=` still empty).
    signature: &'a Signature,
}

impl Writable for SignedData<'_> {
    fn write(self, writer: &mut impl Writer) {
        self.headers.write(writer);
        self.signature.write(writer, false);
    }
}

/// Reads and parses one PEM private key for `algorithm`; the error is a readable reason.
fn read_key(path: &Path, algorithm: DkimAlgorithm) -> Result<SignerKey, String> {
    let pem = std::fs::read(path).map_err(|err| format!("cannot read key file: {err}"))?;
    let der = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|err| format!("no PEM private key in file: {err}"))?;
    match (algorithm, der) {
        (DkimAlgorithm::RsaSha256, der @ (PrivateKeyDer::Pkcs1(_) | PrivateKeyDer::Pkcs8(_))) => {
            let checked = RsaKey::<Sha256>::from_key_der(der.clone_key())
                .map_err(|err| format!("not a usable RSA key (2048-8192 bits): {err}"))?;
            SignerKey::rsa(checked, &der)
        }
        (DkimAlgorithm::Ed25519Sha256, PrivateKeyDer::Pkcs8(der)) => {
            // "maybe unchecked" also takes PKCS#8 v1 (no public key), as `openssl genpkey` writes.
            Ed25519Key::from_pkcs8_maybe_unchecked_der(der.secret_pkcs8_der())
                .map(SignerKey::ed25519)
                .map_err(|err| format!("not a usable Ed25519 PKCS#8 key: {err}"))
        }
        (DkimAlgorithm::RsaSha256, _) => {
            Err("RSA key must be PKCS#8 or PKCS#1 (RSA PRIVATE KEY)".to_string())
        }
        (DkimAlgorithm::Ed25519Sha256, _) => {
            Err("Ed25519 key must be PKCS#8 (PRIVATE KEY)".to_string())
        }
    }
}

/// Header fields as (name, value) pairs in message order; a value is the raw text after the
/// colon up to and including the line end of its last (folded) line.
type Fields<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Splits `message` into its header fields (see [`Fields`]) and its body, which follows the
/// empty line (empty when there is none). A header line without a colon is
/// [`DkimError::MalformedHeader`].
fn split_message(message: &[u8]) -> Result<(Fields<'_>, &[u8]), DkimError> {
    let mut fields = Vec::with_capacity(24);
    let mut pos = 0;
    while pos < message.len() {
        let rest = &message[pos..];
        if rest.starts_with(b"\r\n") {
            return Ok((fields, &message[pos + 2..]));
        }
        if rest.starts_with(b"\n") {
            return Ok((fields, &message[pos + 1..]));
        }
        // The field runs to the first line end not followed by folding whitespace.
        let mut end = message.len();
        let mut search = pos;
        while let Some(nl) = message[search..].iter().position(|&b| b == b'\n') {
            let after = search + nl + 1;
            match message.get(after) {
                Some(b' ' | b'\t') => search = after,
                _ => {
                    end = after;
                    break;
                }
            }
        }
        let field = &message[pos..end];
        let Some(colon) = field.iter().position(|&b| b == b':') else {
            let line = field.split(|&b| b == b'\n').next().unwrap_or_default();
            return Err(DkimError::MalformedHeader(
                String::from_utf8_lossy(line).trim_end().to_string(),
            ));
        };
        fields.push((&field[..colon], &field[colon + 1..]));
        pos = end;
    }
    Ok((fields, &[]))
}

/// Lower-case, without surrounding whitespace or a trailing dot.
fn normalise_domain(domain: &str) -> String {
    domain.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// A header field name: printable ASCII without `:` (RFC 5322 §3.6.8).
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// The normalised domain of the first address in a `From:` value (raw, possibly folded):
/// the `<angle-addr>` if there is one, else the bare addr-spec; quoted strings and comments
/// are skipped, so `"a@b <c@d>" (x@y) <u@Example.COM>` gives `example.com`.
fn from_domain(value: &[u8]) -> Option<String> {
    let mut addr: Vec<u8> = Vec::with_capacity(64);
    let mut in_quote = false;
    let mut comment_depth = 0usize;
    let mut in_angle = false;
    let mut escaped = false;
    for &b in value {
        if escaped {
            escaped = false;
            if !in_quote && comment_depth == 0 {
                addr.push(b);
            }
            continue;
        }
        match b {
            b'\\' if in_quote || comment_depth > 0 => escaped = true,
            b'"' if comment_depth == 0 => in_quote = !in_quote,
            _ if in_quote => {}
            b'(' => comment_depth += 1,
            b')' if comment_depth > 0 => comment_depth -= 1,
            _ if comment_depth > 0 => {}
            b'<' => {
                in_angle = true;
                addr.clear();
            }
            b'>' if in_angle => break,
            // A group's display name ends at ':'; a mailbox (outside <>) ends at ',' or ';'.
            b':' if !in_angle => addr.clear(),
            b',' | b';' if !in_angle => {
                if addr.contains(&b'@') {
                    break;
                }
                addr.clear();
            }
            b'\r' | b'\n' => {}
            _ => addr.push(b),
        }
    }
    let at = addr.iter().rposition(|&b| b == b'@')?;
    let domain = std::str::from_utf8(&addr[at + 1..]).ok()?;
    let domain = normalise_domain(domain);
    if domain.is_empty() || domain.bytes().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    Some(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_domain_forms() {
        let cases: &[(&str, Option<&str>)] = &[
            (" john@Example.COM\r\n", Some("example.com")),
            (" John <john@example.com>\r\n", Some("example.com")),
            (
                " \"Doe, <J>\" <j@news.example.org.>\r\n",
                Some("news.example.org"),
            ),
            (" (comment <x@evil.test>) a@b.test\r\n", Some("b.test")),
            (
                " =?UTF-8?B?w4lsw6h2ZQ==?=\r\n\t<eleve@ecole.test>\r\n",
                Some("ecole.test"),
            ),
            (" \"quoted@local\"@d.test\r\n", Some("d.test")),
            (" a@first.test, b@second.test\r\n", Some("first.test")),
            (" Team: a@grp.test;\r\n", Some("grp.test")),
            (" undisclosed\r\n", None),
            (" <>\r\n", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                from_domain(value.as_bytes()).as_deref(),
                *want,
                "for {value:?}"
            );
        }
    }

    #[test]
    fn names() {
        assert!(is_dns_name("s2024._x.example-1.com"));
        assert!(!is_dns_name("a..b"));
        assert!(!is_dns_name("ex ample.com"));
        assert!(is_header_name("List-Unsubscribe-Post"));
        assert!(!is_header_name("Bad:Name"));
        assert!(!is_header_name(""));
    }
}
