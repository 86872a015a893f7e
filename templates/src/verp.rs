//! Signed VERP return paths. Each message gets an envelope sender that names its campaign and
//! recipient, so a bounce tells which recipient failed; the HMAC in it lets the bounce handler
//! trust that the address was made by us and not forged to unsubscribe or flag someone else.
//!
//! Format: `b-<campaign>-<recipient id in base36>-<80-bit HMAC-SHA256 in base32>@<bounce domain>`,
//! all lower case except the campaign id, which is kept as it is.

use crate::address::is_domain;
use ring::hmac;

use crate::error::VerpError;
use crate::UnsubscribeSigner;

/// Longest campaign id: `b-` + id + `-` + 13 base36 digits (any u64) + `-` + 16 signature
/// characters must fit the 64 octets RFC 5321 allows a local part.
pub const MAX_CAMPAIGN_ID_LEN: usize = 64 - PREFIX.len() - 1 - MAX_ID_DIGITS - 1 - SIG_CHARS;

const PREFIX: &str = "b-";
/// Digits of `u64::MAX` in base36.
pub(crate) const MAX_ID_DIGITS: usize = 13;
/// Signature bytes kept from the HMAC: 80 bits.
pub(crate) const SIG_BYTES: usize = 10;
/// Base32 characters of the signature: 80 bits / 5 bits per character, no padding.
pub(crate) const SIG_CHARS: usize = 16;
/// Longest address verify() looks at; anything longer is not ours.
const MAX_ADDRESS_LEN: usize = 320;
/// Domain separation of the signed data, so the key can never sign anything else by accident.
const SIGN_CONTEXT: &[u8] = b"mailfarm-verp-v1\0";

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Makes and checks signed VERP return paths with one secret key.
#[derive(Clone)]
pub struct VerpSigner {
    key: hmac::Key,
    /// Key for comparing truncated signatures in constant time (double-HMAC comparison).
    compare_key: hmac::Key,
    /// Signer of the unsubscribe links, under the key derived from this one.
    unsubscribe: UnsubscribeSigner,
}

impl std::fmt::Debug for VerpSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerpSigner { .. }")
    }
}

/// What a verified return path says: which campaign and which recipient bounced.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VerpToken {
    /// Campaign id, as it was signed.
    pub campaign_id: String,
    /// Recipient id within the campaign.
    pub recipient_id: u64,
}

impl VerpSigner {
    /// Creates a signer from a secret key (HMAC-SHA256; 32 random bytes is a good key).
    pub fn new(key_bytes: &[u8]) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key_bytes);
        let derived = hmac::sign(&key, b"mailfarm-verp-compare-key");
        let compare_key = hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref());
        VerpSigner {
            key,
            compare_key,
            unsubscribe: UnsubscribeSigner::from_verp_key(key_bytes),
        }
    }

    /// The signer of the unsubscribe links, keyed with [`crate::derive_unsubscribe_key`] of
    /// this VERP key.
    pub fn unsubscribe_signer(&self) -> &UnsubscribeSigner {
        &self.unsubscribe
    }

    /// Returns the signed envelope sender for one recipient of a campaign.
    ///
    /// The campaign id is expected to be valid (as [`crate::MessageTemplate::compile`] checks):
    /// with a longer one the local part can exceed 64 octets.
    pub fn return_path(&self, campaign_id: &str, recipient_id: u64, bounce_domain: &str) -> String {
        let signature = self.signature(campaign_id, recipient_id);
        signed_address(PREFIX, campaign_id, recipient_id, &signature, bounce_domain)
    }

    /// Checks a return path (with or without `<>`, domain in any case) and returns what it
    /// names. Any altered character, in the campaign, the id or the signature, is refused.
    pub fn verify(&self, address: &str) -> Result<VerpToken, VerpError> {
        self.verify_parts(address).map(|(token, _)| token)
    }

    /// Like [`VerpSigner::verify`], and also requires the address to be at `bounce_domain`
    /// (compared without regard to case).
    pub fn verify_for_domain(
        &self,
        address: &str,
        bounce_domain: &str,
    ) -> Result<VerpToken, VerpError> {
        let (token, domain) = self.verify_parts(address)?;
        if !domain.eq_ignore_ascii_case(bounce_domain.trim_end_matches('.')) {
            return Err(VerpError::WrongDomain {
                got: domain.to_owned(),
                expected: bounce_domain.to_owned(),
            });
        }
        Ok(token)
    }

    fn verify_parts<'a>(&self, address: &'a str) -> Result<(VerpToken, &'a str), VerpError> {
        let (local, domain) = split_signed_address(address).map_err(VerpError::Malformed)?;
        if !is_domain(domain) {
            return Err(VerpError::Malformed("invalid domain"));
        }
        let rest = local
            .strip_prefix(PREFIX)
            .ok_or(VerpError::Malformed("local part does not start with b-"))?;
        let (rest, sig_text) = rest
            .rsplit_once('-')
            .ok_or(VerpError::Malformed("no signature"))?;
        let (campaign_id, id_text) = rest
            .rsplit_once('-')
            .ok_or(VerpError::Malformed("no recipient id"))?;
        if !is_campaign_id(campaign_id) {
            return Err(VerpError::Malformed("invalid campaign id"));
        }
        let recipient_id =
            parse_base36(id_text).ok_or(VerpError::Malformed("invalid recipient id"))?;
        let sig = parse_base32_sig(sig_text).ok_or(VerpError::Malformed("invalid signature"))?;

        let expected = self.signature(campaign_id, recipient_id);
        // Constant-time comparison of the truncated tags: compare HMACs of both under a second
        // key with ring's constant-time verify.
        let expected_mac = hmac::sign(&self.compare_key, &expected);
        hmac::verify(&self.compare_key, &sig, expected_mac.as_ref())
            .map_err(|_| VerpError::BadSignature)?;
        Ok((
            VerpToken {
                campaign_id: campaign_id.to_owned(),
                recipient_id,
            },
            domain,
        ))
    }

    fn signature(&self, campaign_id: &str, recipient_id: u64) -> [u8; SIG_BYTES] {
        address_signature(&self.key, SIGN_CONTEXT, campaign_id, recipient_id)
    }
}

/// The truncated HMAC of a signed address: `context` keeps each kind of address apart, the
/// campaign id is length-prefixed so no two (campaign, id) pairs sign the same bytes.
pub(crate) fn address_signature(
    key: &hmac::Key,
    context: &[u8],
    campaign_id: &str,
    recipient_id: u64,
) -> [u8; SIG_BYTES] {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(context);
    ctx.update(&(campaign_id.len() as u64).to_be_bytes());
    ctx.update(campaign_id.as_bytes());
    ctx.update(&recipient_id.to_be_bytes());
    let tag = ctx.sign();
    let mut out = [0u8; SIG_BYTES];
    out.copy_from_slice(&tag.as_ref()[..SIG_BYTES]);
    out
}

/// True for 1 to [`MAX_CAMPAIGN_ID_LEN`] characters of `[A-Za-z0-9_-]`.
pub(crate) fn is_campaign_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CAMPAIGN_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Appends `value` in lower-case base36.
pub(crate) fn push_base36(out: &mut String, mut value: u64) {
    let mut digits = [0u8; MAX_ID_DIGITS];
    let mut start = MAX_ID_DIGITS;
    loop {
        start -= 1;
        digits[start] = BASE36[(value % 36) as usize];
        value /= 36;
        if value == 0 {
            break;
        }
    }
    for &d in &digits[start..] {
        out.push(char::from(d));
    }
}

/// Parses canonical lower-case base36 (no sign, no leading zeros), refusing overflow.
pub(crate) fn parse_base36(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > MAX_ID_DIGITS || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.bytes().try_fold(0u64, |acc, b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'z' => b - b'a' + 10,
            _ => return None,
        };
        acc.checked_mul(36)?.checked_add(u64::from(digit))
    })
}

pub(crate) fn push_base32(out: &mut String, sig: &[u8; SIG_BYTES]) {
    // 10 bytes = 80 bits = exactly 16 characters of 5 bits.
    let mut bits: u128 = 0;
    for &b in sig {
        bits = (bits << 8) | u128::from(b);
    }
    for i in (0..SIG_CHARS).rev() {
        out.push(char::from(BASE32[((bits >> (i * 5)) & 31) as usize]));
    }
}

pub(crate) fn parse_base32_sig(text: &str) -> Option<[u8; SIG_BYTES]> {
    if text.len() != SIG_CHARS {
        return None;
    }
    let mut bits: u128 = 0;
    for b in text.bytes() {
        let value = match b {
            b'a'..=b'z' => b - b'a',
            b'2'..=b'7' => b - b'2' + 26,
            _ => return None,
        };
        bits = (bits << 5) | u128::from(value);
    }
    let mut out = [0u8; SIG_BYTES];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = (bits >> ((SIG_BYTES - 1 - i) * 8)) as u8;
    }
    Some(out)
}

/// The local part and domain (trailing dot removed) of a signed address, with or without
/// `<>`, after the checks every signed address shares; the domain is not checked yet.
pub(crate) fn split_signed_address(address: &str) -> Result<(&str, &str), &'static str> {
    let address = address.trim();
    if address.len() > MAX_ADDRESS_LEN {
        return Err("address too long");
    }
    let address = match address.strip_prefix('<') {
        Some(inner) => inner.strip_suffix('>').ok_or("unbalanced angle brackets")?,
        None => address,
    };
    let (local, domain) = address.rsplit_once('@').ok_or("no @")?;
    if local.len() > 64 {
        return Err("local part longer than 64 octets");
    }
    Ok((local, domain.trim_end_matches('.')))
}

/// `<prefix><campaign>-<id base36>-<signature base32>@<domain>`: the shape of every signed
/// address (VERP return paths, unsubscribe mailto addresses).
pub(crate) fn signed_address(
    prefix: &str,
    campaign_id: &str,
    recipient_id: u64,
    signature: &[u8; SIG_BYTES],
    domain: &str,
) -> String {
    let mut out = String::with_capacity(
        prefix.len() + campaign_id.len() + MAX_ID_DIGITS + SIG_CHARS + 3 + domain.len(),
    );
    out.push_str(prefix);
    out.push_str(campaign_id);
    out.push('-');
    push_base36(&mut out, recipient_id);
    out.push('-');
    push_base32(&mut out, signature);
    out.push('@');
    out.push_str(domain);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_round_trips_and_is_canonical() {
        for value in [0, 1, 35, 36, 12345, u64::MAX - 1, u64::MAX] {
            let mut s = String::new();
            push_base36(&mut s, value);
            assert_eq!(parse_base36(&s), Some(value), "{s}");
        }
        let mut max = String::new();
        push_base36(&mut max, u64::MAX);
        assert_eq!(max.len(), MAX_ID_DIGITS);
        assert_eq!(parse_base36("00"), None);
        assert_eq!(parse_base36("01"), None);
        assert_eq!(parse_base36("A"), None);
        assert_eq!(parse_base36("zzzzzzzzzzzzz"), None, "overflow");
    }

    #[test]
    fn base32_round_trips() {
        let sig = [0, 1, 2, 250, 255, 17, 99, 128, 7, 64];
        let mut s = String::new();
        push_base32(&mut s, &sig);
        assert_eq!(s.len(), SIG_CHARS);
        assert_eq!(parse_base32_sig(&s), Some(sig));
        assert_eq!(parse_base32_sig(&s.to_uppercase()), None);
    }

    #[test]
    fn longest_campaign_fits_in_64_octets() {
        let signer = VerpSigner::new(b"k");
        let campaign = "c".repeat(MAX_CAMPAIGN_ID_LEN);
        let rp = signer.return_path(&campaign, u64::MAX, "b.example");
        let local = rp.split('@').next().unwrap_or_default();
        assert_eq!(local.len(), 64);
        assert!(is_campaign_id(&campaign));
        assert!(!is_campaign_id(&format!("{campaign}c")));
    }
}
