//! The monotonic clock: nanoseconds since the machine was reset (or the VM was created).
//!
//! aarch64 reads the generic timer's virtual counter; x86_64 reads kvmclock. Both start near zero
//! when the machine starts, which is what makes "time from reset to main" meaningful.

use core::time::Duration;

use crate::arch;

/// A point on the monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    nanos_since_reset: u64,
}

impl Instant {
    /// The current time.
    pub fn now() -> Instant {
        Instant { nanos_since_reset: arch::now_ns() }
    }

    pub(crate) const fn from_nanos(nanos_since_reset: u64) -> Instant {
        Instant { nanos_since_reset }
    }

    /// The point `since_reset` after the machine was reset (saturating at about 584 years).
    pub fn from_since_reset(since_reset: Duration) -> Instant {
        Instant { nanos_since_reset: u64::try_from(since_reset.as_nanos()).unwrap_or(u64::MAX) }
    }

    /// Time since the machine was reset.
    pub const fn since_reset(self) -> Duration {
        Duration::from_nanos(self.nanos_since_reset)
    }

    /// Time elapsed since `self`; zero if the clock reads earlier (it never should).
    pub fn elapsed(self) -> Duration {
        Instant::now().saturating_duration_since(self)
    }

    /// Time from `earlier` to `self`; zero if `earlier` is the later of the two.
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.nanos_since_reset.saturating_sub(earlier.nanos_since_reset))
    }
}
