//! One session of the [fault sink](super): the SMTP dialogue, with the
//! plan's faults applied at RCPT and at the final dot.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, OwnedSemaphorePermit};

use super::{
    Fate, Shared, SinkStats, HOSTNAME, IDLE_TIMEOUT, MAX_ERRORS, MAX_MESSAGE_SIZE, MAX_RECIPIENTS,
    MESSAGE_ID_MAX,
};
use crate::inbound::capture::{COMMAND_LINE_MAX, DATA_LINE_MAX};
use crate::smtp::command::{self, Command, CommandError};
use crate::smtp::data::{DataDecoder, DataLine};
use crate::smtp::line::{LineError, LineReader};

/// Counts a session as open for as long as it lives (even if aborted), and
/// holds its `max_connections` slot.
struct OpenGuard(Arc<SinkStats>, Option<OwnedSemaphorePermit>);

impl OpenGuard {
    fn new(stats: Arc<SinkStats>, permit: Option<OwnedSemaphorePermit>) -> Self {
        let open = stats.open_connections.fetch_add(1, Ordering::Relaxed) + 1;
        stats.peak_connections.fetch_max(open, Ordering::Relaxed);
        Self(stats, permit)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        // Free the slot first: whoever sees the session closed can connect.
        drop(self.1.take());
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Picks the Message-ID out of the header section, line by line.
#[derive(Debug, Default)]
struct MessageIdScan {
    body: bool,
    in_message_id: bool,
    value: Option<Vec<u8>>,
}

impl MessageIdScan {
    fn line(&mut self, content: &[u8]) {
        if self.body {
            return;
        }
        if content.is_empty() {
            self.body = true;
            return;
        }
        if matches!(content[0], b' ' | b'\t') {
            // A folded continuation of the previous header.
            if self.in_message_id {
                self.push(content);
            }
            return;
        }
        self.in_message_id = false;
        const NAME: &[u8] = b"message-id:";
        if self.value.is_none()
            && content.len() >= NAME.len()
            && content[..NAME.len()].eq_ignore_ascii_case(NAME)
        {
            self.in_message_id = true;
            self.value = Some(Vec::new());
            self.push(&content[NAME.len()..]);
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if let Some(value) = self.value.as_mut() {
            let room = MESSAGE_ID_MAX.saturating_sub(value.len());
            value.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    fn message_id(&self) -> String {
        let value = self.value.as_deref().unwrap_or_default();
        String::from_utf8_lossy(value.trim_ascii()).into_owned()
    }
}

/// Whether the session goes on.
enum Flow {
    Continue,
    Close,
}

struct Session<S> {
    io: LineReader<S>,
    out: Vec<u8>,
    shared: Arc<Shared>,
    greeted: bool,
    /// Service refused by the greeting: only QUIT is honoured.
    refusing: bool,
    rcpts: Option<Vec<String>>,
    errors: u32,
}

/// Runs one SMTP session until QUIT, disconnect, timeout, too many errors,
/// a fault that closes it, or shutdown.
pub(super) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    permit: Option<OwnedSemaphorePermit>,
) -> io::Result<()> {
    let _open = OpenGuard::new(Arc::clone(&shared.stats), permit);
    let mut s = Session {
        io: LineReader::new(stream, DATA_LINE_MAX),
        out: Vec::with_capacity(512),
        greeted: false,
        refusing: false,
        rcpts: None,
        errors: 0,
        shared,
    };
    let greeting = match &s.shared.plan.greeting {
        Some(g) => g.clone(),
        None => format!("220 {HOSTNAME} ESMTP mailfarm fault sink"),
    };
    let code = greeting.get(..3).and_then(|c| c.parse::<u16>().ok());
    s.delay().await;
    s.out.extend_from_slice(greeting.as_bytes());
    s.out.extend_from_slice(b"\r\n");
    if code != Some(220) {
        s.shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        s.refusing = true;
        if code == Some(421) {
            return s.close().await;
        }
    }
    loop {
        // Pipelining (RFC 2920): flush only before we would wait.
        if !s.io.has_buffered_line() {
            s.flush().await?;
        }
        let event = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => None,
            read = tokio::time::timeout(IDLE_TIMEOUT, s.io.read_line_max(COMMAND_LINE_MAX)) => Some(match read {
                Err(_) => Err(None),
                Ok(Ok(Some(line))) => Ok((command::parse(line.bytes), line.crlf)),
                Ok(Ok(None)) | Ok(Err(LineError::Truncated)) => return Ok(()),
                Ok(Err(LineError::TooLong { .. })) => Err(Some(())),
                Ok(Err(LineError::Io(e))) => return Err(e),
            }),
        };
        let flow = match event {
            None => s.reply_close(421, "4.3.2 Service shutting down").await,
            Some(Err(None)) => s.reply_close(421, "4.4.2 Error: timeout exceeded").await,
            Some(Err(Some(()))) => s.error(500, "5.5.2 Error: line too long").await,
            Some(Ok((Err(CommandError::Unrecognized), _))) => {
                s.error(500, "5.5.2 Error: command not recognized").await
            }
            Some(Ok((Err(CommandError::Syntax(hint)), _))) => {
                s.error(501, &format!("5.5.4 Syntax: {hint}")).await
            }
            Some(Ok((Ok(Command::Quit), _))) => s.reply_close(221, "2.0.0 Bye").await,
            Some(Ok((Ok(_), _))) if s.refusing => s.error(503, "5.5.1 No service").await,
            Some(Ok((Ok(cmd), crlf))) => s.handle(cmd, crlf).await?,
        };
        if let Flow::Close = flow {
            return s.close().await;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Waits the plan's reply delay.
    async fn delay(&self) {
        let delay = self.shared.plan.reply_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// Queues a reply without delay.
    fn push(&mut self, code: u16, text: &str) {
        self.out
            .extend_from_slice(format!("{code} {text}\r\n").as_bytes());
    }

    /// Queues a reply after the plan's delay.
    async fn reply(&mut self, code: u16, text: &str) -> Flow {
        self.delay().await;
        self.push(code, text);
        Flow::Continue
    }

    /// Queues a last reply.
    async fn reply_close(&mut self, code: u16, text: &str) -> Flow {
        self.reply(code, text).await;
        Flow::Close
    }

    /// Replies with an error and counts it; too many close the session.
    async fn error(&mut self, code: u16, text: &str) -> Flow {
        self.reply(code, text).await;
        self.errors += 1;
        if self.errors >= MAX_ERRORS {
            self.push(421, "4.7.0 Error: too many errors");
            return Flow::Close;
        }
        Flow::Continue
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let stream = self.io.get_mut();
        let write = async {
            stream.write_all(&self.out).await?;
            stream.flush().await
        };
        match tokio::time::timeout(IDLE_TIMEOUT, write).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "client not reading",
                ))
            }
        }
        self.out.clear();
        Ok(())
    }

    /// Flushes what is queued and closes the connection.
    async fn close(mut self) -> io::Result<()> {
        self.flush().await?;
        let _ = tokio::time::timeout(IDLE_TIMEOUT, self.io.get_mut().shutdown()).await;
        Ok(())
    }

    async fn handle(&mut self, cmd: Command, crlf: bool) -> io::Result<Flow> {
        Ok(match cmd {
            Command::Ehlo(client) => {
                self.greeted = true;
                self.rcpts = None;
                self.delay().await;
                let text = format!(
                    "250-{HOSTNAME} Hello {client}\r\n250-PIPELINING\r\n250-SIZE {MAX_MESSAGE_SIZE}\r\n\
                     250-8BITMIME\r\n250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n"
                );
                self.out.extend_from_slice(text.as_bytes());
                Flow::Continue
            }
            Command::Helo(_) => {
                self.greeted = true;
                self.rcpts = None;
                self.reply(250, HOSTNAME).await
            }
            Command::Mail { params, .. } => {
                if !self.greeted {
                    return Ok(self.error(503, "5.5.1 Error: send HELO/EHLO first").await);
                }
                if self.rcpts.is_some() {
                    return Ok(self.error(503, "5.5.1 Error: nested MAIL command").await);
                }
                let too_big = params.iter().any(|p| {
                    p.keyword == "SIZE"
                        && p.value
                            .as_deref()
                            .and_then(|v| v.parse::<u64>().ok())
                            .is_some_and(|n| n > MAX_MESSAGE_SIZE)
                });
                if too_big {
                    return Ok(self
                        .error(552, "5.3.4 Error: message size exceeds fixed limit")
                        .await);
                }
                self.rcpts = Some(Vec::new());
                self.reply(250, "2.1.0 Ok").await
            }
            Command::Rcpt { path, .. } => self.rcpt(path).await,
            Command::Data => match self.rcpts.take() {
                None => self.error(503, "5.5.1 Error: need MAIL command").await,
                Some(rcpts) if rcpts.is_empty() => {
                    // The normal end of a pipelined batch whose recipients
                    // the plan refused: not counted as a client error.
                    self.rcpts = Some(rcpts);
                    self.reply(554, "5.5.1 Error: no valid recipients").await
                }
                Some(rcpts) => self.data(rcpts, crlf).await?,
            },
            Command::Rset => {
                self.rcpts = None;
                self.reply(250, "2.0.0 Ok").await
            }
            Command::Noop => self.reply(250, "2.0.0 Ok").await,
            Command::Vrfy => self.reply(252, "2.0.0 Cannot VRFY user").await,
            Command::Help => self.reply(214, "2.0.0 See RFC 5321").await,
            Command::Quit => self.reply_close(221, "2.0.0 Bye").await,
            Command::NotImplemented(verb) => {
                self.error(502, &format!("5.5.1 Error: {verb} not implemented"))
                    .await
            }
        })
    }

    async fn rcpt(&mut self, to: String) -> Flow {
        let Some(count) = self.rcpts.as_ref().map(Vec::len) else {
            return self.error(503, "5.5.1 Error: need MAIL command").await;
        };
        if to.is_empty() {
            return self
                .error(501, "5.1.3 Error: bad recipient address syntax")
                .await;
        }
        if count >= MAX_RECIPIENTS {
            return self.reply(452, "4.5.3 Error: too many recipients").await;
        }
        match self.shared.rcpt_fate(&to) {
            Fate::Temp => {
                self.reply(451, "4.3.0 Temporary failure, try again later")
                    .await
            }
            Fate::Perm => self.reply(550, "5.1.1 Mailbox unavailable").await,
            Fate::Accept => {
                if let Some(rcpts) = self.rcpts.as_mut() {
                    rcpts.push(to);
                }
                self.reply(250, "2.1.5 Ok").await
            }
        }
    }

    /// The DATA phase: 354, read until `<CRLF>.<CRLF>`, then drop, throttle
    /// or accept.
    async fn data(&mut self, rcpts: Vec<String>, data_cmd_crlf: bool) -> io::Result<Flow> {
        self.reply(354, "End data with <CR><LF>.<CR><LF>").await;
        self.flush().await?;
        let mut decoder = DataDecoder::new(data_cmd_crlf);
        let mut scan = MessageIdScan::default();
        let mut size: u64 = 0;
        let mut problem: Option<(u16, &'static str)> = None;
        loop {
            let read = tokio::time::timeout(IDLE_TIMEOUT, self.io.read_line_max(DATA_LINE_MAX));
            let line = match read.await {
                Err(_) => {
                    self.push(421, "4.4.2 Error: timeout exceeded");
                    return Ok(Flow::Close);
                }
                Ok(Ok(None)) | Ok(Err(LineError::Truncated)) => return Ok(Flow::Close),
                Ok(Err(LineError::Io(e))) => return Err(e),
                Ok(Err(LineError::TooLong { .. })) => {
                    problem.get_or_insert((554, "5.6.0 Error: message line too long"));
                    decoder.skipped_line();
                    continue;
                }
                Ok(Ok(Some(line))) => line,
            };
            let content = match decoder.line(line) {
                DataLine::End => break,
                DataLine::Content(content) => content,
            };
            size += content.len() as u64 + 2;
            if size > MAX_MESSAGE_SIZE {
                problem.get_or_insert((552, "5.3.4 Error: message file too big"));
            }
            scan.line(content);
        }
        if let Some((code, text)) = problem {
            return Ok(self.error(code, text).await);
        }
        self.delay().await;
        if self.shared.drop_transfer(&rcpts) {
            return Ok(Flow::Close);
        }
        if !self.shared.take_token() {
            self.shared.stats.throttled.fetch_add(1, Ordering::Relaxed);
            self.push(421, "4.7.0 Too many messages, slow down");
            return Ok(Flow::Close);
        }
        self.shared.record_accepted(scan.message_id(), rcpts);
        self.push(250, "2.0.0 Ok: queued");
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_scan_handles_case_folding_and_body() {
        let mut s = MessageIdScan::default();
        for line in [
            &b"Subject: x"[..],
            b"message-ID:",
            b"\t <a@b.test> ",
            b"Message-ID: <second@b.test>",
            b"",
            b"Message-ID: <body@b.test>",
        ] {
            s.line(line);
        }
        assert_eq!(s.message_id(), "<a@b.test>");
        let mut s = MessageIdScan::default();
        s.line(b"Subject: none");
        s.line(b"");
        s.line(b"Message-ID: <body@b.test>");
        assert_eq!(s.message_id(), "");
        let mut s = MessageIdScan::default();
        s.line(&[b"Message-ID: ".as_slice(), &[b'x'; 5000]].concat());
        assert_eq!(s.message_id().len(), MESSAGE_ID_MAX - 1);
    }
}
