//! Statistical tests of the released noise, with a seeded ChaCha20 (host tests only; the
//! appliance seeds from the platform): the empirical scale matches the configured one, clamping
//! holds, and no device's budget is ever exceeded.

use privacy::{Aggregator, Config, Recorded, laplace};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const RELEASES: usize = 20_000;

fn config() -> Config {
    Config {
        window_secs: 60,
        epsilon_per_release: 1.0,
        daily_budget: 1e9,
        lower: -10.0,
        upper: 40.0,
        bins: 5,
        max_per_device: 2,
        max_devices: 100_000,
        resolution: 1e-6,
    }
}

/// Mean absolute deviation of Laplace(b) is b; over N draws its standard error is b/√N, so 5 %
/// is about 7 standard errors at N = 20,000: a correct sampler passes, a wrong scale (even by
/// 10 %) fails.
fn assert_scale(deviations: &[f64], scale: f64, what: &str) {
    let mad = deviations.iter().map(|d| d.abs()).sum::<f64>() / deviations.len() as f64;
    assert!((mad / scale - 1.0).abs() < 0.05, "{what}: mean |noise| {mad} for scale {scale}");
    let mean = deviations.iter().sum::<f64>() / deviations.len() as f64;
    assert!(mean.abs() < 0.05 * scale, "{what}: noise is biased: mean {mean} for scale {scale}");
    // Laplace's tail: P(|X| > 3b) = e^-3 ≈ 0.0498.
    let tail = deviations.iter().filter(|d| d.abs() > 3.0 * scale).count() as f64 / deviations.len() as f64;
    assert!((tail - 0.0498).abs() < 0.008, "{what}: tail mass {tail} beyond 3b");
}

#[test]
fn the_sampler_has_the_configured_scale() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    for scale in [0.5, 3.0, 120.0] {
        let draws: Vec<f64> = (0..RELEASES).map(|_| laplace::sample(&mut rng, scale)).collect();
        assert_scale(&draws, scale, "sampler");
    }
}

#[test]
fn released_figures_have_the_calibrated_noise_and_respect_clamping() {
    let config = config();
    let mut aggregator = Aggregator::new(config.clone(), 1).expect("valid");
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let (mut count_noise, mut sum_noise, mut bin_noise) = (Vec::new(), Vec::new(), Vec::new());
    for window in 0..RELEASES as u64 {
        let t = window * 60;
        aggregator.close_windows(t, &mut rng);
        // Three devices; readings far outside the range are clamped to it: 40 + 40 - 10 + 15 = 85.
        assert_eq!(aggregator.record(t + 1, 0, "a", 1e12), Recorded::Counted);
        assert_eq!(aggregator.record(t + 2, 0, "a", 1e12), Recorded::Counted);
        assert_eq!(aggregator.record(t + 3, 0, "a", 5.0), Recorded::CapReached);
        assert_eq!(aggregator.record(t + 4, 0, "b", -1e12), Recorded::Counted);
        assert_eq!(aggregator.record(t + 5, 0, "c", 15.0), Recorded::Counted);
        let releases = aggregator.close_windows(t + 60, &mut rng);
        let [release] = releases.as_slice() else { panic!("one release per window: {releases:?}") };
        assert_eq!(release.window_start, t);
        count_noise.push(release.count - 4.0);
        sum_noise.push(release.sum - 85.0);
        // Bins of 10 over [-10, 40): -10 → bin 0, 15 → bin 2, 40 → bin 4 (twice).
        bin_noise.push(release.histogram[4] - 2.0);
        bin_noise.push(release.histogram[1]);
        if let Some(mean) = release.mean {
            assert!((config.lower..=config.upper).contains(&mean), "mean {mean} outside the range");
        }
    }
    assert_scale(&count_noise, config.count_scale(), "count");
    assert_scale(&sum_noise, config.sum_scale(), "sum");
    assert_eq!(config.count_scale(), 6.0);
    assert_eq!(config.sum_scale(), 240.0);
    assert_scale(&bin_noise, config.count_scale(), "histogram bins");
}

#[test]
fn no_device_ever_exceeds_its_daily_budget() {
    let config = Config { epsilon_per_release: 0.3, daily_budget: 2.0, window_secs: 10, ..config() };
    assert_eq!(config.releases_per_day(), 6);
    let mut aggregator = Aggregator::new(config.clone(), 3).expect("valid");
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut counted = 0;
    let mut exhausted = 0;
    // Two days of a device publishing every second to three filters.
    for t in 0..2 * 86_400u64 {
        if t % 10 == 0 {
            aggregator.close_windows(t, &mut rng);
        }
        for filter in 0..3 {
            match aggregator.record(t, filter, "dev", 20.0) {
                Recorded::Counted => counted += 1,
                Recorded::BudgetExhausted => exhausted += 1,
                Recorded::CapReached => {}
                other => panic!("{other:?}"),
            }
            assert!(aggregator.spent("dev") <= config.daily_budget, "spent {} at {t}", aggregator.spent("dev"));
        }
    }
    // Six releases a day, each paid once, two readings each (the cap), on two days.
    assert_eq!(counted, 2 * 6 * 2);
    assert!(exhausted > 0);
    assert!((aggregator.spent("dev") - 1.8).abs() < 1e-9);
}

#[test]
fn every_opened_window_is_released_with_or_without_readings() {
    let mut aggregator = Aggregator::new(config(), 2).expect("valid");
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    assert!(aggregator.close_windows(0, &mut rng).is_empty());
    aggregator.record(5, 1, "a", 3.0);
    let releases = aggregator.close_windows(60, &mut rng);
    assert_eq!(releases.iter().map(|r| r.filter).collect::<Vec<_>>(), [0, 1]);
}

#[test]
fn bad_configurations_are_refused() {
    for bad in [
        Config { window_secs: 0, ..config() },
        Config { epsilon_per_release: 0.0, ..config() },
        Config { epsilon_per_release: f64::NAN, ..config() },
        Config { epsilon_per_release: 2.0, daily_budget: 1.0, ..config() },
        Config { lower: 5.0, upper: 5.0, ..config() },
        Config { bins: 0, ..config() },
        Config { max_per_device: 0, ..config() },
    ] {
        assert!(Aggregator::new(bad.clone(), 1).is_err(), "{bad:?}");
    }
    let mut aggregator = Aggregator::new(config(), 1).expect("valid");
    assert_eq!(aggregator.record(0, 0, "a", f64::INFINITY), Recorded::NotANumber);
    assert_eq!(aggregator.record(0, 1, "a", 1.0), Recorded::NoFilter);
    let few = Config { max_devices: 1, ..config() };
    let mut aggregator = Aggregator::new(few, 1).expect("valid");
    assert_eq!(aggregator.record(0, 0, "a", 1.0), Recorded::Counted);
    assert_eq!(aggregator.record(0, 0, "b", 1.0), Recorded::TooManyDevices);
}
