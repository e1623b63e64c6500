//! What `/proc` says about a process: whether it is the one we started (its start time), its CPU
//! time and its resident memory.

use std::fs;

use rack_api::agent::{RunRef, RunStats};

/// `/proc` reports times in USER_HZ, which Linux fixes at 100 on every architecture it exports to
/// user space (the kernel's own HZ may differ; `/proc` converts).
pub const TICKS_PER_SECOND: u64 = 100;

/// The fields of `/proc/<pid>/stat` that supervision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `Z`…
    pub state: char,
    /// User + system CPU time, in ticks.
    pub cpu_ticks: u64,
    /// When the process started, in ticks since boot: with the pid, a unique name for it.
    pub start_ticks: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may contain
/// spaces and parentheses itself, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); field N is at index N - 3.
    let field = |n: usize| fields.get(n - 3).copied();
    let state = field(3)?.chars().next()?;
    let utime: u64 = field(14)?.parse().ok()?;
    let stime: u64 = field(15)?.parse().ok()?;
    let start_ticks = field(22)?.parse().ok()?;
    Some(ProcStat { state, cpu_ticks: utime + stime, start_ticks })
}

/// The stat of process `pid`, if it exists.
pub fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether `pid` is still the live process that started at `start_ticks` (not a zombie, not a
/// later process that reuses the pid).
pub fn is_alive(pid: u32, start_ticks: u64) -> bool {
    stat(pid).is_some_and(|s| s.start_ticks == start_ticks && s.state != 'Z' && s.state != 'X')
}

/// Resident memory of `pid` in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Seconds since boot, in ticks.
pub fn uptime_ticks() -> Option<u64> {
    let text = fs::read_to_string("/proc/uptime").ok()?;
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((seconds * TICKS_PER_SECOND as f64) as u64)
}

/// CPU, memory and age of a run's process from `/proc`; `None` once it has ended, or if its pid
/// now names another process (the start time differs).
pub fn run_stats(run: &RunRef) -> Option<RunStats> {
    let pid = run.pid?;
    let stat = stat(pid)?;
    if run.start_ticks.is_some_and(|start| start != stat.start_ticks) {
        return None;
    }
    let age_ticks = uptime_ticks()?.saturating_sub(stat.start_ticks);
    Some(RunStats {
        cpu_ms: stat.cpu_ticks * 1000 / TICKS_PER_SECOND,
        rss_bytes: rss_bytes(pid)?,
        age_ms: age_ticks * 1000 / TICKS_PER_SECOND,
        gate: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "4242 (qemu (x) y) S 1 4242 4242 0 -1 4194560 1 0 0 0 7 3 0 0 20 0 2 0 123456 1000 100";
        assert_eq!(parse_stat(line), Some(ProcStat { state: 'S', cpu_ticks: 10, start_ticks: 123456 }));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None, "truncated lines are refused, not misread");
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id();
        let start = stat(me).expect("our own stat").start_ticks;
        assert!(is_alive(me, start));
        assert!(!is_alive(me, start + 1), "a reused pid must not be adopted");
        assert!(rss_bytes(me).is_some_and(|b| b > 0));
    }
}
