//! Appliance exit statuses and how each platform reports them to the host.
//!
//! | status  | meaning                                                        |
//! |---------|----------------------------------------------------------------|
//! | 0       | success                                                        |
//! | 1..=100 | the appliance's own failure codes                              |
//! | 101     | the appliance panicked (message and location on the console)   |
//! | 102     | an unhandled CPU exception (report on the console)             |
//! | 103     | the platform could not boot the appliance (e.g. no usable RAM)  |
//!
//! How the host sees the status:
//! - **aarch64**, QEMU started with `-semihosting` (`virt` and `raspi3b` alike): QEMU exits with the
//!   status itself. Without semihosting the runtime prints it and then, per board
//!   ([`crate::board::PowerOff`]):
//!   - `virt` (and boards whose device tree has a `/psci` node): PSCI `SYSTEM_OFF`, which carries no
//!     status (QEMU exits 0);
//!   - Raspberry Pi 3/4 (real boards, or `raspi3b` without semihosting): no PSCI and no power switch,
//!     so the CPU halts in `wfi` with interrupts masked; the status is only on the serial console.
//!     (A PM-watchdog reset would boot the appliance again, which is not what an exit means.)
//!
//!   See `docs/boards.md`.
//! - **x86_64**, QEMU with `-device isa-debug-exit,iobase=0xf4,iosize=4`: QEMU exits with
//!   `status * 2 + 1`, so 0 becomes 1 and 101 becomes 203. Statuses above 127 do not fit.
//!
//! On every platform the last console line is `mast: exit status N`, so a log alone tells the story.

/// The status an appliance returns from its entry function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExitCode(pub u8);

impl ExitCode {
    /// 0: the appliance did its job.
    pub const SUCCESS: ExitCode = ExitCode(0);
    /// 1: the appliance's generic failure.
    pub const FAILURE: ExitCode = ExitCode(1);
    /// 101: the appliance panicked.
    pub const PANIC: ExitCode = ExitCode(101);
    /// 102: an unhandled CPU exception.
    pub const CPU_EXCEPTION: ExitCode = ExitCode(102);
    /// 103: the platform could not boot the appliance.
    pub const BOOT_FAILURE: ExitCode = ExitCode(103);

    /// The largest status every platform can report (x86_64's debug-exit port halves the range).
    pub const MAX_PORTABLE: u8 = 127;

    /// QEMU's process exit status for this code under `isa-debug-exit` on x86_64.
    pub const fn x86_debug_exit_status(self) -> i32 {
        (self.0 as i32) * 2 + 1
    }

    /// Recovers the appliance's status from QEMU's exit status under `isa-debug-exit`; `None` when
    /// the status cannot have come from the device (it is always odd).
    pub const fn from_x86_debug_exit_status(status: i32) -> Option<ExitCode> {
        if status > 0 && status % 2 == 1 && status <= 255 { Some(ExitCode(((status - 1) / 2) as u8)) } else { None }
    }

    /// A word for the reserved statuses, for reports.
    pub const fn meaning(self) -> &'static str {
        match self.0 {
            0 => "success",
            101 => "panic",
            102 => "CPU exception",
            103 => "boot failure",
            _ => "appliance-defined failure",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_debug_exit_round_trips_every_portable_status() {
        for code in 0..=ExitCode::MAX_PORTABLE {
            let status = ExitCode(code).x86_debug_exit_status();
            assert_eq!(ExitCode::from_x86_debug_exit_status(status), Some(ExitCode(code)));
        }
    }

    #[test]
    fn even_or_out_of_range_qemu_statuses_are_not_appliance_statuses() {
        assert_eq!(ExitCode::from_x86_debug_exit_status(0), None);
        assert_eq!(ExitCode::from_x86_debug_exit_status(2), None);
        assert_eq!(ExitCode::from_x86_debug_exit_status(257), None);
        assert_eq!(ExitCode::from_x86_debug_exit_status(-1), None);
    }

    #[test]
    fn reserved_statuses_have_names() {
        assert_eq!(ExitCode::PANIC.meaning(), "panic");
        assert_eq!(ExitCode::CPU_EXCEPTION.meaning(), "CPU exception");
        assert_eq!(ExitCode(7).meaning(), "appliance-defined failure");
    }
}
