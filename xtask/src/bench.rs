//! `cargo xtask bench …`: figures, not pass/fail tests.

use std::{process::ExitCode, time::Duration};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use images::{Arch, Platform};
use qemu_tests::{Exit, Machine, kvm};
use runtime::board::BoardKind;

use crate::deps;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// hello per architecture: image size, start → first console line and → exit (QEMU, or the tender).
    Boot(BootArgs),
    /// Image verification speed, and how many bytes two builds share in identical chunks.
    Image(ImageArgs),
    /// Placement speed and hosts used against the lower bound, per heuristic (release build).
    Placement(PlacementArgs),
    /// httpd per architecture: start → first 200, requests/s and latency under load, idle CPU, image size.
    Http(crate::bench_http::HttpArgs),
    /// kvlog per architecture: append and read latency on a virtio-blk volume, recovery time, image size.
    Kvlog(crate::bench_kvlog::KvlogArgs),
    /// N idle httpd under the tender, each on its own tap: memory (RSS, PSS, host), starts/s, idle CPU.
    Density(crate::bench_density::DensityArgs),
    /// httpd v1 then v2 (one HTML file changed) from rack A to rack B through S3: bytes moved,
    /// time until v2 boots on B; volume snapshots after appends; the background fetch's cap.
    /// Then failover: kvlog on rack a killed, rack b serving it (recovery time, lag, lost writes).
    Replication(crate::bench_replication::ReplicationArgs),
    /// Rack a (simulated instances, failover plan to rack b) under a flood of slow and idle
    /// connections on its API and peer ports: authenticated `ps` latency, the daemon's RSS and
    /// threads, takeovers and stopped instances, each against issue #12's targets.
    ControlPlane(crate::bench_control_plane::ControlPlaneArgs),
}

#[derive(Debug, Args)]
pub struct PlacementArgs {
    /// Timed runs per heuristic and case (after one untimed warm-up run); the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(3..))]
    pub runs: u32,
    /// Seed of the generated workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Timed verifications of the 1 MiB image.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
}

#[derive(Debug, Args)]
pub struct BootArgs {
    /// Timed runs per architecture (after one untimed warm-up run).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Only this architecture (default: both).
    #[arg(long, value_name = "ARCH", conflicts_with = "board")]
    pub arch: Option<Arch>,
    /// Only this aarch64 board: virt, or rpi3 (QEMU `raspi3b`). rpi4 has no QEMU 7.2 machine.
    #[arg(long, value_name = "BOARD", value_parser = crate::image::parse_board)]
    pub board: Option<images::build::Board>,
    /// The machine: qemu (the default) or tender (the host's architecture, under KVM).
    #[arg(long, default_value_t = Platform::Qemu, conflicts_with = "board")]
    pub platform: Platform,
}

pub fn main(command: BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Boot(args) => boot(args),
        BenchCommand::Image(args) => crate::bench_image::main(args),
        BenchCommand::Placement(args) => crate::bench_placement::main(args),
        BenchCommand::Http(args) => crate::bench_http::main(args),
        BenchCommand::Kvlog(args) => crate::bench_kvlog::main(args),
        BenchCommand::Density(args) => crate::bench_density::main(args),
        BenchCommand::Replication(args) => crate::bench_replication::main(args),
        BenchCommand::ControlPlane(args) => crate::bench_control_plane::main(args),
    }
}

fn boot(args: BootArgs) -> Result<ExitCode> {
    if args.platform == Platform::Tender {
        return crate::bench_tender_boot::main(&args);
    }
    let board = args.board.filter(|b| b.kind != BoardKind::Virt);
    if board.is_some_and(|b| b.kind != BoardKind::Rpi3) {
        bail!("only virt and rpi3 boot in QEMU 7.2 (`raspi3b`); rpi4 images are for real boards");
    }
    let arches: Vec<Arch> =
        if args.board.is_some() { vec![Arch::Aarch64] } else { args.arch.map_or(Arch::ALL.to_vec(), |a| vec![a]) };
    println!("boot bench: release `hello`, {} timed runs per arch after 1 warm-up; times from QEMU start", args.runs);
    println!(
        "{:<8} {:>11} {:>10} {:>8} {:>8} {:>15} {:>16}",
        if board.is_some() { "board" } else { "arch" },
        "image bytes",
        "exit p50",
        "min",
        "max",
        "1st line p50",
        "reset->main p50"
    );
    for arch in arches {
        deps::ensure_qemu(arch)?;
        if arch == Arch::X86_64
            && let Some(reason) = kvm::unavailable_reason()
        {
            println!("{arch:<8} skipped: {reason}");
            continue;
        }
        let built = qemu_tests::appliance_image_for_board("hello", arch, board)?;
        let kernel = qemu_tests::appliance_for_board("hello", arch, board)?;
        let (label, machine) = match board {
            Some(board) => (board.name, Machine::raspi3b(kernel)),
            None => (arch.name(), Machine::new(arch, kernel)),
        };
        let mut exits = Vec::new();
        let mut first_lines = Vec::new();
        let mut mains = Vec::new();
        for run in 0..=args.runs {
            let result = machine.run(Duration::from_secs(30)).context("starting QEMU")?;
            if let Err(failure) = result.check(Exit::Status(0), "Hello from Mast") {
                bail!("{arch} run {run} failed: {failure}");
            }
            if run == 0 {
                continue; // warm-up: page cache, QEMU's first-run costs
            }
            exits.push(result.wall);
            first_lines.extend(result.console.first().map(|l| l.at));
            mains.extend(result.console.iter().find_map(|l| reset_to_main(&l.text)));
        }
        let exit = Summary::of(&exits).context("no timed runs")?;
        let first_line = Summary::of(&first_lines).map_or("-".into(), |s| ms(s.median));
        let main = Summary::of(&mains).map_or("-".into(), |s| ms(s.median));
        println!(
            "{:<8} {:>11} {:>10} {:>8} {:>8} {:>15} {:>16}",
            label,
            built.info.file_size,
            ms(exit.median),
            ms(exit.min),
            ms(exit.max),
            first_line,
            main
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The appliance's own "reset -> main N us" figure from hello's boot line.
fn reset_to_main(line: &str) -> Option<Duration> {
    let rest = line.split_once("reset -> main ")?.1;
    let micros: u64 = rest.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_micros(micros))
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Median, minimum and maximum of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub median: Duration,
    pub min: Duration,
    pub max: Duration,
}

impl Summary {
    /// `None` for no samples. The median of an even count is the mean of the middle two.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let (min, max) = (*sorted.first()?, *sorted.last()?);
        let mid = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) { (sorted[mid - 1] + sorted[mid]) / 2 } else { sorted[mid] };
        Some(Summary { median, min, max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn summary_of_odd_and_even_counts() {
        let odd = Summary::of(&ms(&[30, 10, 20])).expect("samples");
        assert_eq!(
            (odd.median, odd.min, odd.max),
            (Duration::from_millis(20), Duration::from_millis(10), Duration::from_millis(30))
        );
        let even = Summary::of(&ms(&[40, 10, 20, 30])).expect("samples");
        assert_eq!(even.median, Duration::from_millis(25));
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn reads_hellos_boot_line() {
        let line = "boot: reset -> entry 900 us, reset -> main 1234 us; RAM 64 MiB, heap free 60000 KiB";
        assert_eq!(reset_to_main(line), Some(Duration::from_micros(1234)));
        assert_eq!(reset_to_main("something else"), None);
    }
}
