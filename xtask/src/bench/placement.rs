//! `cargo xtask bench placement`: the placement engine's speed and packing, with optimisations.
//!
//! `cargo xtask` itself is a debug build, and the figures must come from optimised code, so this
//! runs the `placement` crate's `bench` example in release mode (its source says what it
//! measures).

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::Args;
use images::build::workspace_root;

#[derive(Debug, Args)]
pub struct PlacementArgs {
    /// Timed runs per heuristic and case (after one untimed warm-up run); the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(3..))]
    pub runs: u32,
    /// Seed of the generated workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub fn main(args: PlacementArgs) -> Result<ExitCode> {
    let runs = args.runs.to_string();
    let seed = args.seed.to_string();
    let cargo_args = [
        "run",
        "--release",
        "--quiet",
        "-p",
        "placement",
        "--example",
        "bench",
        "--",
        "--runs",
        &runs,
        "--seed",
        &seed,
    ];
    let mut cargo = Command::new("cargo");
    cargo.current_dir(workspace_root()).args(cargo_args);
    // `cargo xtask` runs inside `cargo run`: its CARGO_*/RUST* settings describe the xtask build,
    // not this one. Keep only where cargo and rustup live and how they print.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let keep =
            matches!(key.as_ref(), "CARGO_HOME" | "RUSTUP_HOME" | "CARGO_TERM_COLOR" | "CARGO_TERM_PROGRESS_WHEN");
        if !keep && (key.starts_with("CARGO") || key.starts_with("RUST")) {
            cargo.env_remove(key.as_ref());
        }
    }
    eprintln!("$ cargo {}", cargo_args.join(" "));
    let status = cargo.status().context("running cargo")?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
