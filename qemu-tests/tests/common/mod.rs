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
