//! A token bucket: how the background trickle keeps under its bandwidth cap.
//!
//! The caller passes the time in, so tests drive the bucket with made-up instants and check its
//! behaviour exactly, without sleeping or measuring.

use std::time::{Duration, Instant};

/// Allows `rate` bytes per second on average, and bursts of up to `burst` bytes.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Bytes per second; `None` for no cap.
    rate: Option<u64>,
    burst: u64,
    tokens: u64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket that starts full. `burst` should be at least the largest single transfer
    /// (a chunk), or that transfer never fits.
    pub fn new(rate_bytes_per_s: u64, burst: u64, now: Instant) -> TokenBucket {
        TokenBucket { rate: Some(rate_bytes_per_s), burst, tokens: burst, last: now }
    }

    /// A bucket that never says no.
    pub fn unlimited(now: Instant) -> TokenBucket {
        TokenBucket { rate: None, burst: u64::MAX, tokens: u64::MAX, last: now }
    }

    /// The cap in bytes per second, if there is one.
    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    /// Adds the tokens earned since the last refill (whole bytes; the remainder carries over).
    fn refill(&mut self, now: Instant) {
        let Some(rate) = self.rate else { return };
        let elapsed = now.saturating_duration_since(self.last);
        let earned = (elapsed.as_nanos() * u128::from(rate) / 1_000_000_000) as u64;
        if earned == 0 {
            return;
        }
        // Advance `last` only by the time the earned bytes took, so fractions are not lost.
        let spent = Duration::from_nanos((u128::from(earned) * 1_000_000_000 / u128::from(rate)) as u64);
        self.last += spent;
        self.tokens = self.tokens.saturating_add(earned).min(self.burst);
        if self.tokens == self.burst {
            self.last = now;
        }
    }

    /// Bytes that may be sent now.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.tokens
    }

    /// Takes `bytes` tokens if that many are available now; otherwise takes nothing.
    pub fn try_take(&mut self, bytes: u64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens < bytes {
            return false;
        }
        if self.rate.is_some() {
            self.tokens -= bytes;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000, 4000, start);
        assert!(bucket.try_take(4000, start), "starts full");
        assert!(!bucket.try_take(1, start), "empty");
        let later = start + Duration::from_millis(2500);
        assert_eq!(bucket.available(later), 2500);
        assert!(!bucket.try_take(2501, later));
        assert!(bucket.try_take(2500, later));
        // Never more than the burst, however long it waits.
        assert_eq!(bucket.available(later + Duration::from_secs(3600)), 4000);
    }

    #[test]
    fn fractions_of_a_byte_are_not_lost() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(3, 100, start);
        bucket.try_take(100, start);
        let mut now = start;
        for _ in 0..10 {
            now += Duration::from_millis(100);
            bucket.available(now);
        }
        assert_eq!(bucket.available(now), 3, "ten tenths of a second at 3 B/s");
    }

    #[test]
    fn unlimited_never_refuses() {
        let now = Instant::now();
        let mut bucket = TokenBucket::unlimited(now);
        assert!(bucket.try_take(u64::MAX / 2, now) && bucket.try_take(u64::MAX / 2, now));
        assert_eq!(bucket.rate(), None);
    }
}
