//! `mailfarm farm init`: creates the farm CA and node certificates, never overwriting a key.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::{operator_dns_name, smurf_dns_name, PkiError, COORDINATOR_NAME};

/// Paths of one node's certificate files inside a farm directory.
#[derive(Debug, Clone)]
pub struct FarmFiles {
    /// The farm CA certificate.
    pub ca: PathBuf,
    /// The node certificate.
    pub cert: PathBuf,
    /// The node private key.
    pub key: PathBuf,
}

impl FarmFiles {
    /// Files of node `stem` (e.g. `coordinator`, `smurf-1`, `operator`) in `dir`.
    pub fn in_dir(dir: &Path, stem: &str) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        }
    }
}

/// What `init_farm` did.
#[derive(Debug, Default)]
pub struct InitReport {
    /// Files written.
    pub created: Vec<PathBuf>,
    /// Files that existed and were kept.
    pub kept: Vec<PathBuf>,
    /// The operator's dashboard secret, when this run created it (only its hash is stored, in
    /// `dashboard.argon2`): show it to the operator once.
    pub dashboard_secret: Option<String>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "mailfarm farm CA");
    dn.push(DnType::OrganizationName, "mailfarm");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    params
}

fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Creates `dir` with the farm CA, a coordinator certificate, one per smurf and one per operator.
/// Existing keys are never overwritten; missing node certificates are issued by the existing CA.
pub fn init_farm(
    dir: &Path,
    smurfs: &[String],
    operators: &[String],
) -> Result<InitReport, PkiError> {
    for name in smurfs.iter().chain(operators) {
        if !valid_name(name) {
            return Err(PkiError::BadName(name.clone()));
        }
    }
    fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut report = InitReport::default();
    let ca_key_path = dir.join("ca.key");
    let ca_cert_path = dir.join("ca.pem");
    let ca_key = if ca_key_path.exists() {
        report.kept.push(ca_key_path.clone());
        let pem = read(&ca_key_path)?;
        KeyPair::from_pem(&pem).map_err(|e| PkiError::BadPem {
            path: ca_key_path.clone(),
            reason: e.to_string(),
        })?
    } else {
        let key = KeyPair::generate()?;
        write_new(&ca_key_path, &key.serialize_pem(), 0o600)?;
        report.created.push(ca_key_path.clone());
        key
    };
    if ca_cert_path.exists() {
        report.kept.push(ca_cert_path.clone());
    } else {
        let cert = ca_params().self_signed(&ca_key)?;
        write_new(&ca_cert_path, &cert.pem(), 0o644)?;
        report.created.push(ca_cert_path);
    }
    let issuer = Issuer::new(ca_params(), ca_key);

    let verp_path = dir.join("verp.key");
    if verp_path.exists() {
        report.kept.push(verp_path);
    } else {
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| PkiError::BadName("system random generator failed".into()))?;
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        write_new(&verp_path, &(hex + "\n"), 0o600)?;
        report.created.push(verp_path);
    }

    let dashboard_path = dir.join(crate::dashboard::DASHBOARD_HASH_FILE);
    if dashboard_path.exists() {
        report.kept.push(dashboard_path);
    } else {
        let secret = crate::dashboard::new_dashboard_secret()?;
        let hash = crate::dashboard::hash_dashboard_secret(&secret)?;
        write_new(&dashboard_path, &(hash + "\n"), 0o600)?;
        report.created.push(dashboard_path);
        report.dashboard_secret = Some(secret);
    }

    let mut nodes = vec![("coordinator".to_owned(), COORDINATOR_NAME.to_owned())];
    nodes.extend(smurfs.iter().map(|n| (n.clone(), smurf_dns_name(n))));
    nodes.extend(operators.iter().map(|n| (n.clone(), operator_dns_name(n))));
    for (stem, dns_name) in nodes {
        let files = FarmFiles::in_dir(dir, &stem);
        if files.key.exists() {
            report.kept.push(files.key);
            if files.cert.exists() {
                report.kept.push(files.cert);
                continue;
            }
            return Err(PkiError::BadPem {
                path: files.cert,
                reason: "certificate missing next to an existing key; remove the key to reissue"
                    .into(),
            });
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![dns_name.clone()])?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, dns_name.as_str());
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let cert = params.signed_by(&key, &issuer)?;
        write_new(&files.key, &key.serialize_pem(), 0o600)?;
        report.created.push(files.key);
        write_new(&files.cert, &cert.pem(), 0o644)?;
        report.created.push(files.cert);
    }
    Ok(report)
}

/// Reads a hex-encoded secret written by [`init_farm`] (e.g. `verp.key`).
pub fn load_secret(path: &Path) -> Result<Vec<u8>, PkiError> {
    let text = read(path)?;
    let text = text.trim();
    let bad = || PkiError::BadPem {
        path: path.to_owned(),
        reason: "expected at least 32 hex-encoded bytes".into(),
    };
    if text.len() < 64 || text.len() % 2 != 0 {
        return Err(bad());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rerun_keeps_keys_and_adds_new_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let first = init_farm(dir.path(), &["smurf-1".into()], &["operator".into()]).unwrap();
        assert_eq!(first.created.len(), 4 + 3 * 2);
        let secret = first
            .dashboard_secret
            .clone()
            .expect("first run makes the secret");
        let hash =
            crate::dashboard::load_dashboard_hash(&dir.path().join("dashboard.argon2")).unwrap();
        assert!(crate::dashboard::verify_dashboard_secret(&hash, &secret));
        let ca_key = fs::read(dir.path().join("ca.key")).unwrap();
        let smurf_key = fs::read(dir.path().join("smurf-1.key")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("smurf-1.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let second = init_farm(
            dir.path(),
            &["smurf-1".into(), "smurf-2".into()],
            &["operator".into()],
        )
        .unwrap();
        assert_eq!(
            second.created.len(),
            2,
            "only smurf-2's key and cert are new"
        );
        assert!(second.dashboard_secret.is_none(), "the secret is made once");
        assert_eq!(fs::read(dir.path().join("ca.key")).unwrap(), ca_key);
        assert_eq!(fs::read(dir.path().join("smurf-1.key")).unwrap(), smurf_key);
    }

    #[test]
    fn bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            init_farm(dir.path(), &["a.b".into()], &[]),
            Err(PkiError::BadName(_))
        ));
    }
}
