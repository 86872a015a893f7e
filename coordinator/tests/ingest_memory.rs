//! Scenario: a large recipient list streams into the store in bounded memory. The CSV is
//! generated on the fly (never held in memory) and is several times larger than the memory
//! bound, so an ingest that buffered the rows could not pass.

use std::io::Read;

use mailfarm_coordinator::{Coordinator, CoordinatorSettings};
use mailfarm_pki::{FarmFiles, Identity};
use mailfarm_protocol::{CampaignSubmission, DeliveryTarget};

/// Generates `rows` CSV rows of about 2 KB each, plus a few broken ones.
struct GeneratedCsv {
    rows: u64,
    next: u64,
    pending: Vec<u8>,
    pos: usize,
}

impl Read for GeneratedCsv {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.pending.len() {
            self.pending.clear();
            self.pos = 0;
            if self.next == 0 {
                self.pending.extend_from_slice(b"email,first_name,notes\n");
            } else if self.next > self.rows {
                return Ok(0);
            } else if self.next.is_multiple_of(40_000) {
                self.pending.extend_from_slice(b"broken-address,X,Y\n");
            } else {
                let notes = "x".repeat(2000);
                self.pending.extend_from_slice(
                    format!(
                        "u{0}@d{1}.example,N{0},{notes}\n",
                        self.next,
                        self.next % 97
                    )
                    .as_bytes(),
                );
            }
            self.next += 1;
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_csv_ingests_in_bounded_memory() {
    const ROWS: u64 = 120_000; // ~240 MB of CSV
    const BOUND_MB: u64 = 120;
    let dir = tempfile::tempdir().unwrap();
    mailfarm_pki::init_farm(dir.path(), &[], &[]).unwrap();
    let mut settings = CoordinatorSettings::new(
        "127.0.0.1:0".parse().unwrap(),
        Identity::load(&FarmFiles::in_dir(dir.path(), "coordinator")).unwrap(),
        vec![7; 32],
    );
    settings.state_dir = Some(dir.path().join("state"));
    let coordinator = Coordinator::bind(settings).await.unwrap();
    let handle = coordinator.handle();
    let before = peak_rss_kb();
    let started = std::time::Instant::now();
    let submission = CampaignSubmission {
        id: "big".into(),
        from: "News <news@sender.example>".into(),
        reply_to: None,
        subject: "Hi {{first_name}}".into(),
        list_id: "big.sender.example".into(),
        bounce_domain: "b.sender.example".into(),
        list_unsubscribe: None,
        text: "Hello {{first_name}} {{notes}}".into(),
        html: None,
        delivery: DeliveryTarget {
            relay: Some("127.0.0.1:9".into()),
            connections: 1,
        },
        start_at_ms: None,
        rate_cap: None,
        unsubscribe_base_url: None,
    };
    let csv = GeneratedCsv {
        rows: ROWS,
        next: 0,
        pending: Vec::new(),
        pos: 0,
    };
    let launched = handle.launch(submission, csv).await.unwrap();
    let elapsed = started.elapsed();
    let grown_mb = (peak_rss_kb().saturating_sub(before)) / 1024;
    println!(
        "ingested {} rows ({} rejected) in {:.1}s, {:.0} rows/s, peak RSS growth {grown_mb} MB",
        launched.counters.total,
        launched.counters.rejected_rows,
        elapsed.as_secs_f64(),
        ROWS as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(launched.counters.rejected_rows, ROWS / 40_000);
    assert_eq!(launched.counters.total, ROWS - ROWS / 40_000);
    assert_eq!(launched.counters.queued, launched.counters.total);
    assert!(
        grown_mb < BOUND_MB,
        "ingest grew peak RSS by {grown_mb} MB (bound {BOUND_MB} MB) for a ~240 MB CSV"
    );
    let rejects =
        std::fs::read_to_string(dir.path().join("state/rejects/big.rejects.txt")).unwrap();
    assert!(
        rejects.contains("line 40001: bad address \"broken-address\""),
        "{rejects}"
    );
}
