//! Accuracy on real bounces: the Sisimai corpus in `../shared/corpora/sisimai` (433 messages
//! from about 70 MTAs and providers, expected results for 380 of them). Asserts the targets of
//! issue 9 and prints the figures per MTA family (run with `--nocapture` to see them and every
//! mismatch). Reasons are scored by family (see `Reason::family`), as the corpus's SOURCE.md
//! asks; exact reason agreement is printed too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mailfarm_bounce::{inspect_message, split_mbox, InspectLine, Reason};

struct Expected {
    recipient: String,
    reason: String,
    hard: bool,
    index: usize,
    count: usize,
}

/// `../shared/corpora/sisimai` next to the workspace; `SISIMAI_CORPUS` overrides it (a git
/// worktree elsewhere). A missing corpus fails the test.
fn corpus_dir() -> PathBuf {
    match std::env::var_os("SISIMAI_CORPUS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpora/sisimai"),
    }
}

fn load_expected(dir: &Path) -> BTreeMap<String, Vec<Expected>> {
    let tsv = std::fs::read_to_string(dir.join("expected.tsv"))
        .unwrap_or_else(|e| panic!("corpus missing at {}: {e}", dir.display()));
    let mut out: BTreeMap<String, Vec<Expected>> = BTreeMap::new();
    for line in tsv.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        assert!(cols.len() >= 8, "bad row {line}");
        out.entry(cols[0].to_owned()).or_default().push(Expected {
            recipient: cols[1].to_owned(),
            reason: cols[3].to_owned(),
            hard: cols[5] == "1",
            index: cols[6].parse().unwrap_or(0),
            count: cols[7].parse().unwrap_or(0),
        });
    }
    out
}

fn analyse_file(path: &Path) -> Vec<InspectLine> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    split_mbox(&data)
        .iter()
        .enumerate()
        .flat_map(|(i, m)| inspect_message(&path.display().to_string(), i + 1, m))
        .filter(|l| l.reason.is_some())
        .collect()
}

/// `maildir/bsd/lhost-postfix-01.eml` -> `lhost-postfix`.
fn family_of(file: &str) -> String {
    let name = file.rsplit('/').next().unwrap_or(file);
    let stem = name.trim_end_matches(".eml");
    match stem.rsplit_once('-') {
        Some((head, tail)) if tail.bytes().all(|b| b.is_ascii_digit()) => head.to_owned(),
        _ => stem.to_owned(),
    }
}

#[derive(Default)]
struct Tally {
    files: usize,
    count_ok: usize,
    rows: usize,
    rcpt_ok: usize,
    family_ok: usize,
    exact_ok: usize,
    hard_ok: usize,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.files += other.files;
        self.count_ok += other.count_ok;
        self.rows += other.rows;
        self.rcpt_ok += other.rcpt_ok;
        self.family_ok += other.family_ok;
        self.exact_ok += other.exact_ok;
        self.hard_ok += other.hard_ok;
    }
}

fn pct(n: usize, d: usize) -> f64 {
    if d == 0 {
        100.0
    } else {
        100.0 * n as f64 / d as f64
    }
}

#[test]
fn sisimai_corpus_accuracy() {
    let dir = corpus_dir();
    let expected = load_expected(&dir);
    let mut per_family: BTreeMap<String, Tally> = BTreeMap::new();
    let mut mismatches = Vec::new();
    for (file, rows) in &expected {
        let got = analyse_file(&dir.join(file));
        let mut t = Tally {
            files: 1,
            ..Tally::default()
        };
        let want_count = if rows.iter().all(|r| r.reason == "-") {
            0
        } else {
            rows[0].count
        };
        if got.len() == want_count {
            t.count_ok += 1;
        } else {
            mismatches.push(format!("{file}: {} results, want {want_count}", got.len()));
        }
        for row in rows.iter().filter(|r| r.reason != "-") {
            t.rows += 1;
            let by_rcpt = got.iter().find(|g| {
                g.recipient.as_deref().is_some_and(|r| {
                    !row.recipient.is_empty() && r.eq_ignore_ascii_case(&row.recipient)
                })
            });
            if by_rcpt.is_some() || (row.recipient.is_empty() && !got.is_empty()) {
                t.rcpt_ok += 1;
            } else {
                let names: Vec<_> = got.iter().filter_map(|g| g.recipient.clone()).collect();
                mismatches.push(format!(
                    "{file}: recipient {} not in {names:?}",
                    row.recipient
                ));
            }
            let Some(mine) = by_rcpt.or_else(|| got.get(row.index.saturating_sub(1))) else {
                continue;
            };
            let want = Reason::from_name(&row.reason);
            let have = mine.reason;
            if want.map(Reason::family) == have.map(Reason::family) {
                t.family_ok += 1;
            } else {
                mismatches.push(format!(
                    "{file}: reason {:?} want {} ({:?}) [{}]",
                    have,
                    row.reason,
                    want.map(Reason::family),
                    mine.status.clone().unwrap_or_default()
                ));
            }
            if want == have {
                t.exact_ok += 1;
            }
            if mine.hard_bounce == row.hard {
                t.hard_ok += 1;
            } else {
                mismatches.push(format!(
                    "{file}: hard {} want {} ({:?})",
                    mine.hard_bounce, row.hard, have
                ));
            }
        }
        per_family.entry(family_of(file)).or_default().add(&t);
    }

    println!(
        "{:<26} {:>5} {:>7} {:>5} {:>7} {:>7} {:>7} {:>7}",
        "family", "files", "count%", "rows", "rcpt%", "reason%", "exact%", "hard%"
    );
    let mut total = Tally::default();
    for (name, t) in &per_family {
        println!(
            "{:<26} {:>5} {:>7.1} {:>5} {:>7.1} {:>7.1} {:>7.1} {:>7.1}",
            name,
            t.files,
            pct(t.count_ok, t.files),
            t.rows,
            pct(t.rcpt_ok, t.rows),
            pct(t.family_ok, t.rows),
            pct(t.exact_ok, t.rows),
            pct(t.hard_ok, t.rows)
        );
        total.add(t);
    }
    let count = pct(total.count_ok, total.files);
    let rcpt = pct(total.rcpt_ok, total.rows);
    let family = pct(total.family_ok, total.rows);
    let exact = pct(total.exact_ok, total.rows);
    let hard = pct(total.hard_ok, total.rows);
    println!(
        "{:<26} {:>5} {:>7.1} {:>5} {:>7.1} {:>7.1} {:>7.1} {:>7.1}",
        "TOTAL", total.files, count, total.rows, rcpt, family, exact, hard
    );
    println!("\nmismatches ({}):", mismatches.len());
    for m in &mismatches {
        println!("  {m}");
    }
    assert!(
        count >= 97.0,
        "right number of results in {count:.1}% of files"
    );
    assert!(rcpt >= 97.0, "right recipients for {rcpt:.1}% of rows");
    assert!(
        family >= 90.0,
        "right reason family for {family:.1}% of rows"
    );
    assert!(hard >= 95.0, "right hard/soft for {hard:.1}% of rows");
}

/// Every file of the corpus, with or without expectations (mbox files, 0-3 byte edge cases,
/// messages nobody could decode), goes through without a panic.
#[test]
fn every_corpus_file_is_survived() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&corpus_dir(), &mut files);
    assert!(files.len() > 400, "corpus has {} files", files.len());
    let mut lines = 0;
    for f in &files {
        let data = std::fs::read(f).unwrap_or_default();
        for (i, m) in split_mbox(&data).iter().enumerate() {
            lines += inspect_message("x", i + 1, m).len();
        }
        // Truncations of every file, the edge cases a corrupt mailbox gives.
        for cut in [0, 1, 2, 3, data.len() / 2] {
            let _ = mailfarm_bounce::analyse(&data[..cut.min(data.len())]);
        }
    }
    assert!(
        lines >= files.len() - 10,
        "{lines} lines for {} files",
        files.len()
    );
}
