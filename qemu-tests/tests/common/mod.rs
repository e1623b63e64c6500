//! Shared by the boot tests: build once, boot with a hard timeout, fail with the whole console.
// Each test binary compiles its own copy and uses only some of these.
#![allow(dead_code)]

pub mod booted;

use std::{path::PathBuf, time::Duration};

use images::Arch;
use qemu::{Machine, RunResult, appliance, kvm};

/// Generous: a boot takes tens of milliseconds, but CI machines are shared and TCG is slow.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The release image of `app`, or `None` (with the reason printed) when `arch` cannot run here.
pub fn image_for(app: &str, arch: Arch, test: &str) -> Option<PathBuf> {
    if arch == Arch::X86_64 && !kvm::available_for(test) {
        return None;
    }
    Some(appliance(app, arch).unwrap_or_else(|e| panic!("building {app} for {arch}: {e}")))
}

/// The release image of `app` for an aarch64 board (`rpi3`…), built with `--board`.
pub fn board_image(app: &str, board: images::build::Board) -> PathBuf {
    qemu::appliance_for_board(app, Arch::Aarch64, Some(board))
        .unwrap_or_else(|e| panic!("building {app} for {}: {e}", board.name))
}

/// Boots `machine` to completion; panics if it cannot start.
pub fn run(machine: &Machine) -> RunResult {
    machine.run(TIMEOUT).unwrap_or_else(|e| panic!("starting {}: {e}", machine.kernel.display()))
}

/// The host's wall clock, as time since the Unix epoch.
pub fn host_time() -> Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("the host's clock is after 1970")
}

/// Checks `hello`'s `clock:` line in `console`: the wall clock from `source`, reading a time between
/// `before` and `after` (the host's clock around the run), give or take 2 s and its own uncertainty.
pub fn assert_clock_near_host(console: &str, source: &str, before: Duration, after: Duration) {
    let line =
        console.lines().find(|l| l.starts_with("clock: ")).unwrap_or_else(|| panic!("no clock line:\n{console}"));
    let parsed = (|| {
        let rest = line.strip_prefix("clock: ")?;
        let (time, rest) = rest.split_once(" +- ")?;
        let (seconds, millis) = time.split_once('.')?;
        let (uncertainty, rest) = rest.split_once(" ms (")?;
        let reported = Duration::from_secs(seconds.parse().ok()?) + Duration::from_millis(millis.parse().ok()?);
        Some((reported, Duration::from_millis(uncertainty.parse().ok()?), rest.strip_suffix(')')?))
    })();
    let (reported, uncertainty, got_source) = parsed.unwrap_or_else(|| panic!("unreadable clock line {line:?}"));
    assert_eq!(got_source, source, "clock source in {line:?}");
    let slack = Duration::from_secs(2) + uncertainty;
    assert!(
        reported + slack >= before && reported <= after + slack,
        "{line:?}: the appliance's clock is not the host's ({:.3} s to {:.3} s)",
        before.as_secs_f64(),
        after.as_secs_f64()
    );
}
