//! The accounting log: one JSON line per delivery attempt, for operators to grep and load into
//! whatever they analyse with. Rotated by size: `accounting.jsonl` becomes
//! `accounting.jsonl.<unix-ms>` when it grows past the limit.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::farm::now_ms;

/// An append-only, size-rotated JSON-lines log.
pub struct AccountingLog {
    path: PathBuf,
    out: BufWriter<File>,
    written: u64,
    max_bytes: u64,
}

impl AccountingLog {
    /// Opens (appending) `path`, rotating when it exceeds `max_bytes`.
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            out: BufWriter::new(file),
            written,
            max_bytes: max_bytes.max(4096),
        })
    }

    /// Appends the lines (delivery attempts, received messages) and flushes them to the OS.
    pub fn write<L: serde::Serialize>(&mut self, lines: &[L]) -> std::io::Result<()> {
        for entry in lines {
            let line = serde_json::to_string(entry).map_err(std::io::Error::other)?;
            self.out.write_all(line.as_bytes())?;
            self.out.write_all(b"\n")?;
            self.written += line.len() as u64 + 1;
        }
        self.out.flush()?;
        if self.written >= self.max_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        let stamp = now_ms();
        let mut rotated = self.path.with_extension(format!("jsonl.{stamp}"));
        let mut n = 1;
        while rotated.exists() {
            rotated = self.path.with_extension(format!("jsonl.{stamp}-{n}"));
            n += 1;
        }
        std::fs::rename(&self.path, &rotated)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.out = BufWriter::new(file);
        self.written = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::farm::Attempt;

    fn attempt(i: u64) -> Attempt {
        Attempt {
            time_ms: 1,
            campaign: "c".into(),
            recipient_id: i,
            recipient: format!("u{i}@x.example"),
            smurf: "s1".into(),
            remote: "mx.x.example[127.0.0.2]:25".into(),
            outcome: "deferred",
            state: "deferred",
            code: 451,
            enhanced: Some("4.3.0".into()),
            text: "try \"later\"\nplease".into(),
            duration_ms: 12,
        }
    }

    #[test]
    fn lines_are_json_and_rotation_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("accounting.jsonl");
        let mut log = AccountingLog::open(&path, 4096).unwrap();
        for i in 0..100 {
            log.write(&[attempt(i)]).unwrap();
        }
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["enhanced"], "4.3.0");
                ids.push(v["recipient_id"].as_u64().unwrap());
            }
        }
        ids.sort();
        assert_eq!(ids, (0..100).collect::<Vec<_>>());
        assert!(
            std::fs::read_dir(dir.path()).unwrap().count() > 1,
            "rotated"
        );
    }
}
