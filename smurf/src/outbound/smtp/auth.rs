//! AUTH to a relay (RFC 4954): the credentials, the PLAIN and LOGIN mechanisms, and how an
//! exchange ends. Apart from the session code because a relay's login is its own small
//! protocol inside SMTP.

use std::fmt;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Phase, SmtpClient, SmtpError};
use crate::smtp::reply::{ProtocolError, Reply};

/// A user name and password for AUTH (RFC 4954) to a relay. `Debug` does
/// not print the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// SASL authentication identity (user name).
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Checks the credentials can be sent with every mechanism we support.
    fn check(&self) -> Result<(), SmtpError> {
        if self.username.is_empty() {
            return Err(SmtpError::InvalidCredentials("empty user name"));
        }
        if self.username.contains('\0') || self.password.contains('\0') {
            return Err(SmtpError::InvalidCredentials("NUL byte"));
        }
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> SmtpClient<S> {
    /// Authenticates with the mechanism the server prefers among those we
    /// support: PLAIN, else LOGIN (from the EHLO `AUTH` capability). Errors
    /// with [`SmtpError::AuthUnavailable`] when neither is offered. Whether
    /// the stream is encrypted is the caller's business (see
    /// [`super::session::open_session`]).
    pub async fn authenticate(&mut self, credentials: &Credentials) -> Result<Reply, SmtpError> {
        let offered = |m: &str| self.caps.auth.iter().any(|a| a.eq_ignore_ascii_case(m));
        if offered("PLAIN") {
            self.auth_plain(credentials).await
        } else if offered("LOGIN") {
            self.auth_login(credentials).await
        } else if self.caps.auth.is_empty() {
            Err(SmtpError::AuthUnavailable(
                "server does not offer AUTH".into(),
            ))
        } else {
            Err(SmtpError::AuthUnavailable(format!(
                "no supported mechanism among {}",
                self.caps.auth.join(" ")
            )))
        }
    }

    /// AUTH PLAIN (RFC 4616) with the credentials as initial response (sent
    /// after an empty 334 challenge instead when the command would be too
    /// long). 235 → `Ok`; a 4xx/5xx (454 temporary failure, 535 bad
    /// credentials) → [`SmtpError::Rejected`] with [`Phase::Auth`], whose
    /// [`SmtpError::is_temporary`] follows the reply class; the session stays
    /// usable after such a refusal.
    pub async fn auth_plain(&mut self, credentials: &Credentials) -> Result<Reply, SmtpError> {
        self.ready_for_auth(credentials)?;
        let mut token = Vec::with_capacity(credentials.username.len() * 2 + 2);
        token.push(0);
        token.extend_from_slice(credentials.username.as_bytes());
        token.push(0);
        token.extend_from_slice(credentials.password.as_bytes());
        let token = base64(&token);
        // RFC 4954 §4: the command line is limited to 512 octets.
        let reply = if token.len() <= 490 {
            self.auth_step(format!("AUTH PLAIN {token}\r\n")).await?
        } else {
            let reply = self.auth_step("AUTH PLAIN\r\n".into()).await?;
            if reply.code != 334 {
                return self.auth_end(reply);
            }
            self.auth_step(format!("{token}\r\n")).await?
        };
        self.auth_end(reply)
    }

    /// AUTH LOGIN (the obsolete but widespread mechanism): user name and
    /// password each answer a 334 challenge. Outcomes as for
    /// [`SmtpClient::auth_plain`].
    pub async fn auth_login(&mut self, credentials: &Credentials) -> Result<Reply, SmtpError> {
        self.ready_for_auth(credentials)?;
        let mut reply = self.auth_step("AUTH LOGIN\r\n".into()).await?;
        for secret in [&credentials.username, &credentials.password] {
            if reply.code != 334 {
                return self.auth_end(reply);
            }
            reply = self
                .auth_step(format!("{}\r\n", base64(secret.as_bytes())))
                .await?;
        }
        self.auth_end(reply)
    }

    fn ready_for_auth(&self, credentials: &Credentials) -> Result<(), SmtpError> {
        if self.broken {
            return Err(SmtpError::Broken);
        }
        credentials.check()
    }

    async fn auth_step(&mut self, line: String) -> Result<Reply, SmtpError> {
        let t = self.config.timeouts.command;
        self.command(line.as_bytes(), Phase::Auth, t).await
    }

    /// Final reply of an AUTH exchange. A 334 here means the server wants
    /// more than the mechanism has to say: the exchange is out of step, so
    /// the session is abandoned.
    fn auth_end(&mut self, reply: Reply) -> Result<Reply, SmtpError> {
        if reply.code == 235 {
            Ok(reply)
        } else if reply.is_transient() || reply.is_permanent() {
            Err(SmtpError::Rejected {
                phase: Phase::Auth,
                reply,
            })
        } else {
            self.broken = true;
            Err(SmtpError::Protocol {
                phase: Phase::Auth,
                error: ProtocolError::UnexpectedReply(reply),
            })
        }
    }
}

/// Standard base64 with padding (RFC 4648 §4), as SASL over SMTP uses.
pub(super) fn base64(input: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
}
