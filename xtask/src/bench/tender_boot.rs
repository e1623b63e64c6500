//! `cargo xtask bench boot --platform tender`: the release `hello` image under the release tender,
//! on the host's architecture. Per run: spawn → the first byte on the tender's stdout (the guest's
//! first console line), spawn → the tender's exit, and the VM exits the tender counted (`--stats`).

use std::{
    io::Read,
    path::Path,
    process::{Command, ExitCode, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use images::{Platform, build};
use qemu::kvm;

use super::{
    boot::BootArgs,
    density::{build_tender, host_arch},
    report::{Summary, ms},
};

/// Issue #7's target for the median spawn → first console line.
const TARGET_FIRST_LINE: Duration = Duration::from_millis(5);

pub fn main(args: &BootArgs) -> Result<ExitCode> {
    let arch = host_arch();
    if args.arch.is_some_and(|a| a != arch) {
        bail!("the tender runs the host's architecture ({arch}) only");
    }
    if let Some(reason) = kvm::unavailable_reason() {
        println!("tender boot bench skipped: {reason}");
        return Ok(ExitCode::SUCCESS);
    }
    let tender = build_tender()?;
    let root = build::workspace_root();
    let built = build::build_for_platform(&root, "hello", arch, Platform::Tender, build::Profile::Release)
        .context("building hello for the tender")?;
    println!(
        "tender boot bench: release `hello` ({} bytes) under the release tender, {} timed runs after 1 warm-up; times from spawn",
        built.info.file_size, args.runs
    );
    let mut first_bytes = Vec::new();
    let mut exits = Vec::new();
    let mut vm_exits = Vec::new();
    for run in 0..=args.runs {
        let sample = run_once(&tender, &built.artifact).with_context(|| format!("run {run}"))?;
        if run == 0 {
            continue; // warm-up: page cache, first-run costs
        }
        first_bytes.push(sample.first_byte);
        exits.push(sample.exit);
        vm_exits.push(sample.vm_exits);
    }
    let first = Summary::of(&first_bytes).context("no timed runs")?;
    let exit = Summary::of(&exits).context("no timed runs")?;
    vm_exits.sort_unstable();
    println!("{:<22} {:>10} {:>10} {:>10}", "", "p50", "min", "max");
    for (label, s) in [("spawn -> first line", first), ("spawn -> exit", exit)] {
        println!("{:<22} {:>10} {:>10} {:>10}", label, ms(s.median), ms(s.min), ms(s.max));
    }
    println!(
        "{:<22} {:>10} {:>10} {:>10}",
        "VM exits",
        vm_exits[vm_exits.len() / 2],
        vm_exits.first().copied().unwrap_or_default(),
        vm_exits.last().copied().unwrap_or_default()
    );
    println!(
        "target (issue #7): first line p50 <= {} -> {}",
        ms(TARGET_FIRST_LINE),
        if first.median <= TARGET_FIRST_LINE { "met" } else { "not met" }
    );
    Ok(ExitCode::SUCCESS)
}

struct Sample {
    first_byte: Duration,
    exit: Duration,
    vm_exits: u64,
}

fn run_once(tender: &Path, image: &Path) -> Result<Sample> {
    let spawned = Instant::now();
    let mut child = Command::new(tender)
        .arg("--stats")
        .arg(image)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the tender")?;
    let mut stdout = child.stdout.take().context("tender stdout")?;
    let mut stderr = child.stderr.take().context("tender stderr")?;
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut first = [0u8; 1];
    let got = stdout.read(&mut first).context("reading the tender's stdout")?;
    let first_byte = spawned.elapsed();
    let mut console = first[..got].to_vec();
    stdout.read_to_end(&mut console).context("reading the tender's stdout")?;
    let status = child.wait().context("waiting for the tender")?;
    let exit = spawned.elapsed();
    let errors = errors.join().unwrap_or_default();
    let console = String::from_utf8_lossy(&console);
    ensure!(
        status.success() && got == 1 && console.contains("Hello from Mast"),
        "hello failed under the tender ({status}); console:\n{console}\nstderr:\n{errors}"
    );
    let vm_exits = vm_exits(&errors).with_context(|| format!("no VM exit count in --stats output:\n{errors}"))?;
    Ok(Sample { first_byte, exit, vm_exits })
}

/// The total from the tender's `--stats` line "tender: N VM exits (...)".
fn vm_exits(stats: &str) -> Option<u64> {
    stats.lines().find_map(|line| line.strip_prefix("tender: ")?.split_once(" VM exits")?.0.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_exit_count() {
        let stats = "tender: 7 VM exits (hypercall 7)\ntender: hypercalls: ConsoleWrite 6, Exit 1\n";
        assert_eq!(vm_exits(stats), Some(7));
        assert_eq!(vm_exits("tender: hypercalls: none"), None);
    }
}
