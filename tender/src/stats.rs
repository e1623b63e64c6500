//! Counts of what the guest cost: VM exits by reason, hypercalls by call, frames, and the times from
//! the tender's start to the guest's first console byte and to its exit (`--stats`).

use std::{fmt, time::Instant};

use tender_abi::Hypercall;

/// Why the vCPU left the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    Hypercall,
    /// A signal interrupted `KVM_RUN`.
    Interrupted,
    /// Everything that stops the guest: violations and internal errors.
    Fatal,
}

const REASONS: [(ExitReason, &str); 3] =
    [(ExitReason::Hypercall, "hypercall"), (ExitReason::Interrupted, "interrupted"), (ExitReason::Fatal, "fatal")];
const CALLS: [Hypercall; 9] = [
    Hypercall::ConsoleWrite,
    Hypercall::Exit,
    Hypercall::Poll,
    Hypercall::NetAttach,
    Hypercall::BlockRead,
    Hypercall::BlockWrite,
    Hypercall::BlockFlush,
    Hypercall::Ready,
    Hypercall::Random,
];

/// The counters. Fixed arrays: counting never allocates.
#[derive(Debug)]
pub struct Stats {
    pub started: Instant,
    /// When the guest's first instruction was about to run (setup and sandbox done).
    pub entered: Option<Instant>,
    pub first_console: Option<Instant>,
    /// When the guest first said it is ready ([`Hypercall::Ready`]).
    pub ready: Option<Instant>,
    pub ended: Option<Instant>,
    exits: [u64; REASONS.len()],
    calls: [u64; 10],
    pub frames_sent: u64,
    pub frames_received: u64,
    pub frames_dropped: u64,
    pub console_bytes: u64,
}

impl Stats {
    pub fn new(started: Instant) -> Stats {
        Stats {
            started,
            entered: None,
            first_console: None,
            ready: None,
            ended: None,
            exits: [0; REASONS.len()],
            calls: [0; 10],
            frames_sent: 0,
            frames_received: 0,
            frames_dropped: 0,
            console_bytes: 0,
        }
    }

    pub fn exit(&mut self, reason: ExitReason) {
        if let Some(i) = REASONS.iter().position(|(r, _)| *r == reason) {
            self.exits[i] += 1;
        }
    }

    pub fn call(&mut self, call: Hypercall) {
        self.calls[call as usize] += 1;
    }

    pub fn total_exits(&self) -> u64 {
        self.exits.iter().sum()
    }

    pub fn calls_of(&self, call: Hypercall) -> u64 {
        self.calls[call as usize]
    }
}

fn ms(from: Instant, to: Option<Instant>) -> String {
    to.map_or("-".into(), |to| format!("{:.3} ms", to.duration_since(from).as_secs_f64() * 1e3))
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exits: Vec<String> = REASONS
            .iter()
            .zip(self.exits)
            .filter(|(_, n)| *n > 0)
            .map(|((_, name), n)| format!("{name} {n}"))
            .collect();
        writeln!(f, "tender: {} VM exits ({})", self.total_exits(), exits.join(", "))?;
        let calls: Vec<String> =
            CALLS.iter().filter(|c| self.calls_of(**c) > 0).map(|c| format!("{c:?} {}", self.calls_of(*c))).collect();
        writeln!(f, "tender: hypercalls: {}", if calls.is_empty() { "none".into() } else { calls.join(", ") })?;
        writeln!(
            f,
            "tender: start -> guest entry {}, -> first console byte {}, -> ready {}, -> guest exit {}; {} console bytes",
            ms(self.started, self.entered),
            ms(self.started, self.first_console),
            ms(self.started, self.ready),
            ms(self.started, self.ended),
            self.console_bytes
        )?;
        write!(
            f,
            "tender: frames sent {}, received {}, dropped {}",
            self.frames_sent, self.frames_received, self.frames_dropped
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_up_in_the_report() {
        let mut stats = Stats::new(Instant::now());
        stats.exit(ExitReason::Hypercall);
        stats.exit(ExitReason::Hypercall);
        stats.exit(ExitReason::Interrupted);
        stats.call(Hypercall::ConsoleWrite);
        stats.call(Hypercall::Exit);
        let report = stats.to_string();
        assert!(report.contains("3 VM exits (hypercall 2, interrupted 1)"), "{report}");
        assert!(report.contains("ConsoleWrite 1, Exit 1"), "{report}");
    }
}
