//! DKIM for `compare`: signing keys made with `openssl genpkey` (rsa-sha256 2048 bits and
//! ed25519-sha256), the `[[dkim]]` section that turns signing on in each smurf's config, and a
//! micro-measurement of where the smurf's own signer spends its time: a full message against
//! the same headers with an empty body (header canonicalisation plus the signature); the
//! difference is the body's canonicalisation and hash.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use mailfarm_smurf::outbound::dkim::{DkimAlgorithm, DkimKeyConfig, DkimSigner};

use super::render::Prepared;
use super::report::DkimCost;
use crate::sys;

/// Selector of the benchmark's keys.
const SELECTOR: &str = "bench";

/// A signing key on disk.
#[derive(Clone, Debug)]
pub struct Key {
    /// The algorithm.
    pub algorithm: DkimAlgorithm,
    /// `rsa-sha256` or `ed25519-sha256`.
    pub label: &'static str,
    /// PEM private key (PKCS#8).
    pub path: PathBuf,
}

/// Generates a key of `algorithm` in `dir` with `openssl`.
pub fn generate(openssl: &Path, dir: &Path, algorithm: DkimAlgorithm) -> anyhow::Result<Key> {
    let (label, args): (&'static str, &[&str]) = match algorithm {
        DkimAlgorithm::RsaSha256 => (
            "rsa-sha256",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        ),
        DkimAlgorithm::Ed25519Sha256 => ("ed25519-sha256", &["-algorithm", "ed25519"]),
    };
    let path = dir.join(format!("dkim-{label}.pem"));
    let out = Command::new(openssl)
        .arg("genpkey")
        .args(args)
        .arg("-out")
        .arg(&path)
        .output()
        .with_context(|| format!("running {} genpkey (install openssl)", openssl.display()))?;
    if !out.status.success() {
        bail!(
            "openssl genpkey {label}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(Key {
        algorithm,
        label,
        path,
    })
}

/// The `From:` domain of a campaign's `from` setting (`Name <a@domain>` or `a@domain`).
pub fn from_domain(from: &str) -> anyhow::Result<String> {
    let address = from
        .rsplit_once('<')
        .map_or(from, |(_, rest)| rest.trim_end_matches('>'))
        .trim();
    address
        .rsplit_once('@')
        .map(|(_, domain)| domain.to_ascii_lowercase())
        .with_context(|| format!("no domain in the campaign's from {from:?}"))
}

/// The smurf config section that signs mail from `domain` with `key`.
pub fn smurf_section(domain: &str, key: &Key) -> String {
    format!(
        "[[dkim]]\ndomain = \"{domain}\"\nselector = \"{SELECTOR}\"\nalgorithm = \"{}\"\nprivate_key = \"{}\"\n",
        key.label,
        key.path.display()
    )
}

/// Signs `messages` (undotted, whole messages) with `key` `rounds` times, then the same
/// headers with empty bodies, on this thread; CPU time per message of each.
pub fn measure(
    domain: &str,
    key: &Key,
    messages: &[Prepared],
    rounds: usize,
) -> anyhow::Result<DkimCost> {
    let signer = DkimSigner::load(&[DkimKeyConfig {
        domain: domain.to_owned(),
        selector: SELECTOR.to_owned(),
        algorithm: key.algorithm,
        private_key: key.path.clone(),
        headers: None,
    }])
    .context("loading the DKIM key")?;
    let headers_only: Vec<Vec<u8>> = messages
        .iter()
        .map(|m| {
            let end = find(&m.data, b"\r\n\r\n").map_or(m.data.len(), |i| i + 4);
            m.data[..end].to_vec()
        })
        .collect();
    let body_bytes = messages
        .iter()
        .zip(&headers_only)
        .map(|(m, h)| (m.data.len() - h.len()) as u64)
        .sum::<u64>()
        / messages.len().max(1) as u64;
    let full: Vec<&[u8]> = messages.iter().map(|m| m.data.as_slice()).collect();
    let bare: Vec<&[u8]> = headers_only.iter().map(Vec::as_slice).collect();
    let total = time_signing(&signer, &full, rounds)?;
    let signature = time_signing(&signer, &bare, rounds)?;
    let library = match key.algorithm {
        DkimAlgorithm::RsaSha256 => mailfarm_smurf::outbound::dkim::RSA_SIGNER,
        DkimAlgorithm::Ed25519Sha256 => "ring",
    };
    Ok(DkimCost {
        algorithm: key.label.to_owned(),
        library: library.to_owned(),
        messages: messages.len() * rounds,
        body_bytes,
        total_us: total,
        signature_us: signature,
        body_hash_us: (total - signature).max(0.0),
    })
}

/// CPU microseconds of this thread per signature over `messages`, `rounds` times.
fn time_signing(signer: &DkimSigner, messages: &[&[u8]], rounds: usize) -> anyhow::Result<f64> {
    let before = sys::usage(libc::RUSAGE_THREAD)?.cpu;
    let mut signed = 0usize;
    for _ in 0..rounds {
        for m in messages {
            signer
                .sign(m)
                .context("signing")?
                .context("the key does not match the From domain")?;
            signed += 1;
        }
    }
    let cpu = sys::usage(libc::RUSAGE_THREAD)?.cpu.saturating_sub(before);
    Ok(cpu.as_secs_f64() * 1e6 / signed.max(1) as f64)
}

/// Index of the first `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_from_domain_is_read_from_either_form() {
        assert_eq!(
            from_domain("Acme Weekly <news@Acme.example>").expect("domain"),
            "acme.example"
        );
        assert_eq!(from_domain("a@b.example").expect("domain"), "b.example");
        assert!(from_domain("nobody").is_err());
    }
}
