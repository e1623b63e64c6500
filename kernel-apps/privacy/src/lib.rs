//! Differentially private aggregation of sensor readings in time windows: the privacy half of
//! the `telemetry` appliance. Pure logic, `no_std` + `alloc`, tested on the host.
//!
//! # The mechanism
//! Readings are numbers from devices (an MQTT client id) on topics. For each configured topic
//! filter and each window of `window_secs` (aligned to multiples of it), the [`Aggregator`]
//! keeps, per filter: the count of readings, their sum after **clamping** each reading to
//! `[lower, upper]`, and a histogram of `bins` equal bins over that range. A device contributes
//! at most `max_per_device` readings to one filter's window; more are dropped. When the window
//! closes, [`Aggregator::close_windows`] releases, per filter, noisy figures only:
//!
//! - count + Laplace(`K / ε₁`), sum + Laplace(`K·M / ε₁`), each histogram bin + Laplace(`K / ε₁`),
//!   where `K = max_per_device`, `M = max(|lower|, |upper|)`, and `ε₁ = ε / 3`: a device's whole
//!   contribution changes the count by at most `K`, the sum by at most `K·M`, the histogram by at
//!   most `K` in L1, so each query is `ε/3`-differentially private, and the three together
//!   `ε`-DP (sequential composition), with `ε = epsilon_per_release`.
//! - mean = noisy sum / noisy count, and min and max read off the noisy histogram (the lower edge
//!   of the first bin, the upper edge of the last bin, whose noisy count reaches `K / ε₁ · 2`): post-processing of
//!   released figures, which costs no further privacy.
//!
//! Laplace(b) has density `exp(-|x|/b) / 2b`; it is sampled by inversion from a uniform `u` in
//! (0, 1): `x = b·ln(2u)` for `u < ½`, else `x = -b·ln(2(1-u))`. Its mean absolute value is `b`,
//! which the statistical tests check.
//!
//! # The budget
//! Releases over time compose: a device that contributes to `n` releases in a day has spent
//! `n·ε` that day. Each device has `daily_budget` per UTC day (days are `now / 86,400`). The
//! first reading a device offers to a (filter, window) charges `ε` for it; a device whose charge
//! would exceed its budget is refused until the next day, so no device's spend ever exceeds the
//! budget. Readings matching several filters are charged per filter.
//!
//! # Not covered (see docs/telemetry.md)
//! - Floating-point Laplace noise is open to the attacks on the low bits of floats (Mironov,
//!   2012); released figures are rounded to `resolution` to blunt them, which is a mitigation,
//!   not a proof.
//! - Device identity is what the client says (its MQTT client id); a device that connects under
//!   many ids gets many budgets. Authenticating devices is out of scope here.
//! - At most `max_devices` devices are tracked per day; readings of further devices are refused.
#![cfg_attr(target_os = "none", no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod aggregator;
pub mod laplace;

pub use aggregator::{Aggregator, Config, ConfigError, Recorded, Release};
