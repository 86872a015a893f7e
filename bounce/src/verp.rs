//! Reading a VERP return path without its key, for `bounce inspect` and for reports: the
//! campaign and recipient id are in clear in the local part. Only
//! `mailfarm_templates::VerpSigner::verify` proves the address is ours; this does not.

use serde::Serialize;

/// Campaign and recipient named by a VERP local part `b-<campaign>-<id base36>-<sig>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerpGuess {
    /// The campaign id as written in the address.
    pub campaign: String,
    /// The recipient id (decoded from base36).
    pub recipient_id: u64,
}

/// Decodes `b-<campaign>-<id base36>-<16 base32 chars>@domain` without checking the signature.
/// Returns `None` for anything else.
pub fn decode_verp(address: &str) -> Option<VerpGuess> {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    let (local, _domain) = address.rsplit_once('@')?;
    let rest = local.strip_prefix("b-")?;
    let (rest, sig) = rest.rsplit_once('-')?;
    if sig.len() != 16 || !sig.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')) {
        return None;
    }
    let (campaign, id) = rest.rsplit_once('-')?;
    if campaign.is_empty()
        || !campaign
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        || id.is_empty()
        || id.len() > 13
    {
        return None;
    }
    let recipient_id = u64::from_str_radix(id, 36).ok()?;
    if id.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    Some(VerpGuess {
        campaign: campaign.to_owned(),
        recipient_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_without_key() {
        let g = decode_verp("<b-spring-2026-2s-abcdefghijklmnop@bounces.example>");
        assert_eq!(
            g,
            Some(VerpGuess {
                campaign: "spring-2026".into(),
                recipient_id: 100
            })
        );
        assert_eq!(decode_verp("b-c-1-short@x.example"), None);
        assert_eq!(decode_verp("someone@example.org"), None);
    }
}
