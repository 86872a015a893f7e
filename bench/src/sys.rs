//! What the report says about the machine and about processes: CPU model, cores, memory,
//! kernel, the peak memory of this process, and the CPU time of this process, of reaped
//! children and of a running child.

#![allow(unsafe_code)] // getrusage and sysconf through libc; every block has its SAFETY note.

use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

/// The machine the benchmark ran on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Logical processors listed in `/proc/cpuinfo`.
    pub cpus_online: usize,
    /// Logical processors this process may run on (affinity, cgroup quota).
    pub cpus_usable: usize,
    /// `MemTotal` from `/proc/meminfo`, in bytes.
    pub ram_bytes: u64,
    /// Kernel release, as `uname -r` prints it.
    pub kernel: String,
    /// 1, 5 and 15 minute load averages when the run started (other work on the machine).
    pub load_average: String,
}

impl Machine {
    /// Reads the machine description from `/proc`.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (key, value) = l.split_once(':')?;
                matches!(key.trim(), "model name" | "Model" | "cpu model")
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let cpus_online = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let cpus_usable = std::thread::available_parallelism().map_or(1, |n| n.get());
        let ram_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| status_kib(&m, "MemTotal:"))
            .map_or(0, |kib| kib * 1024);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let load_average = std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into());
        Self {
            load_average,
            cpu_model,
            cpus_online,
            cpus_usable,
            ram_bytes,
            kernel,
        }
    }
}

/// The value in KiB of a `Key:   123 kB` line of a `/proc` status-like file.
pub fn status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// A line of `/proc/self/status` in bytes (`VmHWM:` is the peak resident set size).
pub fn self_status_bytes(key: &str) -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status_kib(&status, key)
        .map(|kib| kib * 1024)
        .with_context(|| format!("no {key} line in /proc/self/status"))
}

/// Resets this process's peak resident set size (`VmHWM`) to its current size by writing 5
/// to `/proc/self/clear_refs` (Linux 4.0+), so a later `VmHWM` is the peak of what followed.
/// Returns false when the kernel refused; `VmHWM` then still holds the earlier peak.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", b"5").is_ok()
}

/// Bytes of the regular files under `path` (a file or a folder, recursively); 0 when absent.
pub fn disk_bytes(path: &std::path::Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    if !meta.is_dir() {
        return 0;
    }
    std::fs::read_dir(path).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| disk_bytes(&e.path()))
            .sum()
    })
}

/// The file system type (from `/proc/mounts`) holding `path`: fsync on tmpfs costs nothing.
pub fn fs_type(path: &std::path::Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace().skip(1);
            Some((fields.next()?, fields.next()?))
        })
        .filter(|(mount, _)| path.starts_with(mount))
        .max_by_key(|(mount, _)| mount.len())
        .map_or_else(|| "unknown".into(), |(_, kind)| kind.to_owned())
}

/// Whether this process runs with effective uid 0 (smtp-sink then needs `-u`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            line.split_whitespace().nth(1).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// CPU time from `getrusage(2)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// User plus system CPU time.
    pub cpu: Duration,
}

/// `getrusage` for this process (`libc::RUSAGE_SELF`, every thread) or its reaped children
/// (`libc::RUSAGE_CHILDREN`).
pub fn usage(who: libc::c_int) -> anyhow::Result<Usage> {
    let mut raw = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: the pointer is valid, aligned and large enough for one `rusage`, which is all
    // getrusage writes.
    let rc = unsafe { libc::getrusage(who, raw.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("getrusage");
    }
    // SAFETY: the struct started zeroed (a valid `rusage`) and getrusage succeeded.
    let raw = unsafe { raw.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Ok(Usage {
        cpu: tv(raw.ru_utime) + tv(raw.ru_stime),
    })
}

/// What the benches read of one process in `/proc/PID/stat`.
#[derive(Clone, Debug)]
pub struct ProcStat {
    /// Parent process id.
    pub ppid: u32,
    /// Command name (between the parentheses; may hold spaces).
    pub name: String,
    /// Its own CPU, utime + stime, in clock ticks.
    pub own_ticks: u64,
    /// CPU of the children it reaped, cutime + cstime, in clock ticks.
    pub reaped_ticks: u64,
}

/// Reads `/proc/PID/stat`: the one parser of that file in the benches.
pub fn proc_stat(pid: u32) -> anyhow::Result<ProcStat> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name may hold spaces and parentheses: it runs from the first '(' to the
    // last ')'. The fields after it start at field 3 (state): ppid is field 4, utime, stime,
    // cutime and cstime are fields 14 to 17.
    let (Some(open), Some((head, rest))) = (stat.find('('), stat.rsplit_once(')')) else {
        bail!("malformed {path}");
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("malformed {path}"))
    };
    Ok(ProcStat {
        ppid: u32::try_from(num(1)?).with_context(|| format!("malformed {path}"))?,
        name: head.get(open + 1..).unwrap_or_default().to_owned(),
        own_ticks: num(11)? + num(12)?,
        reaped_ticks: num(13)? + num(14)?,
    })
}

/// CPU time used so far by a running process, from `/proc/PID/stat`.
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    Ok(ticks_to_duration(proc_stat(pid)?.own_ticks))
}

/// Peak resident set size (`VmHWM`) of a running process, in bytes.
pub fn peak_rss(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status_kib(&status, "VmHWM:")
        .map(|kib| kib * 1024)
        .with_context(|| format!("no VmHWM in {path}"))
}

/// CPU time of `ticks` clock ticks (`/proc` counts in them).
pub fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf only reads a constant of the C library.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// Sends SIGKILL to process `pid` (a child of this process): the crash the durability benches
/// inflict. Errors (the process already gone) are ignored.
pub fn kill_hard(pid: u32) {
    signal(pid, libc::SIGKILL);
}

/// Sends SIGTERM to process `pid` (a child of this process): the daemons' graceful stop.
/// Errors (the process already gone) are ignored.
pub fn terminate(pid: u32) {
    signal(pid, libc::SIGTERM);
}

/// Sends `sig` to process `pid`, ignoring errors.
fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; a stale pid at worst
    // gets ESRCH.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_reads_this_process() {
        let me = proc_stat(std::process::id()).unwrap();
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() };
        assert_eq!(i64::from(me.ppid), i64::from(parent));
        assert!(!me.name.is_empty());
        assert!(peak_rss(std::process::id()).unwrap() > 0);
        assert!(proc_stat(u32::MAX).is_err(), "no such process");
    }
}
