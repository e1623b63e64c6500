//! Wall-clock time: what time it is in the world, as far as the appliance knows.
//!
//! One API on every platform. Each platform sets the clock once at boot from what it has:
//!
//! | platform | source | uncertainty at the sample |
//! |---|---|---|
//! | QEMU `virt` (aarch64) | the PL031 RTC (whole seconds) | 1 s |
//! | QEMU `microvm` (x86_64) | kvmclock's wall clock (the host's time when the VM's clock read 0) | 10 ms |
//! | the tender | the host's time written into `BootInfo` when the VM was created | 10 ms |
//! | Raspberry Pi 3/4 | none at boot (no RTC): **unsynchronised** until an appliance runs SNTP (`net::sntp`) | the round trip |
//!
//! The clock is a sample (a Unix time read at a point on the monotonic clock) plus the monotonic
//! time elapsed since; its uncertainty grows with that elapsed time at [`DRIFT_PPM`], the bound on
//! how far the monotonic clock's oscillator may drift. "Unsynchronised" is a state (`now()` returns
//! `None`), not a zero: code that stamps records or sends `Date` headers must not invent a time.
//!
//! The monotonic clock (`runtime::time::Instant`) stays the clock for timeouts: the wall clock may
//! jump when a better source (SNTP) sets it.
//!
//! The arithmetic ([`Sample`], [`WallTime`]) is pure and tested on the host; `now()` and `set()`
//! keep the one sample of the running appliance.

use core::fmt;
use core::time::Duration;

/// The bound on the monotonic clock's drift, in parts per million, by which a sample's uncertainty
/// grows as it ages (crystal oscillators and hypervisor clocks stay well inside 100 ppm).
pub const DRIFT_PPM: u64 = 50;

/// Where the wall-clock time came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// An ARM PrimeCell PL031 real-time clock (QEMU `virt`).
    Pl031,
    /// KVM's paravirtual wall clock (x86_64 under KVM).
    Kvmclock,
    /// The host's time, passed by the tender at VM creation.
    Tender,
    /// An SNTP server on the network.
    Sntp,
}

impl Source {
    /// The source in a word, as logs and the console show it.
    pub const fn name(self) -> &'static str {
        match self {
            Source::Pl031 => "pl031",
            Source::Kvmclock => "kvmclock",
            Source::Tender => "tender",
            Source::Sntp => "sntp",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One reading of a wall-clock source: Unix time `unix` held at monotonic time `monotonic`
/// (since reset), give or take `uncertainty`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Time since the Unix epoch (1970-01-01T00:00:00Z) at the moment of the reading.
    pub unix: Duration,
    /// The monotonic clock at the moment of the reading (time since reset).
    pub monotonic: Duration,
    /// How far `unix` may be from the true time, either way.
    pub uncertainty: Duration,
    /// Where it came from.
    pub source: Source,
}

impl Sample {
    /// The wall-clock time when the monotonic clock reads `monotonic`. A monotonic time before the
    /// sample counts as the sample's own (the clock never runs backwards).
    pub fn at(&self, monotonic: Duration) -> WallTime {
        let elapsed = monotonic.saturating_sub(self.monotonic);
        // DRIFT_PPM per million of the elapsed time, in 64-bit arithmetic (microsecond drift per
        // second, plus the fraction's share), saturating rather than overflowing.
        let drift_micros = elapsed
            .as_secs()
            .saturating_mul(DRIFT_PPM)
            .saturating_add(u64::from(elapsed.subsec_nanos()) * DRIFT_PPM / 1_000_000_000);
        let drift = Duration::from_micros(drift_micros);
        WallTime {
            unix: self.unix.saturating_add(elapsed),
            uncertainty: self.uncertainty.saturating_add(drift),
            source: self.source,
        }
    }
}

/// The wall-clock time now, with how sure the appliance is of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallTime {
    /// Time since the Unix epoch.
    pub unix: Duration,
    /// How far [`WallTime::unix`] may be from the true time, either way.
    pub uncertainty: Duration,
    /// Where the time came from.
    pub source: Source,
}

impl WallTime {
    /// Whole seconds since the Unix epoch.
    pub const fn unix_seconds(&self) -> u64 {
        self.unix.as_secs()
    }

    /// Whether the time is known to within `tolerance`: what a caller asks before it publishes
    /// the time (an HTTP `Date` header needs seconds, a log line perhaps minutes).
    pub fn within(&self, tolerance: Duration) -> bool {
        self.uncertainty <= tolerance
    }
}

#[cfg(target_os = "none")]
mod clock {
    use super::{Sample, WallTime};
    use crate::time::Instant;

    static SAMPLE: spin::Mutex<Option<Sample>> = spin::Mutex::new(None);

    /// The wall-clock time now, or `None` while the clock is unsynchronised (no source has set it).
    pub fn now() -> Option<WallTime> {
        let sample = *SAMPLE.lock();
        sample.map(|s| s.at(Instant::now().since_reset()))
    }

    /// Sets the clock from a new reading, unless the clock already holds a reading that is more
    /// certain now than this one; returns whether it took `sample`. Platforms call it at boot,
    /// `net::sntp` after each exchange.
    pub fn set(sample: Sample) -> bool {
        let mut current = SAMPLE.lock();
        let keep = current.is_some_and(|c| c.at(sample.monotonic).uncertainty < sample.uncertainty);
        if !keep {
            *current = Some(sample);
        }
        !keep
    }
}

#[cfg(target_os = "none")]
pub use clock::{now, set};

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sample {
        Sample {
            unix: Duration::from_secs(1_800_000_000),
            monotonic: Duration::from_secs(5),
            uncertainty: Duration::from_millis(10),
            source: Source::Tender,
        }
    }

    #[test]
    fn time_advances_with_the_monotonic_clock() {
        let now = sample().at(Duration::from_secs(65));
        assert_eq!(now.unix, Duration::from_secs(1_800_000_060));
        assert_eq!(now.unix_seconds(), 1_800_000_060);
        assert_eq!(now.source, Source::Tender);
    }

    #[test]
    fn uncertainty_grows_with_age_at_the_drift_bound() {
        // 1000 s at 50 ppm: 50 ms more.
        let later = sample().at(Duration::from_secs(1005));
        assert_eq!(later.uncertainty, Duration::from_millis(60));
        assert!(later.within(Duration::from_secs(1)));
        assert!(!later.within(Duration::from_millis(50)));
    }

    #[test]
    fn a_monotonic_time_before_the_sample_reads_as_the_sample() {
        let early = sample().at(Duration::from_secs(1));
        assert_eq!(early.unix, sample().unix);
        assert_eq!(early.uncertainty, sample().uncertainty);
    }

    #[test]
    fn ages_never_overflow() {
        let far = sample().at(Duration::MAX);
        assert_eq!(far.unix, Duration::MAX);
        assert!(!far.within(Duration::from_secs(1)));
    }
}
