//! Windows, clamping, contribution caps, budgets and releases (see the crate docs for the math).

use alloc::{collections::BTreeMap, string::String, vec, vec::Vec};
use core::fmt;

use rand_core::RngCore;

use crate::laplace;

/// Seconds in the budget's day.
const DAY_SECS: u64 = 86_400;

/// The aggregation and privacy parameters (from the appliance's manifest arguments).
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Length of a window in seconds; windows start at multiples of it.
    pub window_secs: u64,
    /// ε spent by each release (per filter and window) on every device that contributed to it.
    pub epsilon_per_release: f64,
    /// The most ε a device may spend per day, over all filters.
    pub daily_budget: f64,
    /// Readings are clamped to `[lower, upper]`.
    pub lower: f64,
    /// See [`Config::lower`].
    pub upper: f64,
    /// Equal histogram bins over `[lower, upper]`.
    pub bins: usize,
    /// The most readings one device contributes to one filter's window; more are dropped.
    pub max_per_device: u32,
    /// The most devices tracked per day (bounds memory).
    pub max_devices: usize,
    /// Released figures are rounded to multiples of this.
    pub resolution: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            window_secs: 60,
            epsilon_per_release: 0.1,
            daily_budget: 10.0,
            lower: 0.0,
            upper: 100.0,
            bins: 10,
            max_per_device: 60,
            max_devices: 10_000,
            resolution: 0.01,
        }
    }
}

/// A parameter that cannot work, and what to set instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `window_secs` is 0 or over a day.
    Window,
    /// `epsilon_per_release` is not a positive finite number, or exceeds `daily_budget`.
    Epsilon,
    /// `lower` and `upper` are not finite with `lower < upper`.
    Range,
    /// `bins` is not 1 to 1000.
    Bins,
    /// `max_per_device`, `max_devices` or `resolution` is 0 (or `resolution` not finite).
    Limits,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigError::Window => "window must be 1 to 86400 seconds",
            ConfigError::Epsilon => "epsilon must be a positive number no larger than the daily budget",
            ConfigError::Range => "the clamping range needs finite lower < upper",
            ConfigError::Bins => "bins must be 1 to 1000",
            ConfigError::Limits => "max-per-device, max-devices and resolution must be positive",
        })
    }
}

impl Config {
    /// Checks every parameter.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.window_secs == 0 || self.window_secs > DAY_SECS {
            return Err(ConfigError::Window);
        }
        let epsilon = self.epsilon_per_release;
        if !(epsilon.is_finite() && epsilon > 0.0 && self.daily_budget.is_finite() && epsilon <= self.daily_budget) {
            return Err(ConfigError::Epsilon);
        }
        if !(self.lower.is_finite() && self.upper.is_finite() && self.lower < self.upper) {
            return Err(ConfigError::Range);
        }
        if !(1..=1000).contains(&self.bins) {
            return Err(ConfigError::Bins);
        }
        if self.max_per_device == 0 || self.max_devices == 0 || !(self.resolution.is_finite() && self.resolution > 0.0)
        {
            return Err(ConfigError::Limits);
        }
        Ok(())
    }

    /// Releases a device may be charged for per day: `⌊daily_budget / ε⌋`, computed so that
    /// `releases · ε ≤ daily_budget` holds exactly in floating point too.
    pub fn releases_per_day(&self) -> u32 {
        let mut n = libm::floor(self.daily_budget / self.epsilon_per_release) as u32;
        while n > 0 && f64::from(n) * self.epsilon_per_release > self.daily_budget {
            n -= 1;
        }
        n
    }

    /// The Laplace scale of the count and of each histogram bin: `K / (ε/3)`.
    pub fn count_scale(&self) -> f64 {
        f64::from(self.max_per_device) * 3.0 / self.epsilon_per_release
    }

    /// The Laplace scale of the sum: `K · max(|lower|, |upper|) / (ε/3)`.
    pub fn sum_scale(&self) -> f64 {
        self.count_scale() * libm::fmax(libm::fabs(self.lower), libm::fabs(self.upper))
    }

    fn bin_of(&self, clamped: f64) -> usize {
        let width = (self.upper - self.lower) / self.bins as f64;
        let bin = libm::floor((clamped - self.lower) / width);
        if bin <= 0.0 { 0 } else { (bin as usize).min(self.bins - 1) }
    }
}

/// What became of one reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Counted (clamped) in the filter's window.
    Counted,
    /// Not a finite number: ignored.
    NotANumber,
    /// No such filter.
    NoFilter,
    /// The device already gave `max_per_device` readings to this window.
    CapReached,
    /// The device's daily budget cannot pay for another release today.
    BudgetExhausted,
    /// `max_devices` devices are already tracked today.
    TooManyDevices,
}

/// One release: noisy figures for one filter and window. This, and nothing else, leaves.
#[derive(Clone, Debug, PartialEq)]
pub struct Release {
    /// The filter's index in the aggregator's list.
    pub filter: usize,
    /// The window's start (seconds, the caller's clock) and length.
    pub window_start: u64,
    /// See [`Release::window_start`].
    pub window_secs: u64,
    /// The ε this release cost each contributing device.
    pub epsilon: f64,
    /// Noisy count of readings.
    pub count: f64,
    /// Noisy sum of clamped readings.
    pub sum: f64,
    /// Noisy sum / noisy count, clamped to the range; `None` when the noisy count is under 1.
    pub mean: Option<f64>,
    /// Lower edge of the first bin whose noisy count passes the threshold (3 · count scale).
    pub min: Option<f64>,
    /// Upper edge of the last such bin.
    pub max: Option<f64>,
    /// Noisy count per bin, bins equal over `[lower, upper]`.
    pub histogram: Vec<f64>,
}

#[derive(Debug)]
struct Window {
    start: u64,
    count: u64,
    sum: f64,
    histogram: Vec<u64>,
    /// Readings per device in this window (for the cap), at most `max_devices` entries.
    per_device: BTreeMap<String, u32>,
}

impl Window {
    fn new(start: u64, bins: usize) -> Window {
        Window { start, count: 0, sum: 0.0, histogram: vec![0; bins], per_device: BTreeMap::new() }
    }
}

#[derive(Debug)]
struct FilterState {
    open: Option<Window>,
}

/// The aggregator for a list of filters (identified by index; the caller matches topics).
#[derive(Debug)]
pub struct Aggregator {
    config: Config,
    filters: Vec<FilterState>,
    /// Windows that ended before their release was asked for.
    closed: Vec<(usize, Window)>,
    day: u64,
    /// Releases charged per device today.
    charges: BTreeMap<String, u32>,
    releases_per_day: u32,
}

impl Aggregator {
    /// An aggregator for `filters` filters with `config`.
    pub fn new(config: Config, filters: usize) -> Result<Aggregator, ConfigError> {
        config.validate()?;
        let releases_per_day = config.releases_per_day();
        Ok(Aggregator {
            filters: (0..filters).map(|_| FilterState { open: None }).collect(),
            config,
            closed: Vec::new(),
            day: 0,
            charges: BTreeMap::new(),
            releases_per_day,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The ε `device` has spent today (as of the last reading seen).
    pub fn spent(&self, device: &str) -> f64 {
        f64::from(self.charges.get(device).copied().unwrap_or(0)) * self.config.epsilon_per_release
    }

    /// Offers `value` from `device`, at time `now` (seconds), to filter `filter`.
    pub fn record(&mut self, now: u64, filter: usize, device: &str, value: f64) -> Recorded {
        if !value.is_finite() {
            return Recorded::NotANumber;
        }
        if filter >= self.filters.len() {
            return Recorded::NoFilter;
        }
        if now / DAY_SECS != self.day {
            self.day = now / DAY_SECS;
            self.charges.clear();
        }
        let start = now - now % self.config.window_secs;
        let state = &mut self.filters[filter];
        if state.open.as_ref().is_some_and(|w| w.start != start)
            && let Some(old) = state.open.take()
        {
            self.closed.push((filter, old));
        }
        let bins = self.config.bins;
        let window = state.open.get_or_insert_with(|| Window::new(start, bins));
        match window.per_device.get_mut(device) {
            Some(n) if *n >= self.config.max_per_device => return Recorded::CapReached,
            Some(n) => *n += 1,
            None => {
                // The device's first reading in this window: it will be in this release, so it pays now.
                let charged = self.charges.get(device).copied();
                if charged.is_none() && self.charges.len() >= self.config.max_devices {
                    return Recorded::TooManyDevices;
                }
                let charged = charged.unwrap_or(0);
                if charged >= self.releases_per_day {
                    return Recorded::BudgetExhausted;
                }
                self.charges.insert(device.into(), charged + 1);
                window.per_device.insert(device.into(), 1);
            }
        }
        let clamped = value.clamp(self.config.lower, self.config.upper);
        window.count += 1;
        window.sum += clamped;
        window.histogram[self.config.bin_of(clamped)] += 1;
        Recorded::Counted
    }

    /// Releases every window that ended by `now`, with fresh noise from `rng`, and opens the
    /// current window of every filter. Call it at least once per window: every opened window is
    /// released, with or without readings, so *whether* a release happens never depends on
    /// whether a device published (that alone would leak it). A window no call opened (the
    /// appliance stalled for a whole window) is neither opened nor released.
    pub fn close_windows<R: RngCore + ?Sized>(&mut self, now: u64, rng: &mut R) -> Vec<Release> {
        let current = now - now % self.config.window_secs;
        let bins = self.config.bins;
        for (index, state) in self.filters.iter_mut().enumerate() {
            if state.open.as_ref().is_some_and(|w| w.start < current)
                && let Some(old) = state.open.take()
            {
                self.closed.push((index, old));
            }
            state.open.get_or_insert_with(|| Window::new(current, bins));
        }
        let closed = core::mem::take(&mut self.closed);
        closed.into_iter().map(|(filter, window)| self.release(filter, &window, rng)).collect()
    }

    fn release<R: RngCore + ?Sized>(&self, filter: usize, window: &Window, rng: &mut R) -> Release {
        let c = &self.config;
        let round = |x: f64| libm::round(x / c.resolution) * c.resolution;
        let count_scale = c.count_scale();
        let count = round(window.count as f64 + laplace::sample(rng, count_scale));
        let sum = round(window.sum + laplace::sample(rng, c.sum_scale()));
        let histogram: Vec<f64> =
            window.histogram.iter().map(|&n| round(n as f64 + laplace::sample(rng, count_scale))).collect();
        let mean = (count >= 1.0).then(|| round((sum / count).clamp(c.lower, c.upper)));
        let width = (c.upper - c.lower) / c.bins as f64;
        let threshold = 3.0 * count_scale;
        let first = histogram.iter().position(|&n| n >= threshold);
        let last = histogram.iter().rposition(|&n| n >= threshold);
        Release {
            filter,
            window_start: window.start,
            window_secs: c.window_secs,
            epsilon: c.epsilon_per_release,
            count,
            sum,
            mean,
            min: first.map(|i| round(c.lower + width * i as f64)),
            max: last.map(|i| round(c.lower + width * (i + 1) as f64)),
            histogram,
        }
    }
}
