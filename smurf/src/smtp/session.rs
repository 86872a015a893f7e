//! One SMTP session of the shared server core ([`super::server`]): command
//! loop, pipelining, envelope checks, DATA, STARTTLS and the limits, with the
//! decisions left to the receiver's [`SessionHandler`].
//!
//! Memory per session is bounded by the line reader's buffer (the longest
//! accepted line) plus at most [`ServerConfig::max_message_size`] of message
//! content; time by the per-phase timeouts.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::command::{self, Command, CommandError, Param};
use super::data::{DataDecoder, DataLine};
use super::line::{LineError, LineReader};
use super::policy::{Answer, CoreEvent, Envelope, Handler, Rcpt, Reply, SessionHandler};
use super::server::{ServerConfig, Slot};

/// Whether the session goes on.
enum Flow {
    Continue,
    Close,
    /// STARTTLS was accepted: wrap the stream and start over.
    StartTls,
}

/// What ended a read.
enum Read {
    Line(Result<Command, CommandError>, bool, bool),
    TooLong,
    Timeout,
    Stop,
}

/// The stream and its output buffer (replies are batched for pipelining).
struct Conn<S> {
    io: LineReader<S>,
    out: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(stream: S, config: &ServerConfig) -> Self {
        Self {
            io: LineReader::new(stream, config.command_line_max.max(config.data_line_max)),
            out: Vec::with_capacity(512),
        }
    }

    fn push(&mut self, code: u16, text: &str) {
        self.out.extend_from_slice(code.to_string().as_bytes());
        self.out.push(b' ');
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    async fn flush(&mut self, timeout: Duration) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let stream = self.io.get_mut();
        let write = async {
            stream.write_all(&self.out).await?;
            stream.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
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

    async fn close(mut self, timeout: Duration) -> io::Result<()> {
        self.flush(timeout).await?;
        let _ = tokio::time::timeout(timeout, self.io.get_mut().shutdown()).await;
        Ok(())
    }
}

/// Session state that survives STARTTLS.
struct State<H: Handler> {
    config: Arc<ServerConfig>,
    handler: Arc<H>,
    session: H::Session,
    peer: SocketAddr,
    helo: Option<String>,
    tls: bool,
    /// Service refused by the greeting: only QUIT is honoured.
    refusing: bool,
    tx: Option<Envelope>,
    /// A RCPT was tried in this transaction (accepted or not).
    rcpt_tried: bool,
    errors: u32,
    /// End of the session's allowed lifetime.
    deadline: Option<Instant>,
}

/// Runs one session on `stream` until QUIT, disconnect, timeout, too many
/// errors, a handler's close or drop, or `stop` turning true (then idle
/// sessions get 421). The server's accept loop calls it for each connection;
/// tests may call it on any stream (e.g. `tokio::io::duplex`).
pub async fn serve_stream<H, S>(
    stream: S,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    handler: Arc<H>,
    stop: watch::Receiver<bool>,
) -> io::Result<()>
where
    H: Handler,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    serve(stream, peer, config, handler, stop, Slot::none()).await
}

/// [`serve_stream`] holding the server's session slot.
pub(super) async fn serve<H, S>(
    stream: S,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    handler: Arc<H>,
    mut stop: watch::Receiver<bool>,
    slot: Slot,
) -> io::Result<()>
where
    H: Handler,
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (session, greeting) = handler.connect(peer);
    let deadline = config.session_timeout.map(|t| Instant::now() + t);
    let mut st = State {
        config,
        handler,
        session,
        peer,
        helo: None,
        tls: false,
        refusing: false,
        tx: None,
        rcpt_tried: false,
        errors: 0,
        deadline,
    };
    // Declared after `st`, so released before the handler's session ends: whoever sees the
    // session counted as closed can take its slot. When the server closes, both go before the
    // peer sees the connection close ([`end`]).
    let slot = slot;
    let mut conn = Conn::new(stream, &st.config);
    let timeout = st.config.command_timeout;
    let greeting_closes = match &greeting {
        Answer::Reply(r) => {
            st.refusing = r.code != 220;
            false
        }
        Answer::Close(_) | Answer::Drop => true,
    };
    st.delay().await;
    match &greeting {
        Answer::Reply(r) | Answer::Close(r) => conn.push(r.code, &r.text),
        Answer::Drop => {}
    }
    if greeting_closes {
        end(slot, st);
        return conn.close(timeout).await;
    }
    let tls_config = st.config.tls.clone();
    match st.run(&mut conn, &mut stop, tls_config.is_some()).await? {
        Flow::Close => {
            end(slot, st);
            conn.close(timeout).await
        }
        Flow::Continue => Ok(()),
        Flow::StartTls => {
            let Some(tls_config) = tls_config else {
                return Ok(());
            };
            conn.flush(timeout).await?;
            let (stream, rest) = conn.io.into_parts();
            if !rest.is_empty() {
                // Commands pipelined after STARTTLS would be read as if
                // under TLS (CVE-2011-0411): refuse the session.
                return Ok(());
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
            let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    st.session.note(CoreEvent::TlsFailed);
                    return Err(e);
                }
                Err(_) => {
                    st.session.note(CoreEvent::TlsFailed);
                    return Ok(());
                }
            };
            st.session.note(CoreEvent::TlsStarted);
            st.tls = true;
            st.helo = None;
            st.tx = None;
            let mut conn = Conn::new(stream, &st.config);
            match st.run(&mut conn, &mut stop, false).await? {
                Flow::Close | Flow::StartTls => {
                    end(slot, st);
                    conn.close(timeout).await
                }
                Flow::Continue => Ok(()),
            }
        }
    }
}

/// Ends a session the server closes, before its replies are flushed and the socket shut: a
/// client that reconnects the moment it sees the close (after a 421, or a dropped transfer)
/// must find the slot free and the session no longer counted open.
fn end<H: Handler>(slot: Slot, st: State<H>) {
    drop(slot);
    drop(st);
}

impl<H: Handler> State<H> {
    async fn delay(&self) {
        let delay = self.handler.reply_delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// `limit`, shortened to what is left of the session's lifetime.
    fn bounded(&self, limit: Duration) -> Duration {
        match self.deadline {
            None => limit,
            Some(d) => limit.min(d.saturating_duration_since(Instant::now())),
        }
    }

    /// Queues a reply after the handler's delay.
    async fn reply<S>(&self, conn: &mut Conn<S>, code: u16, text: &str) -> Flow
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.delay().await;
        conn.push(code, text);
        Flow::Continue
    }

    /// Replies with an error and counts it; too many close the session.
    async fn error<S>(&mut self, conn: &mut Conn<S>, code: u16, text: &str) -> Flow
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.reply(conn, code, text).await;
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            conn.push(421, "4.7.0 Error: too many errors");
            self.session.note(CoreEvent::TooManyErrors);
            return Flow::Close;
        }
        Flow::Continue
    }

    /// Carries out a handler's answer.
    async fn answer<S>(&mut self, conn: &mut Conn<S>, answer: Answer) -> Flow
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.delay().await;
        match answer {
            Answer::Reply(Reply { code, text }) => {
                conn.push(code, &text);
                Flow::Continue
            }
            Answer::Close(Reply { code, text }) => {
                conn.push(code, &text);
                Flow::Close
            }
            Answer::Drop => Flow::Close,
        }
    }

    /// The command loop.
    async fn run<S>(
        &mut self,
        conn: &mut Conn<S>,
        stop: &mut watch::Receiver<bool>,
        tls_offered: bool,
    ) -> io::Result<Flow>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let command_max = self.config.command_line_max;
        loop {
            // Pipelining (RFC 2920): answer a batch at once, flush only
            // before we would wait for the client.
            if !conn.io.has_buffered_line() {
                conn.flush(self.config.command_timeout).await?;
            }
            let wait = self.bounded(self.config.command_timeout);
            // Shutdown reaches a session between commands; one in the
            // middle of a message transfer finishes it first (within the
            // server's grace).
            let read = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => Read::Stop,
                read = tokio::time::timeout(wait, conn.io.read_line_max(command_max)) => match read {
                    Err(_) => Read::Timeout,
                    Ok(Ok(Some(line))) => {
                        let cmd = command::parse(line.bytes);
                        let route = matches!(cmd, Ok(Command::Rcpt { .. }))
                            && command::has_source_route(line.bytes);
                        Read::Line(cmd, line.crlf, route)
                    }
                    Ok(Ok(None)) | Ok(Err(LineError::Truncated)) => return Ok(Flow::Continue),
                    Ok(Err(LineError::TooLong { .. })) => Read::TooLong,
                    Ok(Err(LineError::Io(e))) => return Err(e),
                },
            };
            let flow = match read {
                Read::Stop => {
                    let text = format!("4.3.2 {} Service shutting down", self.config.hostname);
                    conn.push(421, &text);
                    Flow::Close
                }
                Read::Timeout => {
                    self.session.note(CoreEvent::Timeout);
                    conn.push(421, "4.4.2 Error: timeout exceeded");
                    Flow::Close
                }
                Read::TooLong => self.error(conn, 500, "5.5.2 Error: line too long").await,
                Read::Line(Err(CommandError::Unrecognized), _, _) => {
                    self.error(conn, 500, "5.5.2 Error: command not recognized")
                        .await
                }
                Read::Line(Err(CommandError::Syntax(hint)), _, _) => {
                    self.error(conn, 501, &format!("5.5.4 Syntax: {hint}"))
                        .await
                }
                Read::Line(Ok(Command::Quit), _, _) => {
                    self.reply(conn, 221, "2.0.0 Bye").await;
                    Flow::Close
                }
                Read::Line(Ok(_), _, _) if self.refusing => {
                    self.error(conn, 503, "5.5.1 No service").await
                }
                Read::Line(Ok(cmd), crlf, route) => {
                    self.handle(conn, cmd, crlf, route, tls_offered).await?
                }
            };
            match flow {
                Flow::Continue => {}
                other => return Ok(other),
            }
        }
    }

    async fn handle<S>(
        &mut self,
        conn: &mut Conn<S>,
        cmd: Command,
        crlf: bool,
        source_route: bool,
        tls_offered: bool,
    ) -> io::Result<Flow>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        Ok(match cmd {
            Command::Ehlo(client) => {
                self.helo = Some(client.clone());
                self.tx = None;
                self.delay().await;
                let config = &self.config;
                let starttls = if tls_offered { "250-STARTTLS\r\n" } else { "" };
                let text = format!(
                    "250-{} Hello {client}\r\n250-PIPELINING\r\n250-SIZE {}\r\n250-8BITMIME\r\n\
                     250-SMTPUTF8\r\n{starttls}250 ENHANCEDSTATUSCODES\r\n",
                    config.hostname, config.max_message_size
                );
                conn.out.extend_from_slice(text.as_bytes());
                Flow::Continue
            }
            Command::Helo(client) => {
                self.helo = Some(client);
                self.tx = None;
                let host = self.config.hostname.clone();
                self.reply(conn, 250, &host).await
            }
            Command::Mail { path, params } => self.mail(conn, path, &params).await,
            Command::Rcpt { path, params } => self.rcpt(conn, path, &params, source_route).await,
            Command::Data => match self.tx.take() {
                None => {
                    self.error(conn, 503, "5.5.1 Error: need MAIL command")
                        .await
                }
                Some(tx) if tx.rcpts.is_empty() => {
                    self.tx = Some(tx);
                    if self.config.strict && !self.rcpt_tried {
                        self.error(conn, 503, "5.5.1 Error: need RCPT command")
                            .await
                    } else {
                        // The normal end of a pipelined batch whose recipients
                        // were all refused: not a client error.
                        self.reply(conn, 554, "5.5.1 Error: no valid recipients")
                            .await
                    }
                }
                Some(tx) => self.data(conn, tx, crlf).await?,
            },
            Command::Rset => {
                self.tx = None;
                self.reply(conn, 250, "2.0.0 Ok").await
            }
            Command::Noop => self.reply(conn, 250, "2.0.0 Ok").await,
            Command::Vrfy => {
                self.reply(conn, 252, "2.0.0 Cannot VRFY user, but will accept message")
                    .await
            }
            Command::Help => {
                self.reply(
                    conn,
                    214,
                    "2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT",
                )
                .await
            }
            Command::Quit => {
                self.reply(conn, 221, "2.0.0 Bye").await;
                Flow::Close
            }
            Command::NotImplemented(verb) if verb == "STARTTLS" && tls_offered => {
                if self.tx.is_some() {
                    return Ok(self
                        .error(conn, 503, "5.5.1 Error: STARTTLS inside a transaction")
                        .await);
                }
                self.reply(conn, 220, "2.0.0 Ready to start TLS").await;
                Flow::StartTls
            }
            Command::NotImplemented(verb) => {
                self.error(conn, 502, &format!("5.5.1 Error: {verb} not implemented"))
                    .await
            }
        })
    }

    async fn mail<S>(&mut self, conn: &mut Conn<S>, from: String, params: &[Param]) -> Flow
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(helo) = self.helo.clone() else {
            return self
                .error(conn, 503, "5.5.1 Error: send HELO/EHLO first")
                .await;
        };
        if self.tx.is_some() {
            return self
                .error(conn, 503, "5.5.1 Error: nested MAIL command")
                .await;
        }
        let max = self.config.max_message_size;
        let strict = self.config.strict;
        let mut smtputf8 = false;
        for p in params {
            match (p.keyword.as_str(), p.value.as_deref()) {
                ("SIZE", Some(v)) => match v.parse::<u64>() {
                    Ok(n) if n > max => {
                        self.session.note(CoreEvent::MessageTooBig);
                        return self
                            .error(conn, 552, "5.3.4 Error: message size exceeds fixed limit")
                            .await;
                    }
                    Ok(_) => {}
                    Err(_) if strict => {
                        return self
                            .error(conn, 501, "5.5.4 Error: bad SIZE parameter")
                            .await
                    }
                    Err(_) => {}
                },
                _ if !strict => {}
                ("BODY", Some(v))
                    if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") => {}
                ("BODY", _) => {
                    return self
                        .error(conn, 501, "5.5.4 Error: bad BODY parameter")
                        .await
                }
                ("SMTPUTF8", None) => smtputf8 = true,
                (keyword, _) => {
                    let text = format!("5.5.4 Error: unsupported parameter {keyword}");
                    return self.error(conn, 555, &text).await;
                }
            }
        }
        if strict && !from.is_ascii() && !smtputf8 {
            return self
                .error(conn, 553, "5.6.7 Error: non-ASCII sender requires SMTPUTF8")
                .await;
        }
        let envelope = Envelope {
            peer: Some(self.peer),
            helo,
            tls: self.tls,
            from,
            smtputf8,
            rcpts: Vec::new(),
        };
        let answer = self.session.mail(&envelope);
        if matches!(&answer, Answer::Reply(r) if (200..300).contains(&r.code)) {
            self.tx = Some(envelope);
            self.rcpt_tried = false;
        }
        self.answer(conn, answer).await
    }

    async fn rcpt<S>(
        &mut self,
        conn: &mut Conn<S>,
        to: String,
        params: &[Param],
        source_route: bool,
    ) -> Flow
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let strict = self.config.strict;
        let Some(tx) = self.tx.as_ref() else {
            return self
                .error(conn, 503, "5.5.1 Error: need MAIL command")
                .await;
        };
        if strict {
            if let Some(p) = params.first() {
                let text = format!("5.5.4 Error: unsupported parameter {}", p.keyword);
                return self.error(conn, 555, &text).await;
            }
        }
        if to.is_empty() {
            return self
                .error(conn, 501, "5.1.3 Error: bad recipient address syntax")
                .await;
        }
        if strict && !to.is_ascii() && !tx.smtputf8 {
            return self
                .error(
                    conn,
                    553,
                    "5.6.7 Error: non-ASCII recipient requires SMTPUTF8",
                )
                .await;
        }
        self.rcpt_tried = true;
        if tx.rcpts.len() >= self.config.max_recipients {
            self.session.note(CoreEvent::TooManyRecipients);
            return self
                .reply(conn, 452, "4.5.3 Error: too many recipients")
                .await;
        }
        let rcpt = Rcpt {
            path: &to,
            params,
            source_route,
        };
        let answer = self.session.rcpt(tx, rcpt);
        if matches!(&answer, Answer::Reply(r) if (200..300).contains(&r.code)) {
            if let Some(tx) = self.tx.as_mut() {
                tx.rcpts.push(to);
            }
        }
        self.answer(conn, answer).await
    }

    /// The DATA phase: 354, read until `<CRLF>.<CRLF>` within the limits,
    /// then hand the message to the handler.
    async fn data<S>(&mut self, conn: &mut Conn<S>, tx: Envelope, crlf: bool) -> io::Result<Flow>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.reply(conn, 354, "End data with <CR><LF>.<CR><LF>")
            .await;
        conn.flush(self.config.command_timeout).await?;
        let config = Arc::clone(&self.config);
        let data_deadline = config.data_timeout.map(|t| Instant::now() + t);
        let max = config.max_message_size;
        let mut decoder = DataDecoder::new(crlf);
        let mut content = Vec::with_capacity(16 * 1024);
        let mut size: u64 = 0;
        let mut too_big = false;
        let mut too_long = false;
        loop {
            let mut wait = self.bounded(config.data_line_timeout);
            if let Some(d) = data_deadline {
                wait = wait.min(d.saturating_duration_since(Instant::now()));
            }
            let line = match tokio::time::timeout(wait, conn.io.read_line_max(config.data_line_max))
                .await
            {
                Err(_) => {
                    self.session.note(CoreEvent::Timeout);
                    conn.push(421, "4.4.2 Error: timeout exceeded");
                    return Ok(Flow::Close);
                }
                // Client gone mid-message: the message is not taken.
                Ok(Ok(None)) | Ok(Err(LineError::Truncated)) => return Ok(Flow::Continue),
                Ok(Err(LineError::Io(e))) => return Err(e),
                Ok(Err(LineError::TooLong { .. })) => {
                    too_long = true;
                    decoder.skipped_line();
                    continue;
                }
                Ok(Ok(Some(line))) => line,
            };
            let bytes = match decoder.line(line) {
                DataLine::End => break,
                DataLine::Content(bytes) => bytes,
            };
            size += bytes.len() as u64 + 2;
            if size > max {
                too_big = true;
            }
            if !too_big && !too_long {
                content.extend_from_slice(bytes);
                content.extend_from_slice(b"\r\n");
            }
        }
        if too_big {
            self.session.note(CoreEvent::MessageTooBig);
            return Ok(self
                .error(conn, 552, "5.3.4 Error: message file too big")
                .await);
        }
        if too_long {
            self.session.note(CoreEvent::LineTooLong);
            let text = format!(
                "5.6.0 Error: message line longer than {} bytes",
                config.data_line_max
            );
            return Ok(self.error(conn, 554, &text).await);
        }
        let answer = self.session.message(&tx, content).await;
        Ok(self.answer(conn, answer).await)
    }
}
