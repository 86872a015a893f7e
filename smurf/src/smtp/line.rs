//! Bounded line reading for SMTP peers.
//!
//! SMTP is line-oriented and both of our roles talk to untrusted peers: the
//! receiver reads commands and message lines from clients, the client reads
//! replies from servers. `AsyncBufReadExt::read_line` grows its buffer without
//! limit, so a hostile peer could make us allocate until we die. This reader
//! owns a fixed-size buffer, never holds more than that, and reports an
//! over-long line as a recoverable error: the rest of that line is silently
//! discarded by the following read, so a server can answer `500 line too long`
//! and carry on.
//!
//! It lives in [`crate::smtp`] because both sides use it: the receivers for
//! commands and message lines, the outbound client for replies.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// One line returned by [`LineReader::read_line`], without its terminator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line<'a> {
    /// The line content, without the trailing LF or CRLF.
    pub bytes: &'a [u8],
    /// `true` if the line ended with CRLF, `false` if it ended with a bare LF.
    pub crlf: bool,
}

/// Why [`LineReader::read_line`] could not return a line.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The line (terminator included) was longer than the limit. The reader
    /// stays usable: whatever is left of that line is discarded by the next
    /// read.
    #[error("line longer than {limit} bytes")]
    TooLong {
        /// The limit that was exceeded, in bytes, terminator included.
        limit: usize,
    },
    /// The peer closed the connection in the middle of a line.
    #[error("connection closed in the middle of a line")]
    Truncated,
    /// The underlying stream failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads LF- or CRLF-terminated lines from `R` with a hard memory bound.
///
/// The buffer is allocated once with the capacity given to [`LineReader::new`];
/// no line longer than that is ever returned. Writes can go through
/// [`LineReader::get_mut`] when `R` is a bidirectional stream.
pub struct LineReader<R> {
    inner: R,
    buf: Box<[u8]>,
    /// Start of the unconsumed data in `buf`.
    start: usize,
    /// End of the valid data in `buf`.
    end: usize,
    /// `buf[start..scanned]` is known to contain no LF.
    scanned: usize,
    /// An over-long line was reported; drop bytes up to the next LF.
    discarding: bool,
}

impl<R> std::fmt::Debug for LineReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineReader")
            .field("capacity", &self.buf.len())
            .field("buffered", &(self.end - self.start))
            .field("discarding", &self.discarding)
            .finish_non_exhaustive()
    }
}

impl<R> LineReader<R> {
    /// Wraps `inner`; `capacity` is the longest accepted line, terminator
    /// included (at least 3 bytes are always allowed).
    pub fn new(inner: R, capacity: usize) -> Self {
        Self {
            inner,
            buf: vec![0; capacity.max(3)].into_boxed_slice(),
            start: 0,
            end: 0,
            scanned: 0,
            discarding: false,
        }
    }

    /// The longest line this reader can return, terminator included.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Bytes already received but not yet returned as lines.
    pub fn buffered(&self) -> &[u8] {
        if self.discarding {
            &[]
        } else {
            &self.buf[self.start..self.end]
        }
    }

    /// Whether a complete line is already buffered, i.e. the next
    /// [`read_line`](Self::read_line) will not wait for the peer. A server uses
    /// this to flush its pipelined replies only before it would block.
    pub fn has_buffered_line(&self) -> bool {
        !self.discarding && self.buf[self.scanned..self.end].contains(&b'\n')
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The wrapped stream, e.g. to write to it. Reading from it directly would
    /// bypass the buffer.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Returns the stream and any bytes buffered but not yet consumed.
    pub fn into_parts(self) -> (R, Vec<u8>) {
        let rest = self.buffered().to_vec();
        (self.inner, rest)
    }
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// Reads the next line, up to the reader's full capacity.
    ///
    /// Returns `Ok(None)` when the peer closed the stream cleanly between
    /// lines. Cancel-safe when `R`'s reads are (sockets, pipes): dropping the
    /// future, e.g. on a timeout, loses no received byte.
    pub async fn read_line(&mut self) -> Result<Option<Line<'_>>, LineError> {
        let cap = self.buf.len();
        self.read_line_max(cap).await
    }

    /// Reads the next line, failing with [`LineError::TooLong`] if it is longer
    /// than `limit` bytes (terminator included; capped at the capacity).
    pub async fn read_line_max(&mut self, limit: usize) -> Result<Option<Line<'_>>, LineError> {
        let limit = limit.clamp(1, self.buf.len());
        let lf = loop {
            if self.discarding {
                match self.buf[self.start..self.end]
                    .iter()
                    .position(|&b| b == b'\n')
                {
                    Some(i) => {
                        self.start += i + 1;
                        self.scanned = self.start;
                        self.discarding = false;
                    }
                    None => {
                        self.start = 0;
                        self.end = 0;
                        self.scanned = 0;
                    }
                }
            }
            if !self.discarding {
                if let Some(i) = self.buf[self.scanned..self.end]
                    .iter()
                    .position(|&b| b == b'\n')
                {
                    let lf = self.scanned + i;
                    if lf + 1 - self.start > limit {
                        self.start = lf + 1;
                        self.scanned = self.start;
                        return Err(LineError::TooLong { limit });
                    }
                    break lf;
                }
                self.scanned = self.end;
                if self.end - self.start >= limit {
                    // No LF within `limit` bytes: the line is too long whatever
                    // comes next. Drop what we have and skip the remainder.
                    self.start = 0;
                    self.end = 0;
                    self.scanned = 0;
                    self.discarding = true;
                    return Err(LineError::TooLong { limit });
                }
            }
            if self.end == self.buf.len() {
                // `start > 0` here, otherwise the limit check above fired.
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.scanned -= self.start;
                self.start = 0;
            }
            let n = self.inner.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                let partial = self.discarding || self.start != self.end;
                self.start = 0;
                self.end = 0;
                self.scanned = 0;
                self.discarding = false;
                return if partial {
                    Err(LineError::Truncated)
                } else {
                    Ok(None)
                };
            }
            self.end += n;
        };
        let line_start = self.start;
        self.start = lf + 1;
        self.scanned = self.start;
        let (content_end, crlf) = if lf > line_start && self.buf[lf - 1] == b'\r' {
            (lf - 1, true)
        } else {
            (lf, false)
        };
        Ok(Some(Line {
            bytes: &self.buf[line_start..content_end],
            crlf,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn owned<R: AsyncRead + Unpin>(
        r: &mut LineReader<R>,
    ) -> Result<Option<(Vec<u8>, bool)>, LineError> {
        r.read_line()
            .await
            .map(|o| o.map(|l| (l.bytes.to_vec(), l.crlf)))
    }

    #[tokio::test]
    async fn crlf_and_bare_lf() {
        let data: &[u8] = b"one\r\ntwo\nthree\r\n\r\n";
        let mut r = LineReader::new(data, 16);
        assert_eq!(owned(&mut r).await.unwrap(), Some((b"one".to_vec(), true)));
        assert_eq!(owned(&mut r).await.unwrap(), Some((b"two".to_vec(), false)));
        assert_eq!(
            owned(&mut r).await.unwrap(),
            Some((b"three".to_vec(), true))
        );
        assert_eq!(owned(&mut r).await.unwrap(), Some((b"".to_vec(), true)));
        assert_eq!(owned(&mut r).await.unwrap(), None);
    }

    #[tokio::test]
    async fn too_long_line_is_skipped_and_reader_recovers() {
        let mut data = vec![b'x'; 100];
        data.extend_from_slice(b"\r\nok\r\n");
        let mut r = LineReader::new(&data[..], 10);
        assert!(matches!(
            owned(&mut r).await,
            Err(LineError::TooLong { limit: 10 })
        ));
        assert_eq!(owned(&mut r).await.unwrap(), Some((b"ok".to_vec(), true)));
        assert_eq!(owned(&mut r).await.unwrap(), None);
    }

    #[tokio::test]
    async fn per_call_limit_below_capacity() {
        let data: &[u8] = b"abcdefgh\r\nab\r\n";
        let mut r = LineReader::new(data, 64);
        assert!(matches!(
            r.read_line_max(5).await,
            Err(LineError::TooLong { limit: 5 })
        ));
        let l = r.read_line_max(5).await.unwrap().unwrap();
        assert_eq!(l.bytes, b"ab");
    }

    #[tokio::test]
    async fn truncated_line_at_eof() {
        let data: &[u8] = b"abc";
        let mut r = LineReader::new(data, 64);
        assert!(matches!(owned(&mut r).await, Err(LineError::Truncated)));
    }

    #[tokio::test]
    async fn byte_at_a_time_with_compaction() {
        let (mut tx, rx) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            for _ in 0..50 {
                tx.write_all(b"0123456789\r\n").await.unwrap();
            }
        });
        let mut r = LineReader::new(rx, 16);
        for _ in 0..50 {
            assert_eq!(
                owned(&mut r).await.unwrap(),
                Some((b"0123456789".to_vec(), true))
            );
        }
        writer.await.unwrap();
        assert_eq!(owned(&mut r).await.unwrap(), None);
    }

    #[tokio::test]
    async fn endless_line_stays_bounded() {
        // 1 MiB without a newline through a 64-byte reader: errors, no growth.
        let data = vec![b'A'; 1 << 20];
        let mut r = LineReader::new(&data[..], 64);
        assert!(matches!(
            owned(&mut r).await,
            Err(LineError::TooLong { .. })
        ));
        assert!(matches!(owned(&mut r).await, Err(LineError::Truncated)));
        assert_eq!(r.capacity(), 64);
    }

    #[tokio::test]
    async fn buffered_line_detection() {
        let data: &[u8] = b"a\r\nb\r\nc";
        let mut r = LineReader::new(data, 64);
        owned(&mut r).await.unwrap();
        assert!(r.has_buffered_line());
        owned(&mut r).await.unwrap();
        assert!(!r.has_buffered_line());
        assert_eq!(r.buffered(), b"c");
    }
}
