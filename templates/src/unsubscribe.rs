//! Signed unsubscribe tokens. Every message carries a link (and a `mailto:`) that unsubscribes
//! its recipient with one click; anyone who can make such a link for another recipient can
//! unsubscribe people at will, so the link is signed like the VERP return path, under a key of
//! its own derived from the VERP key (`HMAC(verp_key, "mailfarm unsubscribe v1")`), and names
//! campaign, list and recipient id only: never the address.
//!
//! Two forms:
//! - the **URL token**, the last path segment of `<base>/u/<token>`: base64url (no padding) of
//!   `version | len | campaign | len | list | recipient id (u64 BE) | check (2) | tag (16)`,
//!   where `check` is an unkeyed SHA-256 prefix of what precedes it (it tells an altered or
//!   damaged token from one made whole by someone without the key) and `tag` a 128-bit
//!   HMAC-SHA256;
//! - the **mailto local part**, `u-<campaign>-<recipient id base36>-<80-bit HMAC base32>` at the
//!   bounce domain, shaped like the VERP return path so it fits in 64 octets. It does not name
//!   the list: the coordinator knows each campaign's list.

use ring::{digest, hmac};

use crate::address::is_domain;
use crate::error::UnsubscribeError;
use crate::verp::{is_campaign_id, parse_base32_sig, parse_base36, SIG_BYTES, SIG_CHARS};

/// Label of the key derivation: the unsubscribe key is `HMAC-SHA256(verp_key, label)`.
pub const UNSUBSCRIBE_KEY_LABEL: &[u8] = b"mailfarm unsubscribe v1";
/// Path prefix of the one-click endpoint: links are `<base>/u/<token>`.
pub const UNSUBSCRIBE_PATH: &str = "/u/";
/// Version byte of the URL tokens this code makes.
const URL_VERSION: u8 = 1;
/// Bytes of the truncated HMAC in URL tokens: 128 bits.
const URL_TAG_BYTES: usize = 16;
/// Bytes of the unkeyed check in URL tokens.
const URL_CHECK_BYTES: usize = 2;
/// Longest URL token accepted (characters); a real one is far shorter (the list id is at most
/// 255 bytes).
const MAX_URL_TOKEN_CHARS: usize = 512;
/// Prefix of the mailto local part.
const MAILTO_PREFIX: &str = "u-";
/// Domain separation of the two signed forms.
const URL_CONTEXT: &[u8] = b"mailfarm-unsubscribe-url-v1\0";
const MAILTO_CONTEXT: &[u8] = b"mailfarm-unsubscribe-mailto-v1\0";

/// What a verified unsubscribe token names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnsubscribeTarget {
    /// Campaign id the message belonged to.
    pub campaign_id: String,
    /// List id (`List-Id` value) the recipient leaves; `None` for the mailto form, whose list
    /// the coordinator looks up from the campaign.
    pub list_id: Option<String>,
    /// Recipient id within the campaign.
    pub recipient_id: u64,
}

/// Makes and checks unsubscribe tokens with the farm's unsubscribe key.
#[derive(Clone)]
pub struct UnsubscribeSigner {
    key: hmac::Key,
    /// Key for comparing truncated tags in constant time (double-HMAC comparison).
    compare_key: hmac::Key,
}

impl std::fmt::Debug for UnsubscribeSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnsubscribeSigner { .. }")
    }
}

/// Derives the unsubscribe key from the farm's VERP key. A web node needs only this key, not
/// the VERP key.
pub fn derive_unsubscribe_key(verp_key: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, verp_key);
    let tag = hmac::sign(&key, UNSUBSCRIBE_KEY_LABEL);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

impl UnsubscribeSigner {
    /// A signer from the derived unsubscribe key (see [`derive_unsubscribe_key`]).
    pub fn new(unsubscribe_key: &[u8]) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, unsubscribe_key);
        let derived = hmac::sign(&key, b"mailfarm-unsubscribe-compare-key");
        let compare_key = hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref());
        UnsubscribeSigner { key, compare_key }
    }

    /// A signer from the farm's VERP key, deriving the unsubscribe key.
    pub fn from_verp_key(verp_key: &[u8]) -> Self {
        Self::new(&derive_unsubscribe_key(verp_key))
    }

    /// The URL token for one recipient. `campaign_id` and `list_id` are expected valid (as
    /// [`crate::MessageTemplate::compile`] checks); both are at most 255 bytes.
    pub fn url_token(&self, campaign_id: &str, list_id: &str, recipient_id: u64) -> String {
        let campaign = &campaign_id.as_bytes()[..campaign_id.len().min(255)];
        let list = &list_id.as_bytes()[..list_id.len().min(255)];
        let mut raw = Vec::with_capacity(3 + campaign.len() + list.len() + 8 + 18);
        raw.push(URL_VERSION);
        raw.push(campaign.len() as u8);
        raw.extend_from_slice(campaign);
        raw.push(list.len() as u8);
        raw.extend_from_slice(list);
        raw.extend_from_slice(&recipient_id.to_be_bytes());
        let check = url_check(&raw);
        raw.extend_from_slice(&check);
        let tag = self.url_tag(&raw[..raw.len() - URL_CHECK_BYTES]);
        raw.extend_from_slice(&tag);
        base64url(&raw)
    }

    /// The full one-click URL: `<base>/u/<token>` (`base` without its trailing `/`).
    pub fn url(&self, base: &str, campaign_id: &str, list_id: &str, recipient_id: u64) -> String {
        let mut out = base.trim_end_matches('/').to_owned();
        out.push_str(UNSUBSCRIBE_PATH);
        out.push_str(&self.url_token(campaign_id, list_id, recipient_id));
        out
    }

    /// Checks a URL token and returns what it names. Every kind of bad token has its own
    /// [`UnsubscribeError`] variant, so a server can count them apart.
    pub fn verify_url_token(&self, token: &str) -> Result<UnsubscribeTarget, UnsubscribeError> {
        if token.is_empty() {
            return Err(UnsubscribeError::Truncated);
        }
        if token.len() > MAX_URL_TOKEN_CHARS {
            return Err(UnsubscribeError::Malformed("token too long"));
        }
        let (raw, canonical) = unbase64url(token)?;
        let (&version, rest) = raw.split_first().ok_or(UnsubscribeError::Truncated)?;
        if version != URL_VERSION {
            return Err(UnsubscribeError::Unknown { version });
        }
        let (campaign, rest) = take_prefixed(rest)?;
        let (list, rest) = take_prefixed(rest)?;
        if rest.len() < 8 + URL_CHECK_BYTES + URL_TAG_BYTES {
            return Err(UnsubscribeError::Truncated);
        }
        if rest.len() > 8 + URL_CHECK_BYTES + URL_TAG_BYTES {
            return Err(UnsubscribeError::Malformed("trailing data"));
        }
        if !canonical {
            return Err(UnsubscribeError::Malformed("non-canonical base64url"));
        }
        let signed_len = raw.len() - URL_CHECK_BYTES - URL_TAG_BYTES;
        let (signed, tail) = raw.split_at(signed_len);
        let (check, tag) = tail.split_at(URL_CHECK_BYTES);
        if url_check(signed)[..] != check[..] {
            return Err(UnsubscribeError::Tampered);
        }
        let expected = self.url_tag(signed);
        self.compare(tag, &expected)?;
        let campaign_id = std::str::from_utf8(campaign)
            .ok()
            .filter(|c| is_campaign_id(c))
            .ok_or(UnsubscribeError::Malformed("invalid campaign id"))?;
        let list_id = std::str::from_utf8(list)
            .map_err(|_| UnsubscribeError::Malformed("list id is not UTF-8"))?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&rest[..8]);
        Ok(UnsubscribeTarget {
            campaign_id: campaign_id.to_owned(),
            list_id: Some(list_id.to_owned()),
            recipient_id: u64::from_be_bytes(id),
        })
    }

    /// The signed mailto address `u-<campaign>-<id>-<sig>@<bounce_domain>`, for the `in` role.
    pub fn mailto_address(&self, campaign_id: &str, recipient_id: u64, domain: &str) -> String {
        let signature = self.mailto_sig(campaign_id, recipient_id);
        crate::verp::signed_address(MAILTO_PREFIX, campaign_id, recipient_id, &signature, domain)
    }

    /// Checks a mailto recipient (with or without `<>`) that must be at `bounce_domain`
    /// (compared without regard to case) and returns what it names.
    pub fn verify_mailto(
        &self,
        address: &str,
        bounce_domain: &str,
    ) -> Result<UnsubscribeTarget, UnsubscribeError> {
        let (local, domain) =
            crate::verp::split_signed_address(address).map_err(UnsubscribeError::Malformed)?;
        if !is_domain(domain) || !domain.eq_ignore_ascii_case(bounce_domain.trim_end_matches('.')) {
            return Err(UnsubscribeError::WrongDomain);
        }
        let rest = local
            .strip_prefix(MAILTO_PREFIX)
            .ok_or(UnsubscribeError::Malformed(
                "local part does not start with u-",
            ))?;
        let (rest, sig_text) = rest.rsplit_once('-').ok_or(UnsubscribeError::Truncated)?;
        let (campaign_id, id_text) = rest.rsplit_once('-').ok_or(UnsubscribeError::Truncated)?;
        if sig_text.len() < SIG_CHARS {
            return Err(UnsubscribeError::Truncated);
        }
        if !is_campaign_id(campaign_id) {
            return Err(UnsubscribeError::Malformed("invalid campaign id"));
        }
        let recipient_id =
            parse_base36(id_text).ok_or(UnsubscribeError::Malformed("invalid recipient id"))?;
        let sig =
            parse_base32_sig(sig_text).ok_or(UnsubscribeError::Malformed("invalid signature"))?;
        self.compare(&sig, &self.mailto_sig(campaign_id, recipient_id))?;
        Ok(UnsubscribeTarget {
            campaign_id: campaign_id.to_owned(),
            list_id: None,
            recipient_id,
        })
    }

    fn compare(&self, got: &[u8], expected: &[u8]) -> Result<(), UnsubscribeError> {
        let expected_mac = hmac::sign(&self.compare_key, expected);
        hmac::verify(&self.compare_key, got, expected_mac.as_ref())
            .map_err(|_| UnsubscribeError::Forged)
    }

    fn url_tag(&self, signed: &[u8]) -> [u8; URL_TAG_BYTES] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(URL_CONTEXT);
        ctx.update(signed);
        let tag = ctx.sign();
        let mut out = [0u8; URL_TAG_BYTES];
        out.copy_from_slice(&tag.as_ref()[..URL_TAG_BYTES]);
        out
    }

    fn mailto_sig(&self, campaign_id: &str, recipient_id: u64) -> [u8; SIG_BYTES] {
        crate::verp::address_signature(&self.key, MAILTO_CONTEXT, campaign_id, recipient_id)
    }
}

fn url_check(signed: &[u8]) -> [u8; URL_CHECK_BYTES] {
    let d = digest::digest(&digest::SHA256, signed);
    [d.as_ref()[0], d.as_ref()[1]]
}

/// Splits a length-prefixed field off `bytes`.
fn take_prefixed(bytes: &[u8]) -> Result<(&[u8], &[u8]), UnsubscribeError> {
    let (&len, rest) = bytes.split_first().ok_or(UnsubscribeError::Truncated)?;
    let len = usize::from(len);
    if rest.len() < len {
        return Err(UnsubscribeError::Truncated);
    }
    Ok(rest.split_at(len))
}

/// Base64url without padding (RFC 4648 §5), decoding tolerant of non-zero unused bits so
/// that the caller can tell a non-canonical token from a truncated one.
const BASE64URL: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    BASE64URL.encode(bytes)
}

/// Base64url without padding: a character outside the alphabet is malformed, a length that
/// cannot be whole is truncated. Also says whether the unused bits were zero: the caller refuses
/// a non-canonical text (so that no two strings decode to the same bytes) after telling a
/// truncated token by its structure.
fn unbase64url(text: &str) -> Result<(Vec<u8>, bool), UnsubscribeError> {
    use base64::Engine as _;
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(UnsubscribeError::Malformed("not base64url"));
    }
    if text.len() % 4 == 1 {
        return Err(UnsubscribeError::Truncated);
    }
    let out = BASE64URL
        .decode(text)
        .map_err(|_| UnsubscribeError::Malformed("not base64url"))?;
    let canonical = BASE64URL.encode(&out) == text;
    Ok((out, canonical))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips_and_is_canonical() {
        for len in 0..40usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = base64url(&bytes);
            assert_eq!(unbase64url(&text), Ok((bytes, true)), "{text}");
        }
        // "AB" decodes to one byte only when the unused bits are zero.
        assert_eq!(unbase64url("AA"), Ok((vec![0], true)));
        assert_eq!(unbase64url("AB"), Ok((vec![0], false)));
        assert_eq!(unbase64url("A"), Err(UnsubscribeError::Truncated));
    }

    #[test]
    fn derived_key_differs_from_verp_key() {
        let key = derive_unsubscribe_key(b"verp key");
        assert_ne!(&key[..8], b"verp key");
        assert_eq!(key, derive_unsubscribe_key(b"verp key"));
        assert_ne!(key, derive_unsubscribe_key(b"verp kez"));
    }

    #[test]
    fn longest_mailto_local_part_fits_in_64_octets() {
        let signer = UnsubscribeSigner::from_verp_key(b"k");
        let campaign = "c".repeat(crate::MAX_CAMPAIGN_ID_LEN);
        let address = signer.mailto_address(&campaign, u64::MAX, "b.example");
        assert_eq!(address.split('@').next().map(str::len), Some(64));
    }
}
