//! Mutual-TLS QUIC configurations for the coordinator (server) and its clients.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::{FarmFiles, PkiError};

/// DNS name in the coordinator's certificate; clients verify the server against it.
pub const COORDINATOR_NAME: &str = "coordinator.mailfarm";

/// DNS name in smurf `node`'s certificate.
pub fn smurf_dns_name(node: &str) -> String {
    format!("{node}.smurf.mailfarm")
}

/// DNS name in operator `name`'s certificate.
pub fn operator_dns_name(name: &str) -> String {
    format!("{name}.operator.mailfarm")
}

/// A node's credentials: the farm CA it trusts, its certificate chain and private key.
#[derive(Debug)]
pub struct Identity {
    /// Trusted farm CA certificates.
    pub ca: Vec<CertificateDer<'static>>,
    /// This node's certificate chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// This node's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Loads the CA, certificate and key PEM files.
    pub fn load(files: &FarmFiles) -> Result<Self, PkiError> {
        Ok(Self {
            ca: load_certs(&files.ca)?,
            chain: load_certs(&files.cert)?,
            key: PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem_error(&files.key, e))?,
        })
    }

    fn roots(&self) -> Result<RootCertStore, PkiError> {
        let mut roots = RootCertStore::empty();
        for cert in &self.ca {
            roots.add(cert.clone())?;
        }
        Ok(roots)
    }
}

fn pem_error(path: &Path, error: rustls::pki_types::pem::Error) -> PkiError {
    match error {
        rustls::pki_types::pem::Error::Io(source) => PkiError::Io {
            path: path.to_owned(),
            source,
        },
        other => PkiError::BadPem {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(PkiError::BadPem {
            path: path.to_owned(),
            reason: "no certificate in file".into(),
        });
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(2)));
    // 10 s without a packet (keep-alives every 2 s included) means the peer is gone.
    if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(10)) {
        transport.max_idle_timeout(Some(idle));
    }
    Arc::new(transport)
}

/// QUIC server configuration of the coordinator: TLS 1.3, farm-CA client certificates required.
pub fn server_config(identity: &Identity) -> Result<quinn::ServerConfig, PkiError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(identity.roots()?), provider.clone())
            .build()
            .map_err(|e| PkiError::Verifier(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    tls.alpn_protocols = vec![mailfarm_protocol::ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| PkiError::Verifier(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// QUIC client configuration of a smurf or operator: presents its certificate, trusts only the
/// farm CA. Connect with server name [`COORDINATOR_NAME`].
pub fn client_config(identity: &Identity) -> Result<quinn::ClientConfig, PkiError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(identity.roots()?)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())?;
    tls.alpn_protocols = vec![mailfarm_protocol::ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| PkiError::Verifier(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// Whether the peer of `connection` presented a (CA-verified) certificate valid for `dns_name`.
pub fn peer_has_name(connection: &quinn::Connection, dns_name: &str) -> bool {
    let Some(identity) = connection.peer_identity() else {
        return false;
    };
    let Ok(certs) = identity.downcast::<Vec<CertificateDer<'static>>>() else {
        return false;
    };
    let Some(leaf) = certs.first() else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(dns_name) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}
