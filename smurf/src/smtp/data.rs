//! The rules of the DATA phase on the receiving side, shared by every
//! receiver we write (the capture server, the fault-injecting sink, a future
//! inbound MX): where the message ends and how dot-stuffing is undone.
//!
//! The end of data is `<CRLF>.<CRLF>` exactly: a `.` line ending in a bare
//! LF, or following a line that ended in a bare LF, is content (defence
//! against SMTP smuggling). Other bare LFs are accepted as line ends. Keeping
//! this in one place means every receiver draws the message boundary the same
//! way.

use super::line::Line;

/// What one line received during DATA means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataLine<'a> {
    /// The terminating `.`: the message is complete.
    End,
    /// A content line, dot-unstuffed, without its line ending.
    Content(&'a [u8]),
}

/// Classifies the lines of one DATA transfer, in order.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    /// Whether the previous line (initially the DATA command) ended in CRLF.
    prev_crlf: bool,
}

impl DataDecoder {
    /// Starts a transfer; `data_cmd_crlf` tells whether the DATA command
    /// line itself ended in CRLF.
    pub fn new(data_cmd_crlf: bool) -> Self {
        Self {
            prev_crlf: data_cmd_crlf,
        }
    }

    /// Classifies the next line. RFC 5321 §4.5.2: the first dot of a line
    /// with more on it is dropped (a lone `.` that is not a valid
    /// terminator is kept as is).
    pub fn line<'a>(&mut self, line: Line<'a>) -> DataLine<'a> {
        if line.bytes == b"." && line.crlf && self.prev_crlf {
            return DataLine::End;
        }
        self.prev_crlf = line.crlf;
        DataLine::Content(match line.bytes {
            [b'.', rest @ ..] if !rest.is_empty() => rest,
            all => all,
        })
    }

    /// Records that a line was skipped as too long (the line reader
    /// discarded it up to its LF); the next line may end the data.
    pub fn skipped_line(&mut self) {
        self.prev_crlf = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(bytes: &[u8], crlf: bool) -> Line<'_> {
        Line { bytes, crlf }
    }

    #[test]
    fn terminator_needs_crlf_on_both_sides() {
        let mut d = DataDecoder::new(true);
        assert_eq!(d.line(l(b"a", false)), DataLine::Content(b"a"));
        // After a bare LF: content.
        assert_eq!(d.line(l(b".", true)), DataLine::Content(b"."));
        // Ending in a bare LF: content.
        assert_eq!(d.line(l(b".", false)), DataLine::Content(b"."));
        assert_eq!(d.line(l(b"b", true)), DataLine::Content(b"b"));
        assert_eq!(d.line(l(b".", true)), DataLine::End);
        let mut d = DataDecoder::new(false);
        assert_eq!(d.line(l(b".", true)), DataLine::Content(b"."));
    }

    #[test]
    fn unstuffs_and_recovers_after_skipped_line() {
        let mut d = DataDecoder::new(true);
        assert_eq!(d.line(l(b"..x", true)), DataLine::Content(b".x"));
        assert_eq!(d.line(l(b"y", false)), DataLine::Content(b"y"));
        d.skipped_line();
        assert_eq!(d.line(l(b".", true)), DataLine::End);
    }
}
