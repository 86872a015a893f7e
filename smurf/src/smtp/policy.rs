//! What the shared SMTP server core ([`super::server`]) asks the receiver built
//! on it: whom to greet, which senders, recipients and messages to take, and
//! what to answer.
//!
//! The core owns the protocol (syntax, order of commands, limits, timeouts,
//! STARTTLS, pipelining, DATA); a [`Handler`] owns the decisions. Keeping the
//! two apart is what lets the capture receiver, the fault sink and the inbound
//! MX share one implementation of the protocol.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use super::command::Param;

/// One SMTP reply: a code and its text (enhanced status code included, e.g.
/// `"2.0.0 Ok"`). Multi-line replies are built by the core only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit reply code.
    pub code: u16,
    /// The text after the code, without line break.
    pub text: Cow<'static, str>,
}

impl Reply {
    /// A reply from a code and a text.
    pub fn new(code: u16, text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            text: text.into(),
        }
    }
}

/// What the core does with a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Send the reply and go on with the session.
    Reply(Reply),
    /// Send the reply, then close the connection.
    Close(Reply),
    /// Close the connection without any reply (an imitation of a crashed or
    /// cut-off peer).
    Drop,
}

impl Answer {
    /// Shorthand for [`Answer::Reply`].
    pub fn reply(code: u16, text: impl Into<Cow<'static, str>>) -> Self {
        Self::Reply(Reply::new(code, text))
    }

    /// Shorthand for [`Answer::Close`].
    pub fn close(code: u16, text: impl Into<Cow<'static, str>>) -> Self {
        Self::Close(Reply::new(code, text))
    }
}

/// Why the core refused a connection before any handler saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server already holds its most concurrent sessions.
    TooManySessions,
    /// This client IP already holds its most concurrent sessions.
    TooManyFromIp,
}

/// The envelope of the transaction in progress, as the core saw it.
#[derive(Debug, Clone, Default)]
pub struct Envelope {
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// The name the client gave in EHLO/HELO.
    pub helo: String,
    /// Whether the session is under TLS (STARTTLS done).
    pub tls: bool,
    /// The reverse-path, empty for the null sender.
    pub from: String,
    /// `SMTPUTF8` was given on MAIL.
    pub smtputf8: bool,
    /// Recipients accepted so far, in order.
    pub rcpts: Vec<String>,
}

/// A RCPT command as the handler sees it.
#[derive(Debug, Clone, Copy)]
pub struct Rcpt<'a> {
    /// The forward-path, without brackets (a source route, if any, removed).
    pub path: &'a str,
    /// ESMTP parameters.
    pub params: &'a [Param],
    /// The client wrote a source route (`@a,@b:user@c`): receivers that must
    /// never relay refuse these.
    pub source_route: bool,
}

/// A receiver's decisions for the whole server: one value shared by all
/// sessions.
pub trait Handler: Send + Sync + 'static {
    /// Per-connection state and decisions.
    type Session: SessionHandler;

    /// A new connection the core's limits let through: its session state and
    /// the greeting. A greeting whose code is not 220 refuses service: the
    /// core then answers 503 to everything but QUIT; [`Answer::Close`] closes
    /// right after it.
    fn connect(&self, peer: SocketAddr) -> (Self::Session, Answer);

    /// The reply sent to a connection the core refused (it is closed after).
    fn refused(&self, peer: SocketAddr, why: Refusal) -> Reply {
        let _ = peer;
        match why {
            Refusal::TooManySessions => {
                Reply::new(421, "4.3.2 Too many connections, try again later")
            }
            Refusal::TooManyFromIp => {
                Reply::new(421, "4.7.0 Too many connections from your address")
            }
        }
    }

    /// Delay before each reply of every session (greeting and refusals
    /// included). Zero for a well-behaved server.
    fn reply_delay(&self) -> Duration {
        Duration::ZERO
    }
}

/// Something the core decided on its own in a session, told to the handler so
/// it can count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreEvent {
    /// A message was refused for its size (552).
    MessageTooBig,
    /// A message was refused for an over-long line (554).
    LineTooLong,
    /// A RCPT beyond the per-message limit got 452.
    TooManyRecipients,
    /// The session was closed after too many bad commands.
    TooManyErrors,
    /// The session was closed because the client was too slow.
    Timeout,
    /// STARTTLS completed.
    TlsStarted,
    /// The TLS handshake after STARTTLS failed.
    TlsFailed,
}

/// A receiver's decisions for one session. The core calls these only with
/// syntactically valid, correctly ordered commands within its limits.
pub trait SessionHandler: Send + Sync + 'static {
    /// Something the core decided by itself (for counters); default: ignored.
    fn note(&mut self, event: CoreEvent) {
        let _ = event;
    }

    /// `MAIL FROM`; the default takes every sender.
    fn mail(&mut self, envelope: &Envelope) -> Answer {
        let _ = envelope;
        Answer::reply(250, "2.1.0 Ok")
    }

    /// `RCPT TO`: a 2xx answer adds `rcpt.path` to the envelope.
    fn rcpt(&mut self, envelope: &Envelope, rcpt: Rcpt<'_>) -> Answer;

    /// The complete message, dot-unstuffed, with CRLF line ends. A 2xx
    /// answer tells the client the message is taken: a receiver that keeps
    /// messages must have stored it durably before answering.
    fn message(
        &mut self,
        envelope: &Envelope,
        content: Vec<u8>,
    ) -> impl Future<Output = Answer> + Send;
}
