//! TLS for outbound SMTP: when to use STARTTLS ([`TlsPolicy`]), how to judge
//! the server's certificate ([`TlsVerify`]), and the rustls client
//! configuration built from them ([`TlsClient`]).
//!
//! Kept apart from the SMTP exchange ([`super::smtp`]) and the connection
//! logic ([`super::session`]) because it is where security decisions live:
//! the crypto provider is always `ring` (never aws-lc-rs), the rustls
//! [`ClientConfig`] is built once and shared by every session (so TLS session
//! resumption works across connections to the same MX), and certificate
//! checking is explicit.
//!
//! Why "insecure" verification is the default: most MX hosts present
//! certificates that do not match their name or are self-signed, and SMTP
//! between MTAs has no way to tell the sender which name to expect (short of
//! DANE or MTA-STS). Opportunistic TLS (RFC 7435) therefore encrypts without
//! authenticating: it defeats passive eavesdropping, and refusing a bad
//! certificate would only push the message to plaintext.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// When a session uses STARTTLS (RFC 3207).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TlsPolicy {
    /// Use STARTTLS when the server offers it; otherwise, or when the server
    /// refuses it, continue in plaintext. If the TLS handshake itself fails
    /// (including certificate verification, when configured), the session
    /// falls back to a NEW plaintext connection to the same host: the old
    /// one is unusable mid-handshake. This is what MTAs do on the public
    /// internet (RFC 7435), and the default.
    #[default]
    Opportunistic,
    /// TLS or nothing: no STARTTLS offered, STARTTLS refused or a failed
    /// handshake is a temporary failure, and nothing beyond EHLO (and QUIT)
    /// is ever sent in plaintext.
    Required,
    /// Never use STARTTLS, even when offered.
    Disabled,
}

/// How the server's certificate is checked during the TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum TlsVerify {
    /// Accept any certificate (the handshake signatures are still checked,
    /// so the session is encrypted to whoever holds the presented key).
    /// Unauthenticated opportunistic TLS, RFC 7435: the default, see the
    /// module docs.
    #[default]
    Insecure,
    /// Verify the chain and the host name (webpki) against the system trust
    /// store (`SSL_CERT_FILE`/`SSL_CERT_DIR` or the OpenSSL default paths,
    /// through `rustls-native-certs`). For relays with public certificates.
    WebPki,
    /// Verify the chain and the host name against the CA certificates in
    /// this PEM file only (private relays, tests).
    CustomRoots(PathBuf),
}

/// Why a [`TlsClient`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The roots PEM file could not be read or parsed.
    #[error("cannot read CA certificates from {path}: {error}")]
    Pem {
        /// The PEM file.
        path: PathBuf,
        /// What went wrong.
        error: rustls_pki_types::pem::Error,
    },
    /// No usable CA certificate was found.
    #[error("no usable CA certificate in {0}")]
    NoRoots(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The shared TLS client side: one rustls [`ClientConfig`] (ring provider,
/// TLS 1.2 and 1.3) built once from a [`TlsVerify`]. Cloning is cheap.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    authenticates: bool,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("authenticates", &self.authenticates)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Builds the configuration. For [`TlsVerify::WebPki`] the system store
    /// is read now; unreadable entries are skipped as long as one CA loads.
    pub fn new(verify: &TlsVerify) -> Result<Self, TlsConfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let config = match verify {
            TlsVerify::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
                .with_no_client_auth(),
            TlsVerify::WebPki => {
                let loaded = rustls_native_certs::load_native_certs();
                for error in &loaded.errors {
                    tracing::warn!(%error, "skipping part of the system trust store");
                }
                let roots = root_store(loaded.certs, "the system trust store")?;
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            TlsVerify::CustomRoots(path) => {
                let roots = root_store(read_pem_certs(path)?, &path.display().to_string())?;
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        Ok(Self {
            config: Arc::new(config),
            authenticates: !matches!(verify, TlsVerify::Insecure),
        })
    }

    /// The rustls configuration (e.g. for another connector).
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// Whether handshakes verify the server's certificate and name
    /// (everything but [`TlsVerify::Insecure`]).
    pub fn authenticates_server(&self) -> bool {
        self.authenticates
    }

    /// Runs the client handshake on `stream` (right after the STARTTLS 220),
    /// presenting `server_name` as SNI and checking the certificate against
    /// it (when verifying). A name that is neither a DNS name nor an IP
    /// address falls back to the peer's IP address. The whole handshake is
    /// bounded by `limit` (a timeout is an [`io::ErrorKind::TimedOut`]).
    pub async fn handshake(
        &self,
        stream: TcpStream,
        server_name: &str,
        peer: IpAddr,
        limit: Duration,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(server_name.trim_end_matches('.'))
            .map(|n| n.to_owned())
            .unwrap_or(ServerName::IpAddress(peer.into()));
        let connector = TlsConnector::from(self.config.clone());
        match tokio::time::timeout(limit, connector.connect(name, stream)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS handshake not completed within {limit:?}"),
            )),
        }
    }
}

/// What was negotiated on a TLS session, for logs and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsInfo {
    /// Protocol version (TLS 1.2 or 1.3).
    pub version: rustls::ProtocolVersion,
    /// Cipher suite.
    pub cipher: rustls::CipherSuite,
    /// Whether the server's certificate was verified (see
    /// [`TlsClient::authenticates_server`]).
    pub authenticated: bool,
}

impl TlsInfo {
    /// Reads the negotiated parameters of a completed handshake.
    pub fn of(stream: &TlsStream<TcpStream>, authenticated: bool) -> Option<Self> {
        let (_, conn) = stream.get_ref();
        Some(Self {
            version: conn.protocol_version()?,
            cipher: conn.negotiated_cipher_suite()?.suite(),
            authenticated,
        })
    }
}

impl fmt::Display for TlsInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = match self.version {
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
            other => format!("{other:?}"),
        };
        let trust = if self.authenticated {
            "verified"
        } else {
            "unauthenticated"
        };
        write!(f, "{version} {:?} ({trust})", self.cipher)
    }
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let pem_error = |error| TlsConfigError::Pem {
        path: path.to_owned(),
        error,
    };
    CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)
}

fn root_store(
    certs: Vec<CertificateDer<'static>>,
    source: &str,
) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    let (_, ignored) = roots.add_parsable_certificates(certs);
    if ignored > 0 {
        tracing::warn!(ignored, source, "skipped unparsable CA certificates");
    }
    if roots.is_empty() {
        return Err(TlsConfigError::NoRoots(source.to_owned()));
    }
    Ok(roots)
}

/// [`TlsVerify::Insecure`]: any certificate is accepted, but the handshake
/// signatures are verified with the provider's algorithms, so the peer must
/// hold the private key of the certificate it presents.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Certificates and a rustls server for tests of this module and of
/// [`super::session`].
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    /// A CA and a server certificate it signed.
    pub(crate) struct TestPki {
        /// The CA certificate, PEM.
        pub ca_pem: String,
        /// Server configuration presenting the leaf.
        pub server: Arc<rustls::ServerConfig>,
    }

    /// A fresh CA and a leaf for `name` (DNS SAN).
    pub(crate) fn pki(name: &str) -> TestPki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let chain = vec![CertificateDer::from(leaf.der().to_vec())];
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        TestPki {
            ca_pem: ca_cert.pem(),
            server: Arc::new(server),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    use super::testing::pki;
    use super::*;

    /// One handshake against an in-process rustls server presenting a leaf
    /// for `mx.test`; returns the client's result.
    async fn handshake_with(client: &TlsClient, name: &str) -> io::Result<TlsInfo> {
        let server_pki = pki("mx.test");
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(server_pki.server.clone());
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let _ = tls.write_all(b"hi").await;
                let _ = tls.shutdown().await;
            }
        });
        let tcp = TcpStream::connect(addr).await?;
        let result = client
            .handshake(tcp, name, addr.ip(), Duration::from_secs(5))
            .await;
        let info = match result {
            Ok(mut tls) => {
                let mut buf = [0; 2];
                tls.read_exact(&mut buf).await?;
                assert_eq!(&buf, b"hi");
                TlsInfo::of(&tls, client.authenticates_server())
            }
            Err(e) => {
                server.abort();
                return Err(e);
            }
        };
        server.await.unwrap();
        Ok(info.unwrap())
    }

    fn write_pem(pem: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, pem.as_bytes()).unwrap();
        file
    }

    #[test]
    fn defaults_are_opportunistic_and_unauthenticated() {
        assert_eq!(TlsPolicy::default(), TlsPolicy::Opportunistic);
        assert_eq!(TlsVerify::default(), TlsVerify::Insecure);
        let client = TlsClient::new(&TlsVerify::Insecure).unwrap();
        assert!(!client.authenticates_server());
    }

    #[tokio::test]
    async fn insecure_accepts_any_certificate_and_name() {
        let client = TlsClient::new(&TlsVerify::Insecure).unwrap();
        let info = handshake_with(&client, "some.other.name").await.unwrap();
        assert_eq!(info.version, rustls::ProtocolVersion::TLSv1_3);
        assert!(!info.authenticated);
        assert!(info.to_string().starts_with("TLSv1.3 "), "{info}");
    }

    #[tokio::test]
    async fn custom_roots_verify_chain_and_name() {
        // The CA of the server under test is generated inside handshake_with:
        // build a server here instead to know its CA.
        let server_pki = pki("mx.test");
        let roots = write_pem(&server_pki.ca_pem);
        let client = TlsClient::new(&TlsVerify::CustomRoots(roots.path().into())).unwrap();
        assert!(client.authenticates_server());
        for (name, ok) in [("mx.test", true), ("mx.test.", true), ("other.test", false)] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let acceptor = TlsAcceptor::from(server_pki.server.clone());
            let server = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let _ = acceptor.accept(tcp).await;
            });
            let tcp = TcpStream::connect(addr).await.unwrap();
            let result = client
                .handshake(tcp, name, addr.ip(), Duration::from_secs(5))
                .await;
            assert_eq!(result.is_ok(), ok, "{name}: {result:?}");
            server.await.unwrap();
        }
        // A server whose certificate comes from another CA is refused.
        let e = handshake_with(&client, "mx.test").await.unwrap_err();
        assert!(e.to_string().contains("certificate"), "{e}");
    }

    #[test]
    fn bad_roots_files_are_errors() {
        let missing = TlsClient::new(&TlsVerify::CustomRoots("/nonexistent/ca.pem".into()));
        assert!(
            matches!(missing, Err(TlsConfigError::Pem { .. })),
            "{missing:?}"
        );
        let empty = write_pem("no certificates here\n");
        let e = TlsClient::new(&TlsVerify::CustomRoots(empty.path().into())).unwrap_err();
        assert!(matches!(e, TlsConfigError::NoRoots(_)), "{e:?}");
    }
}
