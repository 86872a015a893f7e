//! Splitting mbox files into messages. A message starts at a `From ` line at the start of the
//! file or after a blank line, when the line carries a date (`From sender Mon Jan  1 ...`);
//! a body line that merely starts with "From " does not split. Any input, including empty and
//! truncated files, gives a list (maybe empty), never a panic.

/// Splits `data` into messages. A file without `From ` separators is one message; an empty
/// or blank file is none.
pub fn split_mbox(data: &[u8]) -> Vec<&[u8]> {
    if data.iter().all(u8::is_ascii_whitespace) {
        return Vec::new();
    }
    if !data.starts_with(b"From ") {
        return vec![data];
    }
    let mut starts = vec![0usize];
    let mut pos = 0;
    let mut previous_blank = false;
    while pos < data.len() {
        let end = data[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |p| pos + p + 1);
        let line = &data[pos..end];
        if pos > 0 && previous_blank && is_separator(line) {
            starts.push(pos);
        }
        previous_blank = line.iter().all(u8::is_ascii_whitespace);
        pos = end;
    }
    starts.push(data.len());
    starts
        .windows(2)
        .map(|w| &data[w[0]..w[1]])
        .filter(|m| !m.iter().all(u8::is_ascii_whitespace))
        .collect()
}

/// `From <addr> <date with a year and a time>`.
fn is_separator(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"From ") else {
        return false;
    };
    let text = String::from_utf8_lossy(rest);
    let has_time = text.split_whitespace().any(|w| {
        let parts: Vec<&str> = w.split(':').collect();
        parts.len() >= 2
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    });
    let has_year = text
        .split_whitespace()
        .any(|w| w.len() == 4 && w.bytes().all(|b| b.is_ascii_digit()));
    has_time && has_year
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_dated_from_lines_only() {
        let mbox = b"From a@b Mon Jan  1 00:00:00 2024\nSubject: 1\n\nbody\nFrom here on\n\n\
From c@d Tue Jan  2 00:00:00 2024\nSubject: 2\n\nx\n";
        let msgs = split_mbox(mbox);
        assert_eq!(msgs.len(), 2);
        assert!(msgs[0].ends_with(b"From here on\n\n"));
    }

    #[test]
    fn tiny_inputs_do_not_panic() {
        for data in [&b""[..], b"\n", b"F", b"Fro", b"From ", b"From \n\n"] {
            let _ = split_mbox(data);
        }
        assert!(split_mbox(b"").is_empty());
        assert_eq!(split_mbox(b"x").len(), 1);
    }
}
