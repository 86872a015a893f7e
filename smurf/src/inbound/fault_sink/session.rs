//! One session of the [fault sink](super): the plan's faults applied at the
//! greeting, at RCPT and at the final dot. The SMTP dialogue itself is the
//! shared server core's ([`crate::smtp::session`]).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Fate, Shared, SinkStats, HOSTNAME, MESSAGE_ID_MAX};
use crate::smtp::policy::{Answer, Envelope, Handler, Rcpt, Refusal, Reply, SessionHandler};

/// The sink's [`Handler`]: the shared state of one sink.
#[derive(Debug)]
pub(super) struct Sink(pub(super) Arc<Shared>);

impl Handler for Sink {
    type Session = SinkSession;

    fn connect(&self, _peer: SocketAddr) -> (SinkSession, Answer) {
        let stats = &self.0.stats;
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let session = SinkSession {
            shared: Arc::clone(&self.0),
            _open: OpenGuard::new(Arc::clone(stats)),
        };
        let greeting = match &self.0.plan.greeting {
            None => {
                return (
                    session,
                    Answer::reply(220, format!("{HOSTNAME} ESMTP mailfarm fault sink")),
                )
            }
            Some(g) => g,
        };
        let (code, text) = match greeting.split_once(' ') {
            Some((code, text)) => (code, text),
            None => (greeting.as_str(), ""),
        };
        let code = code.parse::<u16>().ok().filter(|c| (200..600).contains(c));
        let reply = Reply::new(code.unwrap_or(554), text.to_owned());
        if code == Some(220) {
            return (session, Answer::Reply(reply));
        }
        // A greeting that refuses service.
        stats.refused.fetch_add(1, Ordering::Relaxed);
        let answer = if code == Some(421) {
            Answer::Close(reply)
        } else {
            Answer::Reply(reply)
        };
        (session, answer)
    }

    fn refused(&self, _peer: SocketAddr, _why: Refusal) -> Reply {
        let stats = &self.0.stats;
        stats.connections.fetch_add(1, Ordering::Relaxed);
        stats.refused.fetch_add(1, Ordering::Relaxed);
        let (code, text) = super::provider::CONNECTIONS_REFUSAL;
        Reply::new(code, text)
    }

    fn reply_delay(&self) -> Duration {
        self.0.plan.reply_delay
    }
}

/// Counts a session as open for as long as it lives (even if aborted).
#[derive(Debug)]
struct OpenGuard(Arc<SinkStats>);

impl OpenGuard {
    fn new(stats: Arc<SinkStats>) -> Self {
        let open = stats.open_connections.fetch_add(1, Ordering::Relaxed) + 1;
        stats.peak_connections.fetch_max(open, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
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

/// One sink session: the plan's decisions.
#[derive(Debug)]
pub(super) struct SinkSession {
    shared: Arc<Shared>,
    _open: OpenGuard,
}

impl SessionHandler for SinkSession {
    fn rcpt(&mut self, _envelope: &Envelope, rcpt: Rcpt<'_>) -> Answer {
        match self.shared.rcpt_fate(rcpt.path) {
            Fate::Temp => Answer::reply(451, "4.3.0 Temporary failure, try again later"),
            Fate::Perm => Answer::reply(550, "5.1.1 Mailbox unavailable"),
            Fate::Accept => Answer::reply(250, "2.1.5 Ok"),
        }
    }

    /// At the final dot: drop, throttle or accept.
    async fn message(&mut self, envelope: &Envelope, content: Vec<u8>) -> Answer {
        let mut scan = MessageIdScan::default();
        for line in content.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            scan.line(line);
            if scan.body {
                break;
            }
        }
        if self.shared.drop_transfer(&envelope.rcpts) {
            return Answer::Drop;
        }
        if let Some(limit) = &self.shared.provider_rate {
            if let Some((code, text)) = limit.admit(std::time::Instant::now()) {
                return Answer::reply(code, text);
            }
        }
        if !self.shared.take_token() {
            self.shared.stats.throttled.fetch_add(1, Ordering::Relaxed);
            return Answer::close(421, "4.7.0 Too many messages, slow down");
        }
        self.shared
            .record_accepted(scan.message_id(), envelope.rcpts.clone());
        Answer::reply(250, "2.0.0 Ok: queued")
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
