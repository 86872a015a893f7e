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
        let now = Instant::now();
        let percent = percent_of(
            ticks.saturating_sub(self.last_ticks),
            now.duration_since(self.last_time),
        );
        self.last_ticks = ticks;
        self.last_time = now;
        percent
    }
}

/// The CPU use that `used_ticks` clock ticks (100 Hz) over `elapsed` are, in percent of one
/// core.
fn percent_of(used_ticks: u64, elapsed: std::time::Duration) -> u16 {
    let elapsed = elapsed.as_secs_f64();
    if elapsed <= 0.0 {
        return 0;
    }
    let used = used_ticks as f64 / 100.0;
    (used / elapsed * 100.0).round().min(f64::from(u16::MAX)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    #[test]
    fn ticks_over_time_are_a_share_of_one_core() {
        assert_eq!(percent_of(50, Duration::from_secs(1)), 50);
        assert_eq!(percent_of(200, Duration::from_secs(2)), 100);
        assert_eq!(percent_of(150, Duration::from_millis(500)), 300);
        assert_eq!(percent_of(7, Duration::ZERO), 0);
        assert_eq!(percent_of(u64::MAX, Duration::from_millis(1)), u16::MAX);
    }

    #[test]
    fn the_process_cpu_time_is_readable() {
        assert!(process_ticks().is_some(), "/proc/self/stat");
    }
}
