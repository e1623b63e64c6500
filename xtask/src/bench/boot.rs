//! `cargo xtask bench boot`: hello per architecture (or board) on QEMU: image size, start → first
//! console line and → exit; `--platform tender` hands over to [`super::tender_boot`].

use std::{process::ExitCode, time::Duration};

use anyhow::{Context, Result, bail};
use boot_contract::board::BoardKind;
use clap::Args;
use images::{Arch, Platform};
use qemu::{Exit, Machine, kvm};

use super::report::{Summary, ms};
use crate::deps;

#[derive(Debug, Args)]
pub struct BootArgs {
    /// Timed runs per architecture (after one untimed warm-up run).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Only this architecture (default: both).
    #[arg(long, value_name = "ARCH", conflicts_with = "board")]
    pub arch: Option<Arch>,
    /// Only this aarch64 board: virt, rpi3 (QEMU `raspi3b`) or rpi4 (QEMU `raspi4b`, QEMU 9 and later).
    #[arg(long, value_name = "BOARD", value_parser = crate::image::parse_board)]
    pub board: Option<images::build::Board>,
    /// The machine: qemu (the default) or tender (the host's architecture, under KVM).
    #[arg(long, default_value_t = Platform::Qemu, conflicts_with = "board")]
    pub platform: Platform,
}

pub fn main(args: BootArgs) -> Result<ExitCode> {
    if args.platform == Platform::Tender {
        return super::tender_boot::main(&args);
    }
    let board = args.board.filter(|b| b.kind != BoardKind::Virt);
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
        if board.is_some_and(|b| b.kind == BoardKind::Rpi4)
            && let Some(reason) = qemu::version::raspi4b_unavailable_reason()
        {
            bail!("rpi4 cannot be benchmarked here: {reason}");
        }
        if arch == Arch::X86_64
            && let Some(reason) = kvm::unavailable_reason()
        {
            println!("{arch:<8} skipped: {reason}");
            continue;
        }
        let built = qemu::appliance_image_for_board("hello", arch, board)?;
        let kernel = qemu::appliance_for_board("hello", arch, board)?;
        let (label, machine) = match board {
            Some(board) if board.kind == BoardKind::Rpi4 => (board.name, Machine::raspi4b(kernel)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hellos_boot_line() {
        let line = "boot: reset -> entry 900 us, reset -> main 1234 us; RAM 64 MiB, heap free 60000 KiB";
        assert_eq!(reset_to_main(line), Some(Duration::from_micros(1234)));
        assert_eq!(reset_to_main("something else"), None);
    }
}
