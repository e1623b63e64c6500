//! The wall clock, as the rack records times: milliseconds since the Unix epoch, the unit of every
//! `*_ms` timestamp in the store, the API and the peer protocol.

/// Milliseconds since the Unix epoch (0 if the clock is set before 1970, rather than failing:
/// a timestamp is for people and leases, never a reason to refuse work).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
