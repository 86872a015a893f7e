//! What an SMTP session can end in: the phase a reply belongs to, a message's definite outcome
//! ([`Delivery`]) and the session's errors ([`SmtpError`]), with whether each is temporary.

use std::fmt;
use std::time::Duration;

use crate::smtp::reply::{ProtocolError, Reply};

/// A step of the SMTP exchange, for errors and for telling where a message
/// was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Decided by this client without asking the server (size limit,
    /// SMTPUTF8 not offered, unusable address).
    Local,
    /// Opening the TCP connection (see [`super::session::open_session`]).
    Connect,
    /// Waiting for the 220 greeting.
    Greeting,
    /// EHLO.
    Ehlo,
    /// HELO (fallback after EHLO got 5xx).
    Helo,
    /// STARTTLS, including the TLS handshake.
    StartTls,
    /// AUTH (RFC 4954), including the SASL exchange.
    Auth,
    /// MAIL FROM.
    MailFrom,
    /// RCPT TO.
    RcptTo,
    /// DATA, up to the 354.
    Data,
    /// Writing the message content.
    DataBody,
    /// Waiting for the reply to the final `.`.
    DataEnd,
    /// RSET.
    Rset,
    /// NOOP.
    Noop,
    /// QUIT.
    Quit,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Local => "local checks",
            Phase::Connect => "connect",
            Phase::Greeting => "greeting",
            Phase::Ehlo => "EHLO",
            Phase::Helo => "HELO",
            Phase::StartTls => "STARTTLS",
            Phase::Auth => "AUTH",
            Phase::MailFrom => "MAIL FROM",
            Phase::RcptTo => "RCPT TO",
            Phase::Data => "DATA",
            Phase::DataBody => "message content",
            Phase::DataEnd => "end of data",
            Phase::Rset => "RSET",
            Phase::Noop => "NOOP",
            Phase::Quit => "QUIT",
        })
    }
}

/// A message refused with a definite reply, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Which step refused it ([`Phase::Local`] if this client decided).
    pub phase: Phase,
    /// The server's reply, or a synthesised one for [`Phase::Local`].
    pub reply: Reply,
}

/// The definite outcome of one message. Only produced when the server gave a
/// clear answer (or a local check refused the message); anything uncertain is
/// an [`SmtpError`] instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// 2xx to the final `.`: the server took responsibility for the message.
    Delivered(Reply),
    /// 4xx at some step: try again later (possibly via another MX).
    Deferred(Rejection),
    /// 5xx at some step, or a local check: do not retry as is.
    Failed(Rejection),
}

impl Delivery {
    /// The reply that decided the outcome.
    pub fn reply(&self) -> &Reply {
        match self {
            Delivery::Delivered(r) => r,
            Delivery::Deferred(r) | Delivery::Failed(r) => &r.reply,
        }
    }

    /// Whether the message was accepted.
    pub fn is_delivered(&self) -> bool {
        matches!(self, Delivery::Delivered(_))
    }
}

/// Errors of an SMTP session. After any variant except [`SmtpError::Rejected`]
/// (when the reply was not 421) the client is broken: see
/// [`SmtpClient::is_broken`].
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    /// The stream failed (reset, broken pipe, TLS error...). Temporary.
    #[error("I/O error during {phase}: {source}")]
    Io {
        /// Where it happened.
        phase: Phase,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The server did not complete a reply (or accept a write) in time.
    /// Temporary.
    #[error("timed out after {after:?} during {phase}")]
    Timeout {
        /// Where it happened.
        phase: Phase,
        /// The timeout that expired.
        after: Duration,
    },
    /// The server closed the connection before replying. Temporary.
    #[error("connection closed by the server during {phase}")]
    Closed {
        /// Where it happened.
        phase: Phase,
    },
    /// The server violated the protocol or our limits. Temporary (another
    /// attempt, maybe with another MX, may work).
    #[error("protocol error during {phase}: {error}")]
    Protocol {
        /// Where it happened.
        phase: Phase,
        /// What was wrong.
        #[source]
        error: ProtocolError,
    },
    /// The server refused a session command (greeting, EHLO/HELO, RSET, NOOP,
    /// STARTTLS). Temporary unless the reply is 5xx.
    #[error("server refused {phase}: {reply}")]
    Rejected {
        /// The refused step.
        phase: Phase,
        /// The server's reply.
        reply: Reply,
    },
    /// [`ClientConfig::helo_name`] is empty or contains spaces or control
    /// characters. Permanent (fix the configuration).
    #[error("invalid HELO name {0:?}")]
    InvalidHeloName(String),
    /// The client was already broken by an earlier error; open a new session.
    /// Temporary.
    #[error("SMTP session unusable after an earlier error")]
    Broken,
    /// TLS is required ([`TlsPolicy::Required`](super::tls::TlsPolicy))
    /// but the server did not offer STARTTLS or refused it. Nothing was sent
    /// in plaintext beyond EHLO. Temporary (the server may be fixed).
    #[error("TLS required but {0}")]
    TlsRequired(String),
    /// The TLS handshake after STARTTLS failed (certificate verification
    /// included) or timed out. Temporary; under
    /// [`TlsPolicy::Opportunistic`](super::tls::TlsPolicy) the session layer
    /// retries in plaintext on a new connection instead.
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(#[source] std::io::Error),
    /// AUTH could not be attempted: the server offers no mechanism we
    /// support (PLAIN, LOGIN), or the session is not encrypted and plaintext
    /// AUTH is not allowed. Temporary: like Postfix, a relay that cannot
    /// authenticate us defers mail rather than bouncing it (TLS may work on
    /// the next attempt, the relay may be fixed).
    #[error("cannot authenticate: {0}")]
    AuthUnavailable(String),
    /// The configured credentials cannot be sent (empty user name, or a NUL
    /// byte, which SASL PLAIN uses as separator). Permanent (fix the
    /// configuration).
    #[error("invalid AUTH credentials: {0}")]
    InvalidCredentials(&'static str),
}

impl SmtpError {
    /// Whether retrying later (or elsewhere) makes sense. `true` for every
    /// error that leaves a message's fate unknown: such a message was never
    /// reported delivered.
    pub fn is_temporary(&self) -> bool {
        match self {
            SmtpError::Rejected { reply, .. } => !reply.is_permanent(),
            SmtpError::InvalidHeloName(_) | SmtpError::InvalidCredentials(_) => false,
            SmtpError::Io { .. }
            | SmtpError::Timeout { .. }
            | SmtpError::Closed { .. }
            | SmtpError::Protocol { .. }
            | SmtpError::Broken
            | SmtpError::TlsRequired(_)
            | SmtpError::TlsHandshake(_)
            | SmtpError::AuthUnavailable(_) => true,
        }
    }
}
