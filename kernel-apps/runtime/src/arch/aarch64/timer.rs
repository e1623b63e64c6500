//! The monotonic clock: the generic timer's virtual counter, CNTVCT_EL0.
//!
//! The counter starts near zero when the machine (or, under KVM, the VM) starts and ticks at
//! CNTFRQ_EL0 Hz (62.5 MHz on QEMU 7.2). Firmware is supposed to set CNTFRQ_EL0; when it reads 0,
//! boot falls back to the device tree's `/timer` `clock-frequency`.

use core::{
    arch::asm,
    sync::atomic::{AtomicU64, Ordering},
};

/// Counter ticks per second, or 0 before [`init`] (the clock then reads 0).
static FREQUENCY: AtomicU64 = AtomicU64::new(0);

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Learns the counter frequency: CNTFRQ_EL0, else `fallback_hz` (from the device tree). Like the
/// register, the frequency must fit in 32 bits (see [`ticks_to_ns`]); a larger fallback is ignored.
pub(super) fn init(fallback_hz: Option<u64>) {
    let hz = read_sysreg!("cntfrq_el0") & 0xffff_ffff; // the upper half is RES0
    let fallback = fallback_hz.filter(|&hz| hz <= u64::from(u32::MAX));
    let hz = if hz != 0 { hz } else { fallback.unwrap_or(0) };
    FREQUENCY.store(hz, Ordering::Relaxed);
}

/// Reads the virtual counter.
fn ticks() -> u64 {
    let ticks: u64;
    // SAFETY: the ISB keeps the read from being hoisted above earlier instructions, so the clock
    // never appears to run backwards relative to program order; reading CNTVCT_EL0 has no side
    // effects and EL1 may always read it.
    unsafe { asm!("isb", "mrs {}, cntvct_el0", out(reg) ticks, options(nomem, nostack, preserves_flags)) };
    ticks
}

/// Converts counter ticks to nanoseconds without overflowing for any `ticks`: whole seconds and
/// the remainder separately (the remainder is below the 32-bit frequency, so `rem * 1e9` fits).
pub(super) fn ticks_to_ns(ticks: u64) -> u64 {
    let hz = FREQUENCY.load(Ordering::Relaxed);
    if hz == 0 {
        return 0;
    }
    let seconds = ticks / hz;
    let rem = ticks % hz;
    seconds.saturating_mul(NANOS_PER_SECOND).saturating_add(rem * NANOS_PER_SECOND / hz)
}

/// Nanoseconds since the counter started.
pub(crate) fn now_ns() -> u64 {
    ticks_to_ns(ticks())
}

/// The counter value at which the clock reads `ns` (rounded up, so a timer set for it never fires
/// early); saturates for times beyond the counter's range.
#[cfg(feature = "virtio")]
pub(super) fn ns_to_ticks(ns: u64) -> u64 {
    let hz = u128::from(FREQUENCY.load(Ordering::Relaxed));
    let ticks = (u128::from(ns) * hz).div_ceil(u128::from(NANOS_PER_SECOND));
    u64::try_from(ticks).unwrap_or(u64::MAX)
}
