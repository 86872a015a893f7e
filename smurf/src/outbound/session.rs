//! Opening a ready-to-send SMTP session to one host: TCP connect, greeting
//! and EHLO, STARTTLS according to a [`TlsPolicy`], EHLO again, then AUTH to
//! a relay when credentials are configured.
//!
//! This is the one place where the order of those steps and the fallbacks
//! between them are decided, so that every caller (direct-to-MX delivery,
//! smarthost relaying, tests) gets the same security behaviour: under
//! [`TlsPolicy::Required`] nothing but EHLO/STARTTLS/QUIT ever travels in
//! plaintext, and credentials are never sent unencrypted unless
//! [`SessionSettings::allow_plaintext_auth`] says so.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::smtp::{ClientConfig, Credentials, Phase, SmtpClient, SmtpError, StartTls, Timeouts};
use super::tls::{TlsClient, TlsInfo, TlsPolicy};

/// A TCP stream, in plaintext or TLS-wrapped after STARTTLS.
#[derive(Debug)]
pub enum MaybeTls {
    /// Plaintext TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: the rustls state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

impl MaybeTls {
    /// Whether the stream is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }

    /// The underlying TCP stream.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            MaybeTls::Plain(s) => s,
            MaybeTls::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How [`open_session`] connects and what it negotiates.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Our EHLO name (see [`ClientConfig::helo_name`]).
    pub helo_name: String,
    /// Per-phase SMTP timeouts; [`Timeouts::command`] also bounds the TLS
    /// handshake.
    pub timeouts: Timeouts,
    /// When to use STARTTLS.
    pub tls: TlsPolicy,
    /// The shared TLS configuration (certificate verification included).
    pub tls_client: TlsClient,
    /// Credentials for AUTH (relays/smarthosts); `None`: no AUTH.
    pub auth: Option<Credentials>,
    /// Allow AUTH on an unencrypted session. Off by default: the password
    /// would cross the network in clear (base64 is no protection).
    pub allow_plaintext_auth: bool,
    /// Bound on the TCP connect.
    pub connect_timeout: Duration,
}

impl SessionSettings {
    /// Settings with [`TlsPolicy::Opportunistic`], no AUTH, RFC 5321 default
    /// timeouts and a 30 s connect timeout (Postfix's default).
    pub fn new(helo_name: impl Into<String>, tls_client: TlsClient) -> Self {
        Self {
            helo_name: helo_name.into(),
            timeouts: Timeouts::default(),
            tls: TlsPolicy::Opportunistic,
            tls_client,
            auth: None,
            allow_plaintext_auth: false,
            connect_timeout: Duration::from_secs(30),
        }
    }

    fn client_config(&self) -> ClientConfig {
        ClientConfig {
            helo_name: self.helo_name.clone(),
            timeouts: self.timeouts,
        }
    }
}

/// An open SMTP session, ready for [`SmtpClient::send`].
#[derive(Debug)]
pub struct Session {
    /// The SMTP client, past EHLO (and STARTTLS and AUTH, when done).
    pub client: SmtpClient<MaybeTls>,
    /// What TLS negotiated; `None`: the session is in plaintext.
    pub tls: Option<TlsInfo>,
    /// The server's address.
    pub peer: SocketAddr,
    /// Under [`TlsPolicy::Opportunistic`], why TLS was given up after
    /// STARTTLS was attempted (failed handshake, then a new plaintext
    /// connection), for logs. `None` otherwise.
    pub tls_fallback: Option<SmtpError>,
}

/// Opens a session to `addr`. `server_name` is the host name the address was
/// found for (MX or relay name): sent as TLS SNI and, unless verification is
/// [`TlsVerify::Insecure`](super::tls::TlsVerify::Insecure), checked
/// against the certificate.
///
/// Steps: TCP connect ([`Phase::Connect`] errors), greeting and EHLO, then
/// per [`SessionSettings::tls`]:
/// - with [`TlsPolicy::Disabled`], plaintext;
/// - with [`TlsPolicy::Opportunistic`], STARTTLS if offered; a refusal keeps
///   the plaintext session; a failed handshake reconnects in plaintext
///   (without STARTTLS) and records the error in [`Session::tls_fallback`];
/// - with [`TlsPolicy::Required`], STARTTLS not offered or refused →
///   [`SmtpError::TlsRequired`]; failed handshake →
///   [`SmtpError::TlsHandshake`]; both temporary, returned after a QUIT
///   when possible.
///
/// Then EHLO again over TLS, and AUTH with [`SessionSettings::auth`]: PLAIN
/// or LOGIN (see [`SmtpClient::authenticate`]), refused with
/// [`SmtpError::AuthUnavailable`] on a plaintext session unless
/// [`SessionSettings::allow_plaintext_auth`]. A 535 is a permanent
/// [`SmtpError::Rejected`], a 454 a temporary one.
pub async fn open_session(
    addr: SocketAddr,
    server_name: &str,
    settings: &SessionSettings,
) -> Result<Session, SmtpError> {
    let client = connect(addr, settings).await?;
    let (mut client, tls, tls_fallback) =
        negotiate_tls(client, addr, server_name, settings).await?;
    if let Some(credentials) = &settings.auth {
        if tls.is_none() && !settings.allow_plaintext_auth {
            let _ = client.quit().await;
            return Err(SmtpError::AuthUnavailable(
                "the session is not encrypted and plaintext AUTH is not allowed".into(),
            ));
        }
        if let Err(e) = client.authenticate(credentials).await {
            let _ = client.quit().await;
            return Err(e);
        }
    }
    Ok(Session {
        client,
        tls,
        peer: addr,
        tls_fallback,
    })
}

type Negotiated = (SmtpClient<MaybeTls>, Option<TlsInfo>, Option<SmtpError>);

/// STARTTLS per the policy (see [`open_session`]).
async fn negotiate_tls(
    client: SmtpClient<MaybeTls>,
    addr: SocketAddr,
    server_name: &str,
    settings: &SessionSettings,
) -> Result<Negotiated, SmtpError> {
    let required = match settings.tls {
        TlsPolicy::Disabled => return Ok((client, None, None)),
        TlsPolicy::Required => true,
        TlsPolicy::Opportunistic => false,
    };
    if !client.capabilities().starttls {
        if required {
            let _ = client.quit().await;
            return Err(SmtpError::TlsRequired(
                "the server does not offer STARTTLS".into(),
            ));
        }
        return Ok((client, None, None));
    }
    let tcp = match client.starttls().await? {
        StartTls::Refused(client, reply) => {
            if required {
                let _ = client.quit().await;
                return Err(SmtpError::TlsRequired(format!(
                    "the server refused STARTTLS: {reply}"
                )));
            }
            tracing::debug!(%addr, %reply, "STARTTLS refused, continuing in plaintext");
            return Ok((client, None, None));
        }
        StartTls::Ready(MaybeTls::Plain(tcp)) => tcp,
        // Unreachable through this module: STARTTLS is only sent once, on a
        // plaintext session.
        StartTls::Ready(MaybeTls::Tls(_)) => {
            return Err(SmtpError::TlsHandshake(io::Error::other(
                "STARTTLS on an already encrypted session",
            )))
        }
    };
    let tls_client = &settings.tls_client;
    let handshake = tls_client
        .handshake(tcp, server_name, addr.ip(), settings.timeouts.command)
        .await;
    match handshake {
        Ok(stream) => {
            let info = TlsInfo::of(&stream, tls_client.authenticates_server());
            let stream = MaybeTls::Tls(Box::new(stream));
            let client = SmtpClient::after_tls(stream, settings.client_config()).await?;
            Ok((client, info, None))
        }
        Err(e) if required => Err(SmtpError::TlsHandshake(e)),
        Err(e) => {
            tracing::info!(%addr, server_name, error = %e,
                "TLS handshake failed, retrying in plaintext on a new connection");
            let client = connect(addr, settings).await?;
            Ok((client, None, Some(SmtpError::TlsHandshake(e))))
        }
    }
}

/// TCP connect, greeting, EHLO.
async fn connect(
    addr: SocketAddr,
    settings: &SessionSettings,
) -> Result<SmtpClient<MaybeTls>, SmtpError> {
    let limit = settings.connect_timeout;
    let tcp = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(source)) => {
            return Err(SmtpError::Io {
                phase: Phase::Connect,
                source,
            })
        }
        Err(_) => {
            return Err(SmtpError::Timeout {
                phase: Phase::Connect,
                after: limit,
            })
        }
    };
    // Commands are small and latency-bound (the client flushes after each).
    let _ = tcp.set_nodelay(true);
    SmtpClient::connect(MaybeTls::Plain(tcp), settings.client_config()).await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    use super::*;
    use crate::outbound::tls::testing::{pki, TestPki};
    use crate::outbound::tls::TlsVerify;
    use crate::smtp::line::LineReader;

    /// The scripted server side of one connection.
    struct Fake<S> {
        io: LineReader<S>,
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> Fake<S> {
        fn new(io: S) -> Self {
            Self {
                io: LineReader::new(io, 1 << 16),
            }
        }

        async fn send(&mut self, s: &str) {
            self.io.get_mut().write_all(s.as_bytes()).await.unwrap();
        }

        /// The next command line, `None` if the client closed.
        async fn line(&mut self) -> Option<String> {
            let line = self.io.read_line().await.unwrap()?;
            Some(String::from_utf8(line.bytes.to_vec()).unwrap())
        }

        async fn expect(&mut self, want: &str) {
            assert_eq!(self.line().await.as_deref(), Some(want));
        }

        /// EHLO and its reply with these capabilities.
        async fn ehlo(&mut self, caps: &[&str]) {
            self.expect("EHLO client.test").await;
            let mut reply = String::from("250-fake.test\r\n");
            for cap in caps {
                reply.push_str(&format!("250-{cap}\r\n"));
            }
            reply.push_str("250 8BITMIME\r\n");
            self.send(&reply).await;
        }

        /// QUIT (if anything comes), then end of stream: nothing else.
        async fn quit_only(&mut self) {
            if let Some(line) = self.line().await {
                assert_eq!(line, "QUIT");
                self.send("221 2.0.0 Bye\r\n").await;
                assert_eq!(self.line().await, None);
            }
        }
    }

    fn settings(tls: TlsPolicy) -> SessionSettings {
        let mut s =
            SessionSettings::new("client.test", TlsClient::new(&TlsVerify::Insecure).unwrap());
        s.tls = tls;
        s.timeouts = Timeouts::uniform(Duration::from_secs(5));
        s.connect_timeout = Duration::from_secs(5);
        s
    }

    fn creds() -> Credentials {
        Credentials {
            username: "user".into(),
            password: "secret".into(),
        }
    }

    /// A listener whose connections are each handled by `script`, in order.
    async fn server<F, Fut>(script: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
    where
        F: FnOnce(TcpListener) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (addr, tokio::spawn(script(listener)))
    }

    async fn accept(listener: &TcpListener, caps: &[&str]) -> Fake<TcpStream> {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut f = Fake::new(tcp);
        f.send("220 fake.test ESMTP\r\n").await;
        f.ehlo(caps).await;
        f
    }

    #[tokio::test]
    async fn required_without_starttls_fails_before_mail() {
        let (addr, srv) = server(|l| async move {
            accept(&l, &["PIPELINING", "AUTH PLAIN"])
                .await
                .quit_only()
                .await;
        })
        .await;
        let mut s = settings(TlsPolicy::Required);
        s.auth = Some(creds());
        let e = open_session(addr, "mx.test", &s).await.unwrap_err();
        assert!(
            matches!(e, SmtpError::TlsRequired(_)) && e.is_temporary(),
            "{e:?}"
        );
        srv.await.unwrap();
    }

    #[tokio::test]
    async fn required_with_starttls_refused_fails() {
        let (addr, srv) = server(|l| async move {
            let mut f = accept(&l, &["STARTTLS"]).await;
            f.expect("STARTTLS").await;
            f.send("454 4.7.0 TLS not available due to local problem\r\n")
                .await;
            f.quit_only().await;
        })
        .await;
        let e = open_session(addr, "mx.test", &settings(TlsPolicy::Required))
            .await
            .unwrap_err();
        assert!(
            matches!(e, SmtpError::TlsRequired(ref m) if m.contains("454")),
            "{e:?}"
        );
        assert!(e.is_temporary());
        srv.await.unwrap();
    }

    #[tokio::test]
    async fn opportunistic_and_disabled_stay_plain() {
        // Opportunistic, STARTTLS not offered; then Disabled, STARTTLS offered
        // but not used; then Opportunistic with STARTTLS refused.
        let (addr, srv) = server(|l| async move {
            accept(&l, &["PIPELINING"]).await.quit_only().await;
            accept(&l, &["STARTTLS"]).await.quit_only().await;
            let mut f = accept(&l, &["STARTTLS"]).await;
            f.expect("STARTTLS").await;
            f.send("454 4.7.0 not now\r\n").await;
            f.quit_only().await;
        })
        .await;
        for policy in [
            TlsPolicy::Opportunistic,
            TlsPolicy::Disabled,
            TlsPolicy::Opportunistic,
        ] {
            let session = open_session(addr, "mx.test", &settings(policy))
                .await
                .unwrap();
            assert!(session.tls.is_none() && session.tls_fallback.is_none());
            assert!(!session.client.get_ref().is_tls());
            assert_eq!(session.peer, addr);
            session.client.quit().await.unwrap();
        }
        srv.await.unwrap();
    }

    /// After the STARTTLS 220: waits for the ClientHello, answers `junk`
    /// and hangs up.
    async fn not_tls(f: Fake<TcpStream>, junk: &[u8]) {
        let (mut tcp, rest) = f.io.into_parts();
        assert!(rest.is_empty());
        let mut hello = [0; 512];
        assert!(tcp.read(&mut hello).await.unwrap() > 0);
        let _ = tcp.write_all(junk).await;
    }

    #[tokio::test]
    async fn failed_handshake_falls_back_to_a_new_plain_connection() {
        let (addr, srv) = server(|l| async move {
            let mut f = accept(&l, &["STARTTLS"]).await;
            f.expect("STARTTLS").await;
            f.send("220 2.0.0 Ready to start TLS\r\n").await;
            // Not a TLS server: garbage instead of a ServerHello.
            not_tls(f, b"HTTP/1.0 400 nope\r\n\r\n").await;
            // The client comes back without STARTTLS.
            let mut f = accept(&l, &["STARTTLS"]).await;
            f.expect("NOOP").await;
            f.send("250 2.0.0 Ok\r\n").await;
            f.quit_only().await;
        })
        .await;
        let mut session = open_session(addr, "mx.test", &settings(TlsPolicy::Opportunistic))
            .await
            .unwrap();
        assert!(session.tls.is_none());
        assert!(matches!(
            session.tls_fallback,
            Some(SmtpError::TlsHandshake(_))
        ));
        session.client.noop().await.unwrap();
        session.client.quit().await.unwrap();
        srv.await.unwrap();
    }

    #[tokio::test]
    async fn required_failed_handshake_is_temporary() {
        let (addr, srv) = server(|l| async move {
            let mut f = accept(&l, &["STARTTLS"]).await;
            f.expect("STARTTLS").await;
            f.send("220 2.0.0 Ready to start TLS\r\n").await;
            not_tls(f, b"garbage garbage\r\n").await;
        })
        .await;
        let e = open_session(addr, "mx.test", &settings(TlsPolicy::Required))
            .await
            .unwrap_err();
        assert!(
            matches!(e, SmtpError::TlsHandshake(_)) && e.is_temporary(),
            "{e:?}"
        );
        srv.await.unwrap();
    }

    #[tokio::test]
    async fn auth_needs_tls_unless_allowed() {
        let (addr, srv) = server(|l| async move {
            accept(&l, &["AUTH PLAIN LOGIN"]).await.quit_only().await;
            let mut f = accept(&l, &["AUTH LOGIN PLAIN"]).await;
            f.expect("AUTH PLAIN AHVzZXIAc2VjcmV0").await;
            f.send("235 2.7.0 Authentication successful\r\n").await;
            f.quit_only().await;
        })
        .await;
        let mut s = settings(TlsPolicy::Opportunistic);
        s.auth = Some(creds());
        let e = open_session(addr, "mx.test", &s).await.unwrap_err();
        assert!(matches!(e, SmtpError::AuthUnavailable(_)), "{e:?}");
        s.allow_plaintext_auth = true;
        let session = open_session(addr, "mx.test", &s).await.unwrap();
        session.client.quit().await.unwrap();
        srv.await.unwrap();
    }

    #[tokio::test]
    async fn auth_535_over_tls_is_permanent() {
        let pki = pki("mx.test");
        let (addr, srv) = tls_auth_server(&pki, "535 5.7.8 Error: authentication failed").await;
        let mut s = settings(TlsPolicy::Required);
        s.auth = Some(creds());
        let e = open_session(addr, "mx.test", &s).await.unwrap_err();
        assert!(
            matches!(&e, SmtpError::Rejected { phase: Phase::Auth, reply } if reply.code == 535),
            "{e:?}"
        );
        assert!(!e.is_temporary());
        srv.await.unwrap();
    }

    #[tokio::test]
    async fn starttls_then_auth_with_verified_certificate() {
        let pki = pki("mx.test");
        let (addr, srv) = tls_auth_server(&pki, "235 2.7.0 Authentication successful").await;
        let pem = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(pem.path(), &pki.ca_pem).unwrap();
        let mut s = settings(TlsPolicy::Required);
        s.tls_client = TlsClient::new(&TlsVerify::CustomRoots(pem.path().into())).unwrap();
        s.auth = Some(creds());
        let session = open_session(addr, "mx.test", &s).await.unwrap();
        let info = session.tls.unwrap();
        assert!(info.authenticated);
        assert!(session.client.get_ref().is_tls());
        assert!(session.client.capabilities().has("AUTH"));
        session.client.quit().await.unwrap();
        srv.await.unwrap();
    }

    /// A server offering STARTTLS, then AUTH PLAIN over TLS answered with
    /// `auth_reply`.
    async fn tls_auth_server(
        pki: &TestPki,
        auth_reply: &'static str,
    ) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let acceptor = TlsAcceptor::from(pki.server.clone());
        server(move |l| async move {
            let mut f = accept(&l, &["STARTTLS"]).await;
            f.expect("STARTTLS").await;
            f.send("220 2.0.0 Ready to start TLS\r\n").await;
            let (tcp, rest) = f.io.into_parts();
            assert!(rest.is_empty());
            let mut f = Fake::new(acceptor.accept(tcp).await.unwrap());
            f.ehlo(&["AUTH PLAIN LOGIN"]).await;
            f.expect("AUTH PLAIN AHVzZXIAc2VjcmV0").await;
            f.send(&format!("{auth_reply}\r\n")).await;
            f.quit_only().await;
        })
        .await
    }
}
