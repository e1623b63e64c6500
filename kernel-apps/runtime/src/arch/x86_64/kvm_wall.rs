//! The wall clock's source on QEMU `microvm`: KVM's paravirtual wall clock.
//!
//! Writing a guest address to `MSR_KVM_WALL_CLOCK_NEW` makes KVM write there, during the write,
//! the host's UTC time at the moment kvmclock read zero; kvmclock (the monotonic clock, see
//! `clock`) then carries it forward with nanosecond resolution. (The machine has no CMOS RTC:
//! `qemu::Machine` starts `microvm` with `rtc=off`, which saves boot time.) Without kvmclock (TCG,
//! another hypervisor) the clock stays unsynchronised.

use core::{cell::UnsafeCell, time::Duration};

use super::clock;
use crate::wallclock::{self, Sample, Source};

/// KVM's wall-clock MSR: the guest-physical address of a [`PvclockWallClock`].
const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;

/// How far KVM's wall clock may be from the host's: it is computed from the host's clocks when the
/// MSR is written, to well within this.
const UNCERTAINTY: Duration = Duration::from_millis(10);

/// `struct pvclock_wall_clock`, written by KVM when the MSR is written.
#[repr(C, align(16))]
struct PvclockWallClock {
    version: u32,
    sec: u32,
    nsec: u32,
}

struct Shared(UnsafeCell<PvclockWallClock>);

// SAFETY: KVM writes it once, inside the `wrmsr` at CPL 0 in `request`; afterwards it is only read,
// on the one CPU.
unsafe impl Sync for Shared {}

/// In `.bss`, identity-mapped (so its address is its physical address) and user-readable.
static WALL: Shared = Shared(UnsafeCell::new(PvclockWallClock { version: 0, sec: 0, nsec: 0 }));

/// Asks KVM for its wall clock. Runs at CPL 0, after `clock::init`.
pub(super) fn request() {
    if clock::is_kvmclock() {
        // SAFETY: kvmclock is running, so KVM offers its MSRs (the same feature bit covers both).
        // KVM writes 12 bytes at the address: `WALL`, a static the runtime owns.
        unsafe { clock::wrmsr(MSR_KVM_WALL_CLOCK_NEW, WALL.0.get() as u64) };
    }
}

/// Sets the runtime's wall clock from what KVM wrote, if it wrote a consistent time.
pub(super) fn set_wall_clock() {
    let wall = WALL.0.get();
    // SAFETY: a live, aligned static that KVM wrote before `request` returned and nothing writes
    // since; volatile because the compiler never saw that write.
    let (version, sec, nsec) = unsafe {
        (
            (&raw const (*wall).version).read_volatile(),
            (&raw const (*wall).sec).read_volatile(),
            (&raw const (*wall).nsec).read_volatile(),
        )
    };
    // An odd version is an update in progress; zero is no update at all.
    if version == 0 || version % 2 == 1 || sec == 0 {
        return;
    }
    let at_zero = Duration::new(u64::from(sec), nsec.min(999_999_999));
    let monotonic = Duration::from_nanos(clock::now_ns());
    wallclock::set(Sample { unix: at_zero + monotonic, monotonic, uncertainty: UNCERTAINTY, source: Source::Kvmclock });
}
