//! The Sender Rewriting Scheme: a forwarded message leaves with an envelope sender in the
//! forwarding domain, so SPF at the destination checks the farm's address, not the original
//! sender's; a bounce to that address comes back to the `in` node, which checks it and relays
//! it to the original sender. Sans-IO, so the format and its checks are tested without a network.
//!
//! `SRS0=HHHHHH=TT=orig-domain=orig-local@srs-domain`: `TT` is the day (UTC, mod 1024) in two
//! base32 characters, `HHHHHH` six base32 characters of an HMAC-SHA256 over `TT`, the domain
//! and the local part (lower case), keyed with a key derived from the farm's VERP key. Base32
//! instead of SRS's usual base64 keeps the address case-insensitive, as mail servers treat it.
//! An address is accepted for [`MAX_AGE_DAYS`] days.

use ring::hmac;

/// How many days an SRS address stays valid.
pub const MAX_AGE_DAYS: u32 = 21;
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const HASH_CHARS: usize = 6;

/// Why an SRS address was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SrsError {
    /// Not of the form `SRS0=hash=tt=domain=local@...`.
    #[error("not an SRS address")]
    Malformed,
    /// The hash does not match: forged or damaged.
    #[error("SRS hash does not verify")]
    BadHash,
    /// Older than [`MAX_AGE_DAYS`] (or from the future).
    #[error("SRS address has expired")]
    Expired,
}

/// Rewrites and checks SRS addresses with the farm's key.
#[derive(Clone)]
pub struct Srs {
    key: hmac::Key,
    domain: String,
}

impl std::fmt::Debug for Srs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Srs")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl Srs {
    /// Addresses in `domain` (lower case), keyed from the farm's VERP key.
    pub fn new(verp_key: &[u8], domain: &str) -> Self {
        let derived = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, verp_key),
            b"mailfarm srs key",
        );
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
        }
    }

    /// The SRS domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    fn hash(&self, tt: &str, domain: &str, local: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        for part in [tt, "=", domain, "=", local] {
            ctx.update(part.to_ascii_lowercase().as_bytes());
        }
        let tag = ctx.sign();
        base32(tag.as_ref(), HASH_CHARS)
    }

    /// The SRS address for `sender` on UTC day `day`; the null sender stays null, and an
    /// address without `@` is returned unchanged.
    pub fn forward(&self, sender: &str, day: u32) -> String {
        let Some((local, domain)) = sender.rsplit_once('@') else {
            return sender.to_owned();
        };
        let tt = timestamp(day);
        let hash = self.hash(&tt, domain, local);
        format!("SRS0={hash}={tt}={domain}={local}@{}", self.domain)
    }

    /// Whether `address` is in the SRS domain and looks like an SRS address (before checks).
    pub fn is_srs(&self, address: &str) -> bool {
        address.rsplit_once('@').is_some_and(|(local, domain)| {
            domain
                .trim_end_matches('.')
                .eq_ignore_ascii_case(&self.domain)
                && local.len() > 5
                && local
                    .get(..5)
                    .is_some_and(|p| p.eq_ignore_ascii_case("srs0="))
        })
    }

    /// The original sender of an SRS address, checked (hash and, unless `any_age`, age on
    /// UTC day `today`).
    pub fn reverse(&self, address: &str, today: u32, any_age: bool) -> Result<String, SrsError> {
        let (local, domain) = address.rsplit_once('@').ok_or(SrsError::Malformed)?;
        if !domain
            .trim_end_matches('.')
            .eq_ignore_ascii_case(&self.domain)
        {
            return Err(SrsError::Malformed);
        }
        let rest = local
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("srs0="))
            .map(|_| &local[5..])
            .ok_or(SrsError::Malformed)?;
        let mut parts = rest.splitn(4, '=');
        let (Some(hash), Some(tt), Some(orig_domain), Some(orig_local)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SrsError::Malformed);
        };
        if orig_domain.is_empty() || orig_local.is_empty() || tt.len() != 2 {
            return Err(SrsError::Malformed);
        }
        if !self
            .hash(tt, orig_domain, orig_local)
            .eq_ignore_ascii_case(hash)
        {
            return Err(SrsError::BadHash);
        }
        if !any_age {
            let stamped = day_of(tt).ok_or(SrsError::Malformed)?;
            let age = (today % 1024 + 1024 - stamped) % 1024;
            if age > MAX_AGE_DAYS {
                return Err(SrsError::Expired);
            }
        }
        Ok(format!("{orig_local}@{orig_domain}"))
    }
}

fn timestamp(day: u32) -> String {
    let t = day % 1024;
    let chars = [ALPHABET[(t >> 5) as usize], ALPHABET[(t & 31) as usize]];
    String::from_utf8_lossy(&chars).into_owned()
}

fn day_of(tt: &str) -> Option<u32> {
    let value = |c: u8| {
        ALPHABET
            .iter()
            .position(|a| *a == c.to_ascii_lowercase())
            .map(|p| p as u32)
    };
    let b = tt.as_bytes();
    Some(value(b[0])? << 5 | value(b[1])?)
}

fn base32(bytes: &[u8], chars: usize) -> String {
    let mut out = String::with_capacity(chars);
    let (mut acc, mut bits) = (0u32, 0u32);
    for byte in bytes {
        acc = (acc << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 && out.len() < chars {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
        if out.len() == chars {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checks() {
        let srs = Srs::new(b"farm key", "Fwd.Example.test.");
        let day = 20_000;
        let a = srs.forward("Alice=Smith@sender.test", day);
        assert!(a.starts_with("SRS0="), "{a}");
        assert!(a.ends_with("@fwd.example.test"), "{a}");
        assert!(srs.is_srs(&a));
        assert_eq!(
            srs.reverse(&a, day, false),
            Ok("Alice=Smith@sender.test".into())
        );
        // Mail servers may change the case: still valid.
        assert_eq!(
            srs.reverse(&a.to_ascii_uppercase(), day + 3, false),
            Ok("ALICE=SMITH@SENDER.TEST".into())
        );
        assert_eq!(
            srs.reverse(&a, day + MAX_AGE_DAYS + 1, false),
            Err(SrsError::Expired)
        );
        assert!(srs.reverse(&a, day + MAX_AGE_DAYS + 1, true).is_ok());
        // Across the 1024-day wrap.
        let wrap = srs.forward("b@s.test", 1023);
        assert!(srs.reverse(&wrap, 1025, false).is_ok());
        let tampered = a.replace("sender.test", "evil.test");
        assert_eq!(srs.reverse(&tampered, day, false), Err(SrsError::BadHash));
        let other = Srs::new(b"other key", "fwd.example.test");
        assert_eq!(other.reverse(&a, day, false), Err(SrsError::BadHash));
        for bad in [
            "SRS0=abc@fwd.example.test",
            "user@fwd.example.test",
            "SRS0=aaaaaa=aa==x@fwd.example.test",
            "SRS0=aaaaaa=a=d=x@fwd.example.test",
            "nothing",
        ] {
            assert_eq!(
                srs.reverse(bad, day, false),
                Err(SrsError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(srs.forward("", day), "");
    }

    #[test]
    fn garbage_never_panics() {
        let srs = Srs::new(b"k", "f.test");
        let mut seed = 7u64;
        for _ in 0..20_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 58) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| b"SRS0=@f.test=aZ2\xc3\xa9"[((seed >> (i % 50)) % 17) as usize])
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = srs.reverse(&text, 5, false);
            let _ = srs.is_srs(&text);
        }
    }
}
