//! The files the MX stores in `forward/new`: trace lines first (envelope sender, one
//! `X-Mailfarm-Forward: <old> <new>` per forwarded recipient, where it came from), then the
//! message. Parsing them is kept apart from the relay so that it is tested on bytes.

use super::notice;
use super::FORWARD_HEADER;

/// One forwarded recipient of a stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The address the mail came to (old address, or the SRS address).
    pub old: String,
    /// Where it goes (new address, or the original sender of a bounce).
    pub new: String,
    /// A bounce to an SRS address: relayed with the null sender, never a notice.
    pub srs_return: bool,
}

/// A stored forward message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Envelope sender (empty for `<>`).
    pub mail_from: String,
    /// Forwarded recipients.
    pub targets: Vec<Target>,
    /// The message as received, trace lines removed, with a `Received:` line in front.
    pub data: Vec<u8>,
}

/// Parses a file the MX stored in `forward/` (its trace lines first, then the message).
pub fn parse_stored(bytes: &[u8], hostname: &str, now_secs: u64) -> Stored {
    let mut mail_from = String::new();
    let mut targets = Vec::new();
    let mut received = None;
    let mut at = 0;
    while at < bytes.len() {
        let end = bytes[at..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |p| at + p + 1);
        let line = String::from_utf8_lossy(&bytes[at..end]);
        let line = line.trim_end();
        let lower = line.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("return-path:") {
            let _ = rest;
            mail_from = line["return-path:".len()..]
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned();
        } else if lower.starts_with(&FORWARD_HEADER.to_ascii_lowercase()) {
            let rest = &line[FORWARD_HEADER.len()..];
            let mut words = rest.split_whitespace();
            let strip = |w: &str| w.trim_start_matches('<').trim_end_matches('>').to_owned();
            if let (Some(old), Some(new)) = (words.next(), words.next()) {
                targets.push(Target {
                    old: strip(old),
                    new: strip(new),
                    srs_return: words.next() == Some("srs"),
                });
            }
        } else if let Some(rest) = line.strip_prefix("X-Mailfarm-Received: ") {
            received = Some(rest.to_owned());
        } else if !lower.starts_with("x-mailfarm-") {
            break;
        }
        at = end;
    }
    let mut data = Vec::with_capacity(bytes.len() - at + 200);
    let trace = received.unwrap_or_else(|| format!("by {hostname}"));
    let date = notice::rfc5322_date(now_secs);
    data.extend_from_slice(format!("Received: {trace};\r\n\t{date}\r\n").as_bytes());
    data.extend_from_slice(&bytes[at..]);
    Stored {
        mail_from,
        targets,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_files_give_envelope_targets_and_clean_data() {
        let file = b"Return-Path: <s@sender.test>\r\n\
            X-Mailfarm-Envelope-To: <old@x.test>\r\n\
            X-Mailfarm-Received: from client.test ([127.0.0.1]) by mx.test with ESMTP\r\n\
            X-Mailfarm-Forward: <old@x.test> <new@y.test>\r\n\
            X-Mailfarm-Forward: <SRS0=a=b=c=d@f.test> <d@c> srs\r\n\
            Subject: hi\r\n\r\nbody\r\n";
        let s = parse_stored(file, "mx.test", 0);
        assert_eq!(s.mail_from, "s@sender.test");
        assert_eq!(s.targets.len(), 2);
        assert_eq!(s.targets[0].new, "new@y.test");
        assert!(!s.targets[0].srs_return);
        assert!(s.targets[1].srs_return);
        let data = String::from_utf8(s.data).unwrap();
        assert!(data
            .starts_with("Received: from client.test ([127.0.0.1]) by mx.test with ESMTP;\r\n\t"));
        assert!(data.ends_with("Subject: hi\r\n\r\nbody\r\n"));
        assert!(!data.contains("X-Mailfarm"));
        let null = parse_stored(b"Return-Path: <>\r\n\r\nx", "mx", 0);
        assert_eq!(null.mail_from, "");
    }

    #[test]
    fn garbage_files_never_panic() {
        let pieces: [&[u8]; 9] = [
            b"Return-Path: <a@b>\r\n",
            b"X-Mailfarm-Forward: <o@x> <n@y>\r\n",
            b"X-Mailfarm-Forward: \r\n",
            b"x-mailfarm-received: \xc3\xa9\n",
            b"\r\n",
            b"\n\n",
            b"Auto-Submitted: no (\r\n",
            b"\xff\xfe",
            b" folded\r\n",
        ];
        let mut seed = 11u64;
        for _ in 0..5_000 {
            let mut file = Vec::new();
            for _ in 0..(seed % 12) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                file.extend_from_slice(pieces[(seed >> 59) as usize % pieces.len()]);
            }
            let stored = parse_stored(&file, "mx", seed);
            let _ = notice::check(&stored.mail_from, &notice::headers(&stored.data));
        }
    }
}
