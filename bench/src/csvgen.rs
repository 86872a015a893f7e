//! Synthetic recipient lists in the example newsletter's columns: unique, deterministic rows,
//! either collected into a string (small lists) or produced on the fly by a [`Read`] impl, so a
//! list of millions of rows streams into a launch without ever being held in memory.

use std::io::Read;

/// The example's columns.
const HEADER: &str = "email,first_name,last_name,city,plan,points,vip";
/// Bytes of output generated per refill of the reader's buffer.
const CHUNK: usize = 64 * 1024;

/// First names, a few outside ASCII so headers and bodies see real encodings.
const FIRST: [&str; 12] = [
    "Mia", "Dmitri", "Ana", "Zoë", "Kenji", "Łukasz", "Fatima", "Oliver", "Chloé", "Sven", "Priya",
    "Tomás",
];
/// Last names.
const LAST: [&str; 10] = [
    "Ødegaard",
    "Smirnov",
    "García",
    "Müller",
    "Tanaka",
    "Nowak",
    "Haddad",
    "Brown",
    "Dubois",
    "Larsen",
];
/// Cities.
const CITIES: [&str; 10] = [
    "Toronto",
    "Chicago",
    "Lisbon",
    "München",
    "Osaka",
    "Kraków",
    "Marrakesh",
    "Leeds",
    "Lyon",
    "Bergen",
];

/// The shape of a generated list.
#[derive(Clone, Copy, Debug, Default)]
pub struct ListShape {
    /// Pad each row to about this many bytes (newline included) with an extra `note` column;
    /// None: the example's columns only.
    pub row_bytes: Option<usize>,
    /// Make every `bad_every`-th row (the last of each group) an address without '@', which
    /// ingest must reject; None: every row is valid.
    pub bad_every: Option<u64>,
}

impl ListShape {
    /// How many of `rows` rows are malformed.
    pub fn bad_rows(&self, rows: u64) -> u64 {
        self.bad_every.filter(|&n| n > 0).map_or(0, |n| rows / n)
    }

    /// The header line, newline included.
    fn header(&self) -> String {
        match self.row_bytes {
            Some(_) => format!("{HEADER},note\n"),
            None => format!("{HEADER}\n"),
        }
    }

    /// Appends row `i` (newline included) to `out`, its address at `domain` (None:
    /// `d{i % 20}.example`).
    fn write_row(&self, i: u64, domain: Option<&str>, out: &mut String) {
        use std::fmt::Write as _;
        let start = out.len();
        let pick = |len: usize, salt: u64| (i.wrapping_mul(salt) / 7 % len as u64) as usize;
        let plan = match i % 10 {
            0..=5 => "basic",
            6..=8 => "plus",
            _ => "pro",
        };
        let vip = if i.is_multiple_of(11) { "yes" } else { "" };
        let bad = self
            .bad_every
            .is_some_and(|n| n > 0 && (i + 1).is_multiple_of(n));
        let at = if bad { "-at-" } else { "@" };
        let _ = match domain {
            Some(domain) => write!(out, "user{i}{at}{domain}"),
            None => write!(out, "user{i}{at}d{}.example", i % 20),
        };
        let _ = write!(
            out,
            ",{},{},{},{plan},{},{vip}",
            FIRST[pick(FIRST.len(), 31)],
            LAST[pick(LAST.len(), 17)],
            CITIES[pick(CITIES.len(), 13)],
            i.wrapping_mul(7919) % 5000,
        );
        if let Some(target) = self.row_bytes {
            out.push(',');
            // The newline is the last byte of the target.
            let pad = target.saturating_sub(out.len() - start + 1);
            out.extend(std::iter::repeat_n('x', pad));
        }
        out.push('\n');
    }
}

/// A CSV of `n` valid rows in the example's columns, in memory (for small lists).
pub fn recipients_csv(n: u64) -> String {
    let shape = ListShape::default();
    let mut csv = shape.header();
    for i in 0..n {
        shape.write_row(i, None, &mut csv);
    }
    csv
}

/// A CSV in the example's columns with one valid row per item of `domains`, row `i` at
/// `user{i}@` the `i`-th domain, in memory (for small lists).
pub fn recipients_csv_at<'a>(domains: impl IntoIterator<Item = &'a str>) -> String {
    let shape = ListShape::default();
    let mut csv = shape.header();
    for (i, domain) in (0u64..).zip(domains) {
        shape.write_row(i, Some(domain), &mut csv);
    }
    csv
}

/// A recipient list of `rows` rows generated while it is read; holds at most one chunk.
pub struct RecipientRows {
    shape: ListShape,
    rows: u64,
    next: u64,
    buf: String,
    pos: usize,
    /// Bytes handed out so far.
    produced: u64,
}

impl RecipientRows {
    /// A list of `rows` rows of `shape`, header first.
    pub fn new(rows: u64, shape: ListShape) -> Self {
        Self {
            buf: shape.header(),
            shape,
            rows,
            next: 0,
            pos: 0,
            produced: 0,
        }
    }

    /// Bytes read so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }
}

impl Read for RecipientRows {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            while self.next < self.rows && self.buf.len() < CHUNK {
                self.shape.write_row(self.next, None, &mut self.buf);
                self.next += 1;
            }
        }
        let pending = &self.buf.as_bytes()[self.pos..];
        let n = pending.len().min(out.len());
        out[..n].copy_from_slice(&pending[..n]);
        self.pos += n;
        self.produced += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_unique_and_complete() {
        let csv = recipients_csv(100);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 101);
        let emails: std::collections::HashSet<&str> = lines[1..]
            .iter()
            .filter_map(|l| l.split(',').next())
            .collect();
        assert_eq!(emails.len(), 100);
        assert!(lines[1..].iter().all(|l| l.split(',').count() == 7));
    }

    #[test]
    fn rows_go_to_the_given_domains() {
        let csv = recipients_csv_at(["a.test", "b.test", "a.test"]);
        let emails: Vec<&str> = csv
            .lines()
            .skip(1)
            .filter_map(|l| l.split(',').next())
            .collect();
        assert_eq!(emails, ["user0@a.test", "user1@b.test", "user2@a.test"]);
    }

    #[test]
    fn the_stream_pads_rows_and_plants_bad_ones() {
        let shape = ListShape {
            row_bytes: Some(120),
            bad_every: Some(1000),
        };
        let mut text = String::new();
        let mut rows = RecipientRows::new(5000, shape);
        rows.read_to_string(&mut text).expect("generated text");
        assert_eq!(rows.produced(), text.len() as u64);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5001);
        assert!(lines[1..].iter().all(|l| l.len() + 1 == 120));
        let bad = lines[1..].iter().filter(|l| !l.contains('@')).count() as u64;
        assert_eq!(bad, 5);
        assert_eq!(shape.bad_rows(5000), bad);
    }
}
