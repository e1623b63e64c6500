//! The wall clock's source on QEMU `virt`: an Arm PrimeCell PL031 real-time clock, read once.
//!
//! The PL031's data register counts whole seconds since the Unix epoch (QEMU starts it at the
//! host's UTC time, `-rtc base=utc` being its default). A read says the time is somewhere in that
//! second, so the sample is its middle, give or take half a second. Nothing else of the device is
//! used: no alarm, no interrupt, and the appliance never writes it.

use core::{ptr, time::Duration};

use crate::{
    time::Instant,
    wallclock::{self, Sample, Source},
};

/// Data register: seconds since the epoch.
const RTCDR: usize = 0x000;
/// The first byte of the PrimeCell peripheral ID, 0x31 for a PL031.
const PERIPH_ID0: usize = 0xfe0;

fn read(base: usize, offset: usize) -> u32 {
    // SAFETY: `base` is a PL031 the device tree named and boot mapped as Device memory for the rest
    // of the appliance's life; its registers are 32-bit, aligned, and reading them has no effect.
    unsafe { ptr::read_volatile((base + offset) as *const u32) }
}

/// Sets the wall clock from the PL031 at `base`, mapped as Device memory by the caller; a device
/// that does not identify as a PL031, or reads 0 (never set), leaves the clock unsynchronised.
pub(super) fn set_wall_clock(base: usize) {
    if read(base, PERIPH_ID0) & 0xff != 0x31 {
        return;
    }
    let seconds = read(base, RTCDR);
    let monotonic = Instant::now().since_reset();
    if seconds == 0 {
        return;
    }
    let half_second = Duration::from_millis(500);
    wallclock::set(Sample {
        unix: Duration::from_secs(u64::from(seconds)) + half_second,
        monotonic,
        uncertainty: half_second,
        source: Source::Pl031,
    });
}
