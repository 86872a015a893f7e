//! Measuring the smurf's own load for its periodic reports to the coordinator.

use std::time::Instant;

/// CPU time of this process between calls, as a percentage of one core (Linux `/proc`;
/// 0 where unavailable).
pub struct CpuMeter {
    last_ticks: u64,
    last_time: Instant,
}

fn process_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, i.e. 11 and 12 after ')'.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

impl Default for CpuMeter {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuMeter {
    /// Starts measuring now.
    pub fn new() -> Self {
        Self {
            last_ticks: process_ticks().unwrap_or(0),
            last_time: Instant::now(),
        }
    }

    /// CPU use since the previous call (clock ticks assumed 100 Hz, the Linux default).
    pub fn percent(&mut self) -> u16 {
        let Some(ticks) = process_ticks() else {
            return 0;
        };
        let elapsed = self.last_time.elapsed().as_secs_f64();
        let used = ticks.saturating_sub(self.last_ticks) as f64 / 100.0;
        self.last_ticks = ticks;
        self.last_time = Instant::now();
        if elapsed <= 0.0 {
            return 0;
        }
        (used / elapsed * 100.0).round().min(f64::from(u16::MAX)) as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_loop_shows_cpu_use() {
        let mut meter = CpuMeter::new();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let percent = meter.percent();
        assert!(percent >= 30, "a busy loop should use CPU, got {percent}%");
    }
}
