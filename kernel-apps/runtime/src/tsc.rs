//! Turning x86 time-stamp counter readings into nanoseconds.
//!
//! Two sources, both pure arithmetic here so that they are tested on the host; `arch::x86_64`
//! reads the TSC, CPUID and the shared page:
//!
//! - the pvclock ABI (kvmclock under KVM, also Xen's vcpu time): the hypervisor publishes a
//!   `pvclock_vcpu_time_info` snapshot (`system_time` in ns at `tsc_timestamp`, and a fixed-point
//!   multiplier), guarded by a version counter that is odd while it is being updated;
//! - the CPUID frequency leaves 0x15 (TSC/crystal ratio and crystal frequency) and 0x16 (base
//!   frequency in MHz), the fallback when there is no kvmclock (e.g. QEMU TCG).
//!
//! Used by the x86_64 QEMU port, and by the tender platform on both architectures ([`fixed_frequency`]).

use core::sync::atomic::{Ordering, fence};

/// A consistent copy of `struct pvclock_vcpu_time_info`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PvclockSnapshot {
    /// The TSC value at which `system_time` was sampled.
    pub tsc_timestamp: u64,
    /// Nanoseconds since the clock's epoch at `tsc_timestamp`.
    pub system_time: u64,
    /// 32.32 fixed-point multiplier from (shifted) TSC ticks to nanoseconds.
    pub tsc_to_system_mul: u32,
    /// Power-of-two pre-scale of the tick delta: left if positive, right if negative.
    pub tsc_shift: i8,
    /// `PVCLOCK_TSC_STABLE_BIT` (bit 0) and friends.
    pub flags: u8,
}

impl PvclockSnapshot {
    /// The clock in nanoseconds at TSC value `tsc`, which may be before the snapshot (as the TSC
    /// recorded at the first instruction of boot is). Saturates at zero.
    pub fn nanos_at(&self, tsc: u64) -> u64 {
        if tsc >= self.tsc_timestamp {
            let delta = scale_delta(tsc - self.tsc_timestamp, self.tsc_to_system_mul, self.tsc_shift);
            self.system_time.wrapping_add(delta)
        } else {
            let delta = scale_delta(self.tsc_timestamp - tsc, self.tsc_to_system_mul, self.tsc_shift);
            self.system_time.saturating_sub(delta)
        }
    }
}

impl PvclockSnapshot {
    /// The first TSC value at which the clock reads `nanos` or later: the inverse of
    /// [`PvclockSnapshot::nanos_at`], for programming a TSC-deadline timer. Times before the
    /// snapshot give its TSC timestamp; times beyond the counter's range saturate.
    pub fn tsc_at(&self, nanos: u64) -> u64 {
        let delta_ns = nanos.saturating_sub(self.system_time);
        if self.tsc_to_system_mul == 0 {
            return u64::MAX;
        }
        // Undo `* mul >> 32` (rounding up, so the result is never early), then undo the shift.
        let scaled = (u128::from(delta_ns) << 32).div_ceil(u128::from(self.tsc_to_system_mul));
        let delta_tsc = if self.tsc_shift >= 0 {
            scaled.div_ceil(1u128 << self.tsc_shift.unsigned_abs().min(64))
        } else {
            scaled.checked_shl(u32::from(self.tsc_shift.unsigned_abs())).unwrap_or(u128::MAX)
        };
        u64::try_from(delta_tsc).map_or(u64::MAX, |d| self.tsc_timestamp.saturating_add(d))
    }
}

/// A clock for a counter that starts at zero and ticks at a fixed `khz` kHz (the tender's TSC, or
/// an aarch64 generic timer): a snapshot at tick 0, time 0, whose multiplier and shift make
/// [`PvclockSnapshot::nanos_at`] one 64×32-bit multiply instead of a 128-bit division per reading.
/// `khz` 0 gives a clock that reads 0.
pub fn fixed_frequency(khz: u64) -> PvclockSnapshot {
    const NANOS_PER_MS: u128 = 1_000_000;
    if khz == 0 {
        return PvclockSnapshot::default();
    }
    // ns per tick = 1e6 / khz = 2^shift * mul / 2^32 with mul < 2^32: pre-shift slow counters
    // left until a (shifted) tick is under a nanosecond, which keeps mul's 32 bits of precision.
    let mut shift = 0u32;
    while (u128::from(khz) << shift) <= NANOS_PER_MS && shift < 63 {
        shift += 1;
    }
    let mul = (NANOS_PER_MS << 32) / (u128::from(khz) << shift);
    PvclockSnapshot {
        tsc_timestamp: 0,
        system_time: 0,
        tsc_to_system_mul: u32::try_from(mul).unwrap_or(u32::MAX),
        tsc_shift: shift as i8,
        flags: 0,
    }
}

/// `pvclock_scale_delta`: `(delta << shift) * mul / 2^32`, with a negative shift shifting right.
pub fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let shifted = if shift >= 0 {
        delta.checked_shl(shift as u32).unwrap_or(0)
    } else {
        delta.checked_shr(shift.unsigned_abs() as u32).unwrap_or(0)
    };
    ((shifted as u128 * mul as u128) >> 32) as u64
}

/// Reads a consistent snapshot with the pvclock version protocol: read the version, the fields,
/// and the version again, and retry while the version is odd (an update is in progress) or
/// changed underneath.
///
/// `version` and `fields` read the shared page (volatile); the fences keep the compiler and the
/// CPU from moving the field reads outside the two version reads.
pub fn read_consistent(
    mut version: impl FnMut() -> u32,
    mut fields: impl FnMut() -> PvclockSnapshot,
) -> PvclockSnapshot {
    loop {
        let before = version();
        fence(Ordering::Acquire);
        let snapshot = fields();
        fence(Ordering::Acquire);
        let after = version();
        if before & 1 == 0 && before == after {
            return snapshot;
        }
        core::hint::spin_loop();
    }
}

/// The TSC frequency in Hz from CPUID leaf 0x15 (`eax` = denominator, `ebx` = numerator, `ecx` =
/// crystal Hz) or, failing that, leaf 0x16 (`eax` = base MHz). Pass zeros for a leaf the CPU
/// lacks. `None` when neither gives a frequency.
pub fn cpuid_frequency_hz(leaf_15: [u32; 3], leaf_16_eax: u32) -> Option<u64> {
    let [denominator, numerator, crystal_hz] = leaf_15;
    if denominator != 0 && numerator != 0 && crystal_hz != 0 {
        return Some(crystal_hz as u64 * numerator as u64 / denominator as u64);
    }
    let base_mhz = leaf_16_eax & 0xffff;
    (base_mhz != 0).then_some(base_mhz as u64 * 1_000_000)
}

/// The first tick count at `hz` that reaches `nanos`: the inverse of [`ticks_to_nanos`], rounded
/// up; saturates.
pub fn nanos_to_ticks(nanos: u64, hz: u64) -> u64 {
    u64::try_from((u128::from(nanos) * u128::from(hz)).div_ceil(1_000_000_000)).unwrap_or(u64::MAX)
}

/// Nanoseconds for `ticks` at `hz`, without overflowing for any realistic uptime.
pub fn ticks_to_nanos(ticks: u64, hz: u64) -> u64 {
    if hz == 0 {
        return 0;
    }
    (ticks as u128 * 1_000_000_000 / hz as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    // A 2.5 GHz TSC as KVM describes it: shift -1 halves the ticks, and mul = 0.8 * 2^32 makes
    // each halved tick 0.8 ns, so one tick is 0.4 ns.
    const SNAPSHOT: PvclockSnapshot = PvclockSnapshot {
        tsc_timestamp: 1_000_000,
        system_time: 5_000,
        tsc_to_system_mul: 3_435_973_837,
        tsc_shift: -1,
        flags: 1,
    };

    #[test]
    fn scale_delta_matches_the_kernel_formula() {
        assert_eq!(scale_delta(2_500_000_000, 3_435_973_837, -1), 1_000_000_000);
        // mul = 2^31 with shift +1 is the identity.
        assert_eq!(scale_delta(12_345, 1 << 31, 1), 12_345);
        assert_eq!(scale_delta(0, u32::MAX, 5), 0);
        // Huge deltas do not overflow the 128-bit product.
        assert_eq!(scale_delta(u64::MAX, 1 << 31, -1), u64::MAX >> 2);
    }

    #[test]
    fn nanos_after_and_before_the_snapshot() {
        assert_eq!(SNAPSHOT.nanos_at(1_000_000), 5_000);
        assert_eq!(SNAPSHOT.nanos_at(1_000_000 + 2_500), 6_000);
        // The boot TSC is read before kvmclock is enabled, so before the snapshot.
        assert_eq!(SNAPSHOT.nanos_at(1_000_000 - 2_500), 4_000);
        assert_eq!(SNAPSHOT.nanos_at(0), 0);
    }

    #[test]
    fn read_consistent_retries_while_odd_or_changed() {
        // Versions seen: 3 (odd, update in progress), then 4 → 6 (changed), then 6 → 6.
        let versions = [3, 4, 4, 6, 6, 6];
        let next = Cell::new(0);
        let reads = Cell::new(0);
        let snapshot = read_consistent(
            || {
                let v = versions[next.get()];
                next.set(next.get() + 1);
                v
            },
            || {
                reads.set(reads.get() + 1);
                PvclockSnapshot { system_time: reads.get(), ..SNAPSHOT }
            },
        );
        assert_eq!(snapshot.system_time, 3);
        assert_eq!(next.get(), 6);
    }

    #[test]
    fn cpuid_frequency_prefers_leaf_15_then_16() {
        // 25 MHz crystal, ratio 176/2: 2.2 GHz.
        assert_eq!(cpuid_frequency_hz([2, 176, 25_000_000], 2100), Some(2_200_000_000));
        assert_eq!(cpuid_frequency_hz([2, 176, 0], 2100), Some(2_100_000_000));
        assert_eq!(cpuid_frequency_hz([0, 0, 0], 0), None);
    }

    #[test]
    fn ticks_to_nanos_handles_zero_and_large_values() {
        assert_eq!(ticks_to_nanos(2_200, 2_200_000_000), 1_000);
        assert_eq!(ticks_to_nanos(5, 0), 0);
        assert_eq!(ticks_to_nanos(u64::MAX / 2, 1_000_000_000), u64::MAX / 2);
    }

    #[test]
    fn tsc_at_inverts_nanos_at_without_being_early() {
        for snapshot in [
            SNAPSHOT,
            PvclockSnapshot { tsc_shift: 1, tsc_to_system_mul: 1 << 31, ..SNAPSHOT },
            PvclockSnapshot { tsc_shift: 0, tsc_to_system_mul: 2_147_483_648 + 12_345, ..SNAPSHOT },
            PvclockSnapshot { tsc_shift: -3, tsc_to_system_mul: 4_000_000_000, ..SNAPSHOT },
        ] {
            for nanos in [5_000u64, 5_001, 6_000, 1_000_000_007, 86_400_000_000_000] {
                let tsc = snapshot.tsc_at(nanos);
                assert!(snapshot.nanos_at(tsc) >= nanos, "{snapshot:?} {nanos}: early");
                // At most a tick or two late (a tick is at most 2 ns here).
                assert!(snapshot.nanos_at(tsc) - nanos <= 4, "{snapshot:?} {nanos}: late");
            }
            assert_eq!(snapshot.tsc_at(0), snapshot.tsc_timestamp);
        }
        assert_eq!(PvclockSnapshot { tsc_to_system_mul: 0, ..SNAPSHOT }.tsc_at(9), u64::MAX);
    }

    #[test]
    fn fixed_frequency_scales_ticks_to_nanoseconds() {
        // 2.2 GHz, 62.5 MHz (QEMU's generic timer), 19.2 MHz (the Pi's), and 1 kHz.
        for (khz, ticks, nanos) in [
            (2_200_000u64, 2_200_000_000u64, 1_000_000_000u64),
            (62_500, 62_500_000, 1_000_000_000),
            (19_200, 19_200_000 * 3600, 3_600_000_000_000),
            (1, 5, 5_000_000),
        ] {
            let clock = fixed_frequency(khz);
            let read = clock.nanos_at(ticks);
            // Within a millionth, and never more than a tick early for a nanosecond target.
            assert!(read.abs_diff(nanos) <= nanos / 1_000_000 + 1, "{khz} kHz: {read} ns, expected {nanos}");
            let tsc = clock.tsc_at(nanos);
            assert!(clock.nanos_at(tsc) >= nanos, "{khz} kHz: tsc_at is early");
        }
        assert_eq!(fixed_frequency(0).nanos_at(12_345), 0);
    }

    #[test]
    fn nanos_to_ticks_rounds_up_and_saturates() {
        assert_eq!(nanos_to_ticks(1_000, 2_200_000_000), 2_200);
        assert_eq!(nanos_to_ticks(1, 2_200_000_000), 3);
        assert_eq!(nanos_to_ticks(u64::MAX, 4_000_000_000), u64::MAX);
        for nanos in [1u64, 999, 1_000_000, 123_456_789_012] {
            assert!(ticks_to_nanos(nanos_to_ticks(nanos, 2_200_000_000), 2_200_000_000) >= nanos);
        }
    }
}
