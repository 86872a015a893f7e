//! The private key behind a DKIM signature, and which library signs with it.
//!
//! Keys are always read and checked by `mail-auth` on `ring` (the sizes RFC 8301 allows, the
//! PEM forms, the errors operators see do not depend on the build). Ed25519 keys sign with
//! ring. RSA keys sign with ring too, unless the smurf is built with the `openssl-dkim`
//! feature: OpenSSL's RSA-2048 signature costs about half of ring's on x86-64 (0.32 ms
//! against 0.62 ms per message on the bench machine, `mailfarm-bench compare`; see
//! `docs/performance.md`), and with RSA that signature is most of a signed message's CPU. The feature needs the system's
//! OpenSSL to build (`libssl-dev`, `pkg-config`), which is why it is not on by default.

use mail_auth::common::crypto::{Algorithm, DkimKey, Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::Writable;
use rustls_pki_types::PrivateKeyDer;

/// Which library makes RSA signatures in this build: `"openssl"` or `"ring"`.
pub const RSA_SIGNER: &str = if cfg!(feature = "openssl-dkim") {
    "openssl"
} else {
    "ring"
};

/// A loaded DKIM signing key.
pub(super) enum SignerKey {
    /// Signed by ring, through mail-auth (Ed25519 always; RSA without `openssl-dkim`).
    Ring(Box<DkimKey>),
    /// RSA, signed by the system's OpenSSL (PKCS#1 v1.5, SHA-256).
    #[cfg(feature = "openssl-dkim")]
    OpensslRsa(openssl::pkey::PKey<openssl::pkey::Private>),
}

impl SignerKey {
    /// The signer of an RSA key that mail-auth has already read and accepted (`checked`);
    /// `der` is the same key's DER. ring signs with `checked`; with `openssl-dkim`, OpenSSL
    /// loads `der` and signs instead.
    pub(super) fn rsa(checked: RsaKey<Sha256>, der: &PrivateKeyDer<'_>) -> Result<Self, String> {
        #[cfg(feature = "openssl-dkim")]
        {
            use openssl::pkey::PKey;
            use openssl::rsa::Rsa;
            drop(checked);
            let pkey = match der {
                PrivateKeyDer::Pkcs1(der) => {
                    Rsa::private_key_from_der(der.secret_pkcs1_der()).and_then(PKey::from_rsa)
                }
                PrivateKeyDer::Pkcs8(der) => PKey::private_key_from_pkcs8(der.secret_pkcs8_der()),
                _ => return Err("RSA key must be PKCS#8 or PKCS#1 (RSA PRIVATE KEY)".to_string()),
            }
            .map_err(|err| format!("OpenSSL cannot load this RSA key: {err}"))?;
            Ok(Self::OpensslRsa(pkey))
        }
        #[cfg(not(feature = "openssl-dkim"))]
        {
            let _ = der;
            Ok(Self::Ring(Box::new(DkimKey::Rsa(checked))))
        }
    }

    /// The signer of an Ed25519 key (ring, in every build).
    pub(super) fn ed25519(key: Ed25519Key) -> Self {
        Self::Ring(Box::new(DkimKey::Ed25519(key)))
    }
}

impl SigningKey for SignerKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        match self {
            Self::Ring(key) => key.sign(input),
            #[cfg(feature = "openssl-dkim")]
            Self::OpensslRsa(pkey) => {
                let mut data = Vec::with_capacity(512);
                input.write(&mut data);
                openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), pkey)
                    .and_then(|mut signer| signer.sign_oneshot_to_vec(&data))
                    .map_err(|err| {
                        mail_auth::Error::Crypto(mail_auth::common::crypto::CryptoError::Library(
                            err.to_string(),
                        ))
                    })
            }
        }
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            Self::Ring(key) => key.algorithm(),
            #[cfg(feature = "openssl-dkim")]
            Self::OpensslRsa(_) => Algorithm::RsaSha256,
        }
    }
}
