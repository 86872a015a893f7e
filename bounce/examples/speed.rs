//! Quick single-thread timing of `analyse` over the files given (the full benchmark with its
//! report is `mailfarm-bench bounce`).

use std::time::Instant;

fn main() {
    let data: Vec<Vec<u8>> = std::env::args()
        .skip(1)
        .filter_map(|p| std::fs::read(p).ok())
        .collect();
    let messages: Vec<&[u8]> = data
        .iter()
        .flat_map(|d| mailfarm_bounce::split_mbox(d))
        .collect();
    let rounds = 20;
    let start = Instant::now();
    for _ in 0..rounds {
        for m in &messages {
            std::hint::black_box(mailfarm_bounce::analyse(std::hint::black_box(m)));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let n = (messages.len() * rounds) as f64;
    println!(
        "{} messages x {rounds}: {:.0} messages/s",
        messages.len(),
        n / secs
    );
}
