//! The SMTP client at the heart of delivery: one [`SmtpClient`] is one SMTP
//! session (RFC 5321) reused for many single-recipient messages.
//!
//! This module exists so that everything a sender node needs to talk to a
//! receiving MTA lives in one place with one set of rules: bounded reads,
//! per-phase RFC 5321 timeouts, pipelining (RFC 2920), SIZE / 8BITMIME /
//! SMTPUTF8 handling, dot-stuffing, and a strict classification of every
//! attempt into delivered / deferred / failed. Anything that leaves the outcome
//! of a message unknown (I/O error, timeout, disconnect before the final
//! reply) is an [`SmtpError`] whose [`SmtpError::is_temporary`] is `true`: a
//! message is reported [`Delivery::Delivered`] only after a 2xx to the final
//! dot.
//!
//! The client is generic over the byte stream so that routing (TCP to an MX),
//! STARTTLS (see [`SmtpClient::starttls`] and [`SmtpClient::after_tls`]) and
//! tests (`tokio::io::duplex`) can all plug in their own transport.

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

mod auth;
mod outcome;

#[cfg(test)]
use auth::base64;
pub use auth::Credentials;
pub use outcome::{Delivery, Phase, Rejection, SmtpError};

use crate::smtp::line::LineReader;
use crate::smtp::reply::{
    read_reply, Capabilities, EnhancedStatus, ProtocolError, ReadReplyError, Reply, MAX_REPLY_LINE,
};

/// Size of the slices the message body is written in; each slice gets the
/// "data block" timeout.
const DATA_CHUNK: usize = 64 * 1024;

/// Longest address we put in a command (RFC 5321 §4.5.3.1.3: path ≤ 256).
const MAX_ADDRESS: usize = 256;

/// Client-side timeouts, RFC 5321 §4.5.3.2. Each one bounds a whole phase (a
/// complete reply, or one write), so a server that drips one byte at a time
/// still hits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Waiting for the 220 greeting. Default 5 minutes (§4.5.3.2.1).
    pub greeting: Duration,
    /// Any other session command and its reply: EHLO/HELO, STARTTLS, RSET,
    /// NOOP, QUIT. RFC 5321 names none; default 5 minutes like MAIL.
    pub command: Duration,
    /// MAIL FROM and its reply. Default 5 minutes (§4.5.3.2.2).
    pub mail: Duration,
    /// RCPT TO and its reply. Default 5 minutes (§4.5.3.2.3).
    pub rcpt: Duration,
    /// DATA and its 354 reply. Default 2 minutes (§4.5.3.2.4).
    pub data_init: Duration,
    /// Each write of a message block. Default 3 minutes (§4.5.3.2.5).
    pub data_block: Duration,
    /// The reply to the final `.`. Default 10 minutes (§4.5.3.2.6).
    pub data_end: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            greeting: Duration::from_secs(5 * 60),
            command: Duration::from_secs(5 * 60),
            mail: Duration::from_secs(5 * 60),
            rcpt: Duration::from_secs(5 * 60),
            data_init: Duration::from_secs(2 * 60),
            data_block: Duration::from_secs(3 * 60),
            data_end: Duration::from_secs(10 * 60),
        }
    }
}

impl Timeouts {
    /// The same timeout for every phase (handy in tests and benchmarks).
    pub fn uniform(timeout: Duration) -> Self {
        Self {
            greeting: timeout,
            command: timeout,
            mail: timeout,
            rcpt: timeout,
            data_init: timeout,
            data_block: timeout,
            data_end: timeout,
        }
    }
}

/// Session settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Our name in EHLO/HELO: a fully-qualified domain name (or an address
    /// literal like `[192.0.2.1]`). No spaces or control characters.
    pub helo_name: String,
    /// Per-phase timeouts.
    pub timeouts: Timeouts,
}

impl ClientConfig {
    /// Config with the given EHLO name and [`Timeouts::default`].
    pub fn new(helo_name: impl Into<String>) -> Self {
        Self {
            helo_name: helo_name.into(),
            timeouts: Timeouts::default(),
        }
    }
}

/// Result of [`SmtpClient::starttls`].
// Returned once per session and unpacked at once: boxing the client would
// only make the refused path clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum StartTls<S> {
    /// The server said 220: wrap this stream in TLS (client handshake), then
    /// call [`SmtpClient::after_tls`].
    Ready(S),
    /// The server refused; the plaintext session is still usable.
    Refused(SmtpClient<S>, Reply),
}

/// One SMTP session over the stream `S`, reusable for many messages.
///
/// Once [`SmtpClient::is_broken`] is `true` (I/O error, timeout, protocol
/// error, or a 421 from the server) every further command fails with
/// [`SmtpError::Broken`]: drop the client (or [`quit`](SmtpClient::quit) it,
/// which then only shuts the stream down) and connect again.
pub struct SmtpClient<S> {
    io: LineReader<S>,
    config: ClientConfig,
    greeting: Option<Reply>,
    hello: Reply,
    esmtp: bool,
    caps: Capabilities,
    broken: bool,
}

impl<S> fmt::Debug for SmtpClient<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpClient")
            .field("helo_name", &self.config.helo_name)
            .field("esmtp", &self.esmtp)
            .field("caps", &self.caps)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<S> SmtpClient<S> {
    /// Announced capabilities (empty after a HELO fallback).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// The server's 220 greeting (`None` for a session resumed with
    /// [`SmtpClient::after_tls`]).
    pub fn greeting(&self) -> Option<&Reply> {
        self.greeting.as_ref()
    }

    /// The reply to our EHLO (or HELO).
    pub fn hello_reply(&self) -> &Reply {
        &self.hello
    }

    /// Whether EHLO succeeded (`false`: fell back to HELO).
    pub fn is_esmtp(&self) -> bool {
        self.esmtp
    }

    /// Whether the session is unusable (see the type docs).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The session settings.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The underlying stream (e.g. to read the peer address for logs).
    pub fn get_ref(&self) -> &S {
        self.io.get_ref()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> SmtpClient<S> {
    /// Opens a session on a freshly connected stream: reads the 220 greeting,
    /// then EHLO (HELO if EHLO gets a 5xx).
    pub async fn connect(stream: S, config: ClientConfig) -> Result<Self, SmtpError> {
        check_helo_name(&config.helo_name)?;
        let mut client = Self::new(stream, config);
        let greeting = client
            .read_reply(Phase::Greeting, client.config.timeouts.greeting)
            .await?;
        if greeting.code != 220 {
            return Err(SmtpError::Rejected {
                phase: Phase::Greeting,
                reply: greeting,
            });
        }
        client.greeting = Some(greeting);
        client.hello().await?;
        Ok(client)
    }

    /// Resumes a session on the TLS-wrapped stream after
    /// [`StartTls::Ready`]: sends EHLO again (RFC 3207 §4.2: everything
    /// learnt before TLS is discarded).
    pub async fn after_tls(stream: S, config: ClientConfig) -> Result<Self, SmtpError> {
        check_helo_name(&config.helo_name)?;
        let mut client = Self::new(stream, config);
        client.hello().await?;
        Ok(client)
    }

    fn new(stream: S, config: ClientConfig) -> Self {
        Self {
            io: LineReader::new(stream, MAX_REPLY_LINE),
            config,
            greeting: None,
            hello: Reply::new(0, None, ""),
            esmtp: false,
            caps: Capabilities::default(),
            broken: false,
        }
    }

    /// EHLO, falling back to HELO on 5xx.
    async fn hello(&mut self) -> Result<(), SmtpError> {
        let t = self.config.timeouts.command;
        let ehlo = format!("EHLO {}\r\n", self.config.helo_name);
        let reply = self.command(ehlo.as_bytes(), Phase::Ehlo, t).await?;
        if reply.code == 250 {
            self.caps = Capabilities::from_ehlo(&reply);
            self.esmtp = true;
            self.hello = reply;
            return Ok(());
        }
        if !reply.is_permanent() {
            return Err(SmtpError::Rejected {
                phase: Phase::Ehlo,
                reply,
            });
        }
        let helo = format!("HELO {}\r\n", self.config.helo_name);
        let reply = self.command(helo.as_bytes(), Phase::Helo, t).await?;
        if reply.code != 250 {
            return Err(SmtpError::Rejected {
                phase: Phase::Helo,
                reply,
            });
        }
        self.caps = Capabilities::default();
        self.esmtp = false;
        self.hello = reply;
        Ok(())
    }

    /// Sends one message to one recipient and returns its definite outcome.
    ///
    /// `mail_from` and `rcpt_to` are bare addresses without angle brackets
    /// (`mail_from` may be empty for the null reverse-path). `data` is the
    /// complete RFC 5322 message; line endings are normalised to CRLF (a bare
    /// CR or LF becomes CRLF), lines starting with `.` are dot-stuffed, and a
    /// final CRLF is added if missing.
    ///
    /// Extensions: `SIZE=` is declared when offered, and a message over the
    /// announced limit fails locally ([`Phase::Local`], 552 5.3.4) without
    /// being sent. `BODY=8BITMIME` is added for 8-bit content when offered
    /// (without it, 8-bit content is sent as is: no 7-bit downgrade).
    /// `SMTPUTF8` is added when offered and an address or a header is
    /// non-ASCII; a non-ASCII address to a server without it fails locally
    /// (553 5.6.7).
    ///
    /// With PIPELINING, MAIL, RCPT and DATA go out in a single write.
    /// After a refusal before the content is sent, the session is RSET so it
    /// can carry the next message; check [`SmtpClient::is_broken`] after
    /// every call anyway (a 421 outcome, for instance, breaks it).
    ///
    /// An `Err` means the outcome is unknown and the message must be treated
    /// as not delivered. A connection lost after the final `.` was sent but
    /// before the reply may cause a duplicate on retry (RFC 1047); that is
    /// the accepted trade-off.
    pub async fn send(
        &mut self,
        mail_from: &str,
        rcpt_to: &str,
        data: &[u8],
    ) -> Result<Delivery, SmtpError> {
        if self.broken {
            return Err(SmtpError::Broken);
        }
        if let Some(rejection) = self.local_checks(mail_from, rcpt_to) {
            return Ok(Delivery::Failed(rejection));
        }
        let body = encode_data(data);
        let content_len = body.len() - 3; // without the final ".\r\n"
        if let Some(max) = self.caps.max_size() {
            if content_len as u64 > max {
                return Ok(Delivery::Failed(local(
                    552,
                    EnhancedStatus::new(5, 3, 4),
                    format!("message size {content_len} exceeds the server's limit {max}"),
                )));
            }
        }

        let mut mail = format!("MAIL FROM:<{mail_from}>");
        if self.caps.size.is_some() {
            mail.push_str(&format!(" SIZE={content_len}"));
        }
        if self.caps.eight_bit_mime && !data.is_ascii() {
            mail.push_str(" BODY=8BITMIME");
        }
        if self.caps.smtputf8 && needs_smtputf8(mail_from, rcpt_to, data) {
            mail.push_str(" SMTPUTF8");
        }
        mail.push_str("\r\n");
        let rcpt = format!("RCPT TO:<{rcpt_to}>\r\n");

        let envelope = if self.caps.pipelining {
            self.envelope_pipelined(&mail, &rcpt).await?
        } else {
            self.envelope_lockstep(&mail, &rcpt).await?
        };
        if let Some(refused) = envelope {
            self.reset_after_refusal().await;
            return Ok(refused);
        }

        let t = self.config.timeouts;
        for chunk in body.chunks(DATA_CHUNK) {
            self.write(chunk, Phase::DataBody, t.data_block).await?;
        }
        let reply = self.read_reply(Phase::DataEnd, t.data_end).await?;
        if reply.is_positive() {
            return Ok(Delivery::Delivered(reply));
        }
        self.refusal(reply, Phase::DataEnd)
    }

    /// Outcome of a non-positive reply: 4xx deferred, 5xx failed, anything
    /// else (e.g. 354 to MAIL, 250 to DATA) a protocol error that breaks the
    /// session.
    fn refusal(&mut self, reply: Reply, phase: Phase) -> Result<Delivery, SmtpError> {
        if reply.is_transient() {
            Ok(Delivery::Deferred(Rejection { phase, reply }))
        } else if reply.is_permanent() {
            Ok(Delivery::Failed(Rejection { phase, reply }))
        } else {
            self.broken = true;
            Err(SmtpError::Protocol {
                phase,
                error: ProtocolError::UnexpectedReply(reply),
            })
        }
    }

    /// Refusals decided without the server.
    fn local_checks(&self, mail_from: &str, rcpt_to: &str) -> Option<Rejection> {
        for (addr, allow_empty, what) in
            [(mail_from, true, "sender"), (rcpt_to, false, "recipient")]
        {
            if (addr.is_empty() && !allow_empty)
                || addr.len() > MAX_ADDRESS
                || addr.chars().any(|c| c.is_control() || c == '<' || c == '>')
            {
                return Some(local(
                    553,
                    EnhancedStatus::new(5, 1, if what == "sender" { 7 } else { 3 }),
                    format!("unusable {what} address {addr:?}"),
                ));
            }
        }
        if (!mail_from.is_ascii() || !rcpt_to.is_ascii()) && !self.caps.smtputf8 {
            return Some(local(
                553,
                EnhancedStatus::new(5, 6, 7),
                "non-ASCII address but the server does not offer SMTPUTF8",
            ));
        }
        None
    }

    /// MAIL, RCPT, DATA in one write, then their three replies (RFC 2920).
    /// `Ok(None)`: 354 received, send the content.
    async fn envelope_pipelined(
        &mut self,
        mail: &str,
        rcpt: &str,
    ) -> Result<Option<Delivery>, SmtpError> {
        let t = self.config.timeouts;
        let batch = [mail.as_bytes(), rcpt.as_bytes(), b"DATA\r\n"].concat();
        self.write(&batch, Phase::MailFrom, t.mail).await?;

        let mail_reply = self.read_reply(Phase::MailFrom, t.mail).await?;
        if mail_reply.code == 421 {
            return self.refusal(mail_reply, Phase::MailFrom).map(Some);
        }
        let rcpt_reply = self.read_reply(Phase::RcptTo, t.rcpt).await?;
        if rcpt_reply.code == 421 {
            return self.refusal(rcpt_reply, Phase::RcptTo).map(Some);
        }
        let data_reply = self.read_reply(Phase::Data, t.data_init).await?;

        let first_refusal = if !mail_reply.is_positive() {
            Some((mail_reply, Phase::MailFrom))
        } else if !rcpt_reply.is_positive() {
            Some((rcpt_reply, Phase::RcptTo))
        } else {
            None
        };
        match first_refusal {
            Some((reply, phase)) => {
                if data_reply.code == 354 {
                    // The server opened a data phase despite the refusal:
                    // close it empty. Its reply does not matter (the
                    // transaction has no valid recipient) unless it is 421.
                    self.write(b".\r\n", Phase::DataEnd, t.data_end).await?;
                    let _ = self.read_reply(Phase::DataEnd, t.data_end).await?;
                }
                self.refusal(reply, phase).map(Some)
            }
            None if data_reply.code == 354 => Ok(None),
            None => self.refusal(data_reply, Phase::Data).map(Some),
        }
    }

    /// MAIL, RCPT, DATA one at a time. `Ok(None)`: 354 received.
    async fn envelope_lockstep(
        &mut self,
        mail: &str,
        rcpt: &str,
    ) -> Result<Option<Delivery>, SmtpError> {
        let t = self.config.timeouts;
        let reply = self
            .command(mail.as_bytes(), Phase::MailFrom, t.mail)
            .await?;
        if !reply.is_positive() {
            return self.refusal(reply, Phase::MailFrom).map(Some);
        }
        let reply = self.command(rcpt.as_bytes(), Phase::RcptTo, t.rcpt).await?;
        if !reply.is_positive() {
            return self.refusal(reply, Phase::RcptTo).map(Some);
        }
        let reply = self.command(b"DATA\r\n", Phase::Data, t.data_init).await?;
        if reply.code == 354 {
            return Ok(None);
        }
        self.refusal(reply, Phase::Data).map(Some)
    }

    /// Best-effort RSET after a refused envelope; a failure only marks the
    /// session broken (the message outcome is already known).
    async fn reset_after_refusal(&mut self) {
        if self.broken {
            return;
        }
        match self.rset().await {
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "RSET after a refused envelope failed");
                self.broken = true;
            }
        }
    }

    /// Sends RSET: aborts any transaction. Errors with
    /// [`SmtpError::Rejected`] on a non-2xx reply.
    pub async fn rset(&mut self) -> Result<Reply, SmtpError> {
        self.simple(b"RSET\r\n", Phase::Rset).await
    }

    /// Sends NOOP (e.g. to check an idle pooled session is still alive).
    pub async fn noop(&mut self) -> Result<Reply, SmtpError> {
        self.simple(b"NOOP\r\n", Phase::Noop).await
    }

    async fn simple(&mut self, cmd: &[u8], phase: Phase) -> Result<Reply, SmtpError> {
        if self.broken {
            return Err(SmtpError::Broken);
        }
        let t = self.config.timeouts.command;
        let reply = self.command(cmd, phase, t).await?;
        if reply.is_positive() {
            Ok(reply)
        } else {
            Err(SmtpError::Rejected { phase, reply })
        }
    }

    /// Sends STARTTLS (RFC 3207). On 220 returns the raw stream to wrap in
    /// TLS, after checking the server did not send anything more (which
    /// would be an injection attempt). Call between messages only.
    pub async fn starttls(mut self) -> Result<StartTls<S>, SmtpError> {
        if self.broken {
            return Err(SmtpError::Broken);
        }
        let t = self.config.timeouts.command;
        let reply = self.command(b"STARTTLS\r\n", Phase::StartTls, t).await?;
        if reply.code != 220 {
            if self.broken {
                return Err(SmtpError::Rejected {
                    phase: Phase::StartTls,
                    reply,
                });
            }
            return Ok(StartTls::Refused(self, reply));
        }
        let (stream, rest) = self.io.into_parts();
        if !rest.is_empty() {
            return Err(SmtpError::Protocol {
                phase: Phase::StartTls,
                error: ProtocolError::DataAfterStartTls,
            });
        }
        Ok(StartTls::Ready(stream))
    }

    /// Ends the session: QUIT, wait for the reply (best effort: any reply,
    /// or the server simply closing, is fine), shut the stream down. On a
    /// broken client only the shutdown is attempted. An error is only worth
    /// logging: the session is over either way.
    pub async fn quit(mut self) -> Result<(), SmtpError> {
        let t = self.config.timeouts.command;
        let result = if self.broken {
            Ok(())
        } else {
            match self.command(b"QUIT\r\n", Phase::Quit, t).await {
                Ok(_) | Err(SmtpError::Closed { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        };
        // The peer may already be gone: ignore shutdown failures.
        let _ = tokio::time::timeout(t, self.io.get_mut().shutdown()).await;
        result
    }

    /// Writes `cmd` and reads its reply.
    async fn command(
        &mut self,
        cmd: &[u8],
        phase: Phase,
        limit: Duration,
    ) -> Result<Reply, SmtpError> {
        self.write(cmd, phase, limit).await?;
        self.read_reply(phase, limit).await
    }

    /// Writes and flushes within `limit`; any failure breaks the session.
    async fn write(
        &mut self,
        bytes: &[u8],
        phase: Phase,
        limit: Duration,
    ) -> Result<(), SmtpError> {
        let stream = self.io.get_mut();
        let io = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        let result = match tokio::time::timeout(limit, io).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(SmtpError::Io { phase, source }),
            Err(_) => Err(SmtpError::Timeout {
                phase,
                after: limit,
            }),
        };
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    /// Reads one complete reply within `limit`. Errors and 421 break the
    /// session.
    async fn read_reply(&mut self, phase: Phase, limit: Duration) -> Result<Reply, SmtpError> {
        let result = match tokio::time::timeout(limit, read_reply(&mut self.io)).await {
            Err(_) => Err(SmtpError::Timeout {
                phase,
                after: limit,
            }),
            Ok(Err(ReadReplyError::Closed)) => Err(SmtpError::Closed { phase }),
            Ok(Err(ReadReplyError::Io(source))) => Err(SmtpError::Io { phase, source }),
            Ok(Err(ReadReplyError::Protocol(error))) => Err(SmtpError::Protocol { phase, error }),
            Ok(Ok(reply)) => Ok(reply),
        };
        match &result {
            Err(_) => self.broken = true,
            Ok(reply) if reply.code == 421 => self.broken = true,
            Ok(_) => {}
        }
        result
    }
}

fn check_helo_name(name: &str) -> Result<(), SmtpError> {
    if name.is_empty()
        || name.len() > 255
        || name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(SmtpError::InvalidHeloName(name.to_owned()));
    }
    Ok(())
}

fn local(code: u16, enhanced: EnhancedStatus, text: impl Into<String>) -> Rejection {
    Rejection {
        phase: Phase::Local,
        reply: Reply::new(code, Some(enhanced), text),
    }
}

/// Whether the transaction needs the SMTPUTF8 parameter: non-ASCII addresses
/// or non-ASCII bytes in the header section (RFC 6531 §3.4).
fn needs_smtputf8(mail_from: &str, rcpt_to: &str, data: &[u8]) -> bool {
    if !mail_from.is_ascii() || !rcpt_to.is_ascii() {
        return true;
    }
    for line in data.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if !line.is_ascii() {
            return true;
        }
    }
    false
}

/// Converts a message to its DATA form: CRLF line endings (bare CR and bare
/// LF become CRLF), dot-stuffing (RFC 5321 §4.5.2), a final CRLF if missing,
/// then the terminating `.\r\n`.
///
/// On the hot path for every message: it copies whole runs between line ends
/// (found with `memchr`) instead of pushing byte by byte, which made it the
/// single most expensive step of a delivery (docs/profile.md).
fn encode_data(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 8);
    let mut rest = data;
    while !rest.is_empty() {
        // At the start of a line here.
        if rest[0] == b'.' {
            out.push(b'.');
        }
        match memchr::memchr2(b'\r', b'\n', rest) {
            Some(end) => {
                out.extend_from_slice(&rest[..end]);
                out.extend_from_slice(b"\r\n");
                let skip = if rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[end + skip..];
            }
            None => {
                out.extend_from_slice(rest);
                out.extend_from_slice(b"\r\n");
                rest = &[];
            }
        }
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
#[path = "smtp_tests.rs"]
mod tests;
