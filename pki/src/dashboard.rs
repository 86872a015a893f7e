//! The operator's dashboard secret. The web node's dashboard is private to operators; `farm
//! init` makes a random secret, shows it once and keeps only its argon2id hash
//! (`dashboard.argon2`, PHC string), which the web node checks logins against. Kept here, next
//! to the other farm secrets `farm init` writes.

use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::PkiError;

/// File name of the dashboard secret's hash in the farm directory.
pub const DASHBOARD_HASH_FILE: &str = "dashboard.argon2";

/// Makes a new random dashboard secret (32 lower-case base32 characters, 160 bits).
pub fn new_dashboard_secret() -> Result<String, PkiError> {
    let mut bytes = [0u8; 20];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| PkiError::BadName("system random generator failed".into()))?;
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(32);
    for chunk in bytes.chunks(5) {
        let mut bits: u64 = 0;
        for &b in chunk {
            bits = (bits << 8) | u64::from(b);
        }
        for i in (0..8).rev() {
            out.push(char::from(ALPHABET[((bits >> (i * 5)) & 31) as usize]));
        }
    }
    Ok(out)
}

/// The argon2id hash (PHC string) of a secret, with a random salt.
pub fn hash_dashboard_secret(secret: &str) -> Result<String, PkiError> {
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| PkiError::BadName("system random generator failed".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PkiError::Secret(e.to_string()))?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| PkiError::Secret(e.to_string()))
}

/// Whether `secret` matches the PHC hash `phc` (constant time in the secret). A hash that does
/// not parse matches nothing.
pub fn verify_dashboard_secret(phc: &str, secret: &str) -> bool {
    match PasswordHash::new(phc.trim()) {
        Ok(parsed) => Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Reads the dashboard hash written by `farm init` and checks that it parses.
pub fn load_dashboard_hash(path: &Path) -> Result<String, PkiError> {
    let text = std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })?;
    let text = text.trim().to_owned();
    PasswordHash::new(&text).map_err(|e| PkiError::BadPem {
        path: path.to_owned(),
        reason: format!("not an argon2 PHC hash: {e}"),
    })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hash_and_verify() {
        let secret = new_dashboard_secret().unwrap();
        assert_eq!(secret.len(), 32);
        assert_ne!(secret, new_dashboard_secret().unwrap());
        let hash = hash_dashboard_secret(&secret).unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_dashboard_secret(&hash, &secret));
        assert!(!verify_dashboard_secret(&hash, "wrong"));
        assert!(!verify_dashboard_secret("garbage", &secret));
    }
}
