//! SMTP replies as seen by the client: parsing (RFC 5321 §4.2), enhanced
//! status codes (RFC 3463) and EHLO capabilities (RFC 5321 §4.1.1.1).
//!
//! Kept apart from the session logic in [`crate::outbound::smtp`] because reply
//! classification is what the rest of the engine (bounce handling, retry
//! scheduling, reporting) consumes, and because a server's replies are
//! untrusted input that must be parsed with hard limits.

use std::fmt;

use tokio::io::AsyncRead;

use super::line::{LineError, LineReader};

/// Longest reply line accepted from a server, CRLF included. RFC 5321 allows
/// 512; real servers stay well below this.
pub const MAX_REPLY_LINE: usize = 4096;

/// Most lines accepted in one multiline reply (an EHLO reply has ~15).
pub const MAX_REPLY_LINES: usize = 200;

/// An RFC 3463 enhanced status code, `class.subject.detail` (e.g. `5.1.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// Subject: 0 other, 1 addressing, 2 mailbox, 3 mail system, 4 network and
    /// routing, 5 mail delivery protocol, 6 message content, 7 security/policy.
    pub subject: u16,
    /// Detail within the subject, e.g. `1` in `5.1.1` (bad destination mailbox).
    pub detail: u16,
}

impl EnhancedStatus {
    /// Builds a status; used for locally synthesised replies.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }

    /// Parses a leading `c.s.d` token (followed by a space or end of text).
    /// Returns the status and the rest of the text after the separating space.
    pub fn parse_prefix(text: &str) -> Option<(Self, &str)> {
        let (token, rest) = match text.find(' ') {
            Some(i) => (&text[..i], &text[i + 1..]),
            None => (text, ""),
        };
        let mut parts = token.split('.');
        let class = parts.next()?;
        let subject = parts.next()?;
        let detail = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let digits = |s: &str, max: usize| {
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
        };
        if !(class.len() == 1 && digits(subject, 3) && digits(detail, 3)) {
            return None;
        }
        let class: u8 = class.parse().ok()?;
        if !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some((
            Self {
                class,
                subject: subject.parse().ok()?,
                detail: detail.parse().ok()?,
            },
            rest,
        ))
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A complete (possibly multiline) SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code, 200..=599.
    pub code: u16,
    /// The enhanced status code, when the first line carries one whose class
    /// matches the reply code's first digit.
    pub enhanced: Option<EnhancedStatus>,
    /// The text of all lines joined with `\n`, with the enhanced status code
    /// prefix removed from each line that repeats it.
    pub text: String,
}

impl Reply {
    /// Builds a reply from its parts (e.g. for a decision made locally).
    pub fn new(code: u16, enhanced: Option<EnhancedStatus>, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced,
            text: text.into(),
        }
    }

    /// Builds a reply from the texts of its lines (after the `ddd-`/`ddd `).
    fn from_lines(code: u16, lines: Vec<String>) -> Self {
        let enhanced = lines
            .first()
            .and_then(|l| EnhancedStatus::parse_prefix(l))
            .map(|(e, _)| e)
            .filter(|e| u16::from(e.class) == code / 100);
        let text = match enhanced {
            None => lines.join("\n"),
            Some(e) => {
                let prefix = e.to_string();
                lines
                    .iter()
                    .map(|l| match EnhancedStatus::parse_prefix(l) {
                        Some((le, rest)) if le == e && l.starts_with(&prefix) => rest,
                        _ => l.as_str(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        };
        Self {
            code,
            enhanced,
            text,
        }
    }

    /// 2xx: the command succeeded.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3xx: the server waits for more (354 after DATA).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// 4xx: transient failure, try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: permanent failure, do not retry as is.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The text lines of the reply.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.text.split('\n')
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        for (i, line) in self.lines().enumerate() {
            f.write_str(if i == 0 { " " } else { " / " })?;
            f.write_str(line)?;
        }
        Ok(())
    }
}

/// A server broke the SMTP reply syntax or our safety limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A reply line was longer than [`MAX_REPLY_LINE`].
    #[error("reply line longer than {MAX_REPLY_LINE} bytes")]
    LineTooLong,
    /// A multiline reply had more than [`MAX_REPLY_LINES`] lines.
    #[error("reply has more than {MAX_REPLY_LINES} lines")]
    TooManyLines,
    /// A line was not of the form `ddd`, `ddd text` or `ddd-text`.
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    /// The lines of a multiline reply carried different codes.
    #[error("multiline reply mixes codes {first} and {other}")]
    InconsistentCode {
        /// Code of the first line.
        first: u16,
        /// The differing code.
        other: u16,
    },
    /// A well-formed reply whose code makes no sense for the command (e.g. 354
    /// to MAIL, 250 to DATA).
    #[error("unexpected reply {0}")]
    UnexpectedReply(Reply),
    /// The server sent bytes after its STARTTLS 220 before the TLS handshake:
    /// they would be processed as if protected by TLS (response injection,
    /// CVE-2011-0411 family), so the session is abandoned.
    #[error("data received after STARTTLS before the TLS handshake")]
    DataAfterStartTls,
}

/// Why a reply could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadReplyError {
    #[error("connection closed")]
    Closed,
    #[error(transparent)]
    Io(std::io::Error),
    #[error(transparent)]
    Protocol(ProtocolError),
}

/// Splits one reply line into (code, is_last, text).
fn parse_reply_line(line: &[u8]) -> Result<(u16, bool, String), ProtocolError> {
    let malformed = || {
        let shown = &line[..line.len().min(80)];
        ProtocolError::Malformed(String::from_utf8_lossy(shown).into_owned())
    };
    if line.len() < 3
        || !line[..3].iter().all(u8::is_ascii_digit)
        || !(b'2'..=b'5').contains(&line[0])
    {
        return Err(malformed());
    }
    let code = line[..3]
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    let last = match line.get(3) {
        None | Some(b' ') => true,
        Some(b'-') => false,
        Some(_) => return Err(malformed()),
    };
    let text = line.get(4..).unwrap_or_default();
    let text = String::from_utf8_lossy(text).trim_end().to_owned();
    Ok((code, last, text))
}

/// Reads one complete reply, enforcing [`MAX_REPLY_LINE`] and
/// [`MAX_REPLY_LINES`]. No timeout: the caller wraps it.
pub(crate) async fn read_reply<R: AsyncRead + Unpin>(
    io: &mut LineReader<R>,
) -> Result<Reply, ReadReplyError> {
    let mut code: Option<u16> = None;
    let mut lines = Vec::new();
    loop {
        let line = match io.read_line_max(MAX_REPLY_LINE).await {
            Ok(Some(line)) => line,
            Ok(None) | Err(LineError::Truncated) => return Err(ReadReplyError::Closed),
            Err(LineError::TooLong { .. }) => {
                return Err(ReadReplyError::Protocol(ProtocolError::LineTooLong))
            }
            Err(LineError::Io(e)) => return Err(ReadReplyError::Io(e)),
        };
        let (c, last, text) = parse_reply_line(line.bytes).map_err(ReadReplyError::Protocol)?;
        match code {
            None => code = Some(c),
            Some(first) if first != c => {
                return Err(ReadReplyError::Protocol(ProtocolError::InconsistentCode {
                    first,
                    other: c,
                }))
            }
            Some(_) => {}
        }
        if lines.len() >= MAX_REPLY_LINES {
            return Err(ReadReplyError::Protocol(ProtocolError::TooManyLines));
        }
        lines.push(text);
        if last {
            return Ok(Reply::from_lines(c, lines));
        }
    }
}

/// What a server announced in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `PIPELINING` (RFC 2920): commands may be sent in batches.
    pub pipelining: bool,
    /// `SIZE` (RFC 1870): `Some(limit)` when announced; `Some(0)` means
    /// announced without a fixed limit. See [`Capabilities::max_size`].
    pub size: Option<u64>,
    /// `8BITMIME` (RFC 6152).
    pub eight_bit_mime: bool,
    /// `SMTPUTF8` (RFC 6531): internationalised addresses and headers.
    pub smtputf8: bool,
    /// `STARTTLS` (RFC 3207).
    pub starttls: bool,
    /// `ENHANCEDSTATUSCODES` (RFC 2034).
    pub enhanced_status_codes: bool,
    /// `AUTH` mechanisms (RFC 4954), upper-cased, e.g. `["PLAIN", "LOGIN"]`.
    pub auth: Vec<String>,
    /// Every extension line as announced (keyword and parameters), in order.
    pub extensions: Vec<String>,
}

impl Capabilities {
    /// Parses the lines after the first one of a 250 EHLO reply.
    pub fn from_ehlo(reply: &Reply) -> Self {
        let mut caps = Self::default();
        for line in reply.lines().skip(1) {
            let line = line.trim();
            let mut words = line.split_ascii_whitespace();
            let Some(first) = words.next() else { continue };
            caps.extensions.push(line.to_owned());
            // Old servers announce "AUTH=LOGIN PLAIN".
            let (keyword, inline_param) = match first.split_once('=') {
                Some((k, v)) => (k.to_ascii_uppercase(), Some(v)),
                None => (first.to_ascii_uppercase(), None),
            };
            match keyword.as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => {
                    let limit = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                    caps.size = Some(limit);
                }
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "STARTTLS" => caps.starttls = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "AUTH" => {
                    for mech in inline_param.into_iter().chain(words) {
                        let mech = mech.to_ascii_uppercase();
                        if !mech.is_empty() && !caps.auth.contains(&mech) {
                            caps.auth.push(mech);
                        }
                    }
                }
                _ => {}
            }
        }
        caps
    }

    /// The server's message size limit in bytes, if it announced a non-zero one.
    pub fn max_size(&self) -> Option<u64> {
        self.size.filter(|&n| n > 0)
    }

    /// Whether an extension keyword (case-insensitive) was announced.
    pub fn has(&self, keyword: &str) -> bool {
        self.extensions.iter().any(|line| {
            let first = line.split_ascii_whitespace().next().unwrap_or_default();
            let kw = first.split('=').next().unwrap_or_default();
            kw.eq_ignore_ascii_case(keyword)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(input: &[u8]) -> Result<Reply, ReadReplyError> {
        let mut r = LineReader::new(input, 8192);
        read_reply(&mut r).await
    }

    #[test]
    fn enhanced_status_prefix() {
        let (e, rest) = EnhancedStatus::parse_prefix("5.1.1 User unknown").unwrap();
        assert_eq!(e, EnhancedStatus::new(5, 1, 1));
        assert_eq!(rest, "User unknown");
        assert_eq!(e.to_string(), "5.1.1");
        assert_eq!(
            EnhancedStatus::parse_prefix("4.7.100").unwrap().0,
            EnhancedStatus::new(4, 7, 100)
        );
        assert!(EnhancedStatus::parse_prefix("3.1.1 nope").is_none());
        assert!(EnhancedStatus::parse_prefix("5.1 nope").is_none());
        assert!(EnhancedStatus::parse_prefix("5.1.1.1 nope").is_none());
        assert!(EnhancedStatus::parse_prefix("5.1.1000 nope").is_none());
        assert!(EnhancedStatus::parse_prefix("Ok").is_none());
        assert!(EnhancedStatus::parse_prefix("").is_none());
    }

    #[tokio::test]
    async fn single_line_with_enhanced_code() {
        let r = parse(b"550 5.1.1 <x@y>: Recipient address rejected\r\n")
            .await
            .unwrap();
        assert_eq!(r.code, 550);
        assert_eq!(r.enhanced, Some(EnhancedStatus::new(5, 1, 1)));
        assert_eq!(r.text, "<x@y>: Recipient address rejected");
        assert!(r.is_permanent());
        assert_eq!(r.to_string(), "550 5.1.1 <x@y>: Recipient address rejected");
    }

    #[tokio::test]
    async fn enhanced_class_must_match_code() {
        let r = parse(b"250 5.1.1 weird\r\n").await.unwrap();
        assert_eq!(r.enhanced, None);
        assert_eq!(r.text, "5.1.1 weird");
    }

    #[tokio::test]
    async fn multiline_joined_and_prefix_stripped() {
        let r = parse(b"452-4.2.2 Mailbox full\r\n452-4.2.2 try later\r\n452 4.2.2 really\r\n")
            .await
            .unwrap();
        assert_eq!(r.code, 452);
        assert_eq!(r.enhanced, Some(EnhancedStatus::new(4, 2, 2)));
        assert_eq!(r.text, "Mailbox full\ntry later\nreally");
        assert!(r.is_transient());
        assert_eq!(r.lines().count(), 3);
    }

    #[tokio::test]
    async fn bare_code_and_bare_lf() {
        let r = parse(b"250\n").await.unwrap();
        assert_eq!((r.code, r.text.as_str()), (250, ""));
    }

    #[tokio::test]
    async fn inconsistent_codes_rejected() {
        let e = parse(b"250-a\r\n251 b\r\n").await.unwrap_err();
        assert!(matches!(
            e,
            ReadReplyError::Protocol(ProtocolError::InconsistentCode {
                first: 250,
                other: 251
            })
        ));
    }

    #[tokio::test]
    async fn malformed_lines_rejected() {
        for bad in [
            &b"25 x\r\n"[..],
            b"abc x\r\n",
            b"250x\r\n",
            b"150 hello\r\n",
            b"\r\n",
        ] {
            assert!(
                matches!(
                    parse(bad).await,
                    Err(ReadReplyError::Protocol(ProtocolError::Malformed(_)))
                ),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn limits() {
        let mut long = b"250 ".to_vec();
        long.extend(std::iter::repeat_n(b'x', 10_000));
        long.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse(&long).await,
            Err(ReadReplyError::Protocol(ProtocolError::LineTooLong))
        ));
        let many: Vec<u8> = b"250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        assert!(matches!(
            parse(&many).await,
            Err(ReadReplyError::Protocol(ProtocolError::TooManyLines))
        ));
        assert!(matches!(
            parse(b"250-x\r\n250-y").await,
            Err(ReadReplyError::Closed)
        ));
        assert!(matches!(parse(b"").await, Err(ReadReplyError::Closed)));
    }

    #[tokio::test]
    async fn ehlo_capabilities() {
        let r = parse(
            b"250-mx.example.org Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n\
              250-8bitmime\r\n250-SMTPUTF8\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n\
              250-AUTH PLAIN LOGIN\r\n250-AUTH=LOGIN CRAM-MD5\r\n250 DSN\r\n",
        )
        .await
        .unwrap();
        let caps = Capabilities::from_ehlo(&r);
        assert!(caps.pipelining && caps.eight_bit_mime && caps.smtputf8);
        assert!(caps.starttls && caps.enhanced_status_codes);
        assert_eq!(caps.size, Some(10_240_000));
        assert_eq!(caps.max_size(), Some(10_240_000));
        assert_eq!(caps.auth, ["PLAIN", "LOGIN", "CRAM-MD5"]);
        assert!(caps.has("dsn") && caps.has("auth") && !caps.has("CHUNKING"));
        assert_eq!(caps.extensions.len(), 9);

        let r = parse(b"250-mx\r\n250 SIZE\r\n").await.unwrap();
        let caps = Capabilities::from_ehlo(&r);
        assert_eq!((caps.size, caps.max_size()), (Some(0), None));
        assert!(!caps.pipelining);
    }
}
