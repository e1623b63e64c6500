//! The failure paths: a panic and a CPU exception are reported on the console and reach the host
//! as the documented statuses (101, 102); an appliance's own status gets through unchanged.

mod common;

use boot_contract::ExitCode;
use images::Arch;
use qemu::{Exit, Machine};

fn crash(arch: Arch, args: &[&str], test: &str) -> Option<qemu::RunResult> {
    let image = common::image_for("crash", arch, test)?;
    Some(common::run(&Machine::new(arch, image).args(args)))
}

fn panic_is_reported(arch: Arch, test: &str) {
    let Some(run) = crash(arch, &["panic"], test) else { return };
    run.check(Exit::Status(ExitCode::PANIC.0), "panicked at kernel-apps/crash/src/main.rs:")
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert!(run.time_of("crash appliance: deliberate panic").is_some(), "no panic message:\n{}", run.console_text());
}

#[test]
fn panic_is_reported_on_aarch64() {
    panic_is_reported(Arch::Aarch64, "panic_is_reported_on_aarch64");
}

#[test]
fn panic_is_reported_on_x86_64() {
    panic_is_reported(Arch::X86_64, "panic_is_reported_on_x86_64");
}

#[test]
fn data_abort_is_reported_on_aarch64() {
    let Some(run) = crash(Arch::Aarch64, &["fault"], "data_abort_is_reported_on_aarch64") else { return };
    run.check(Exit::Status(ExitCode::CPU_EXCEPTION.0), "FAR=0x1000000000")
        .unwrap_or_else(|failure| panic!("{failure}"));
    let text = run.console_text().to_lowercase();
    assert!(
        text.contains("data abort") && text.contains("translation fault"),
        "report lacks the fault in words:\n{text}"
    );
    assert!(text.contains("esr=") && text.contains("elr="), "report lacks ESR/ELR:\n{text}");
}

#[test]
fn page_fault_is_reported_on_x86_64() {
    let Some(run) = crash(Arch::X86_64, &["fault"], "page_fault_is_reported_on_x86_64") else { return };
    run.check(Exit::Status(ExitCode::CPU_EXCEPTION.0), "CR2=0x1000000000")
        .unwrap_or_else(|failure| panic!("{failure}"));
    let text = run.console_text().to_lowercase();
    assert!(text.contains("page fault") && text.contains("rip="), "report lacks the fault in words:\n{text}");
}

/// The appliance runs at CPL 3 on x86_64; its stack's guard page must still turn an overflow into
/// a report (taken on the kernel stack) rather than silent corruption.
#[test]
fn stack_overflow_is_reported_on_x86_64() {
    let Some(run) = crash(Arch::X86_64, &["overflow"], "stack_overflow_is_reported_on_x86_64") else { return };
    run.check(Exit::Status(ExitCode::CPU_EXCEPTION.0), "a stack overflow")
        .unwrap_or_else(|failure| panic!("{failure}"));
    let text = run.console_text().to_lowercase();
    assert!(text.contains("page fault") && text.contains("cs=0x33"), "report lacks the fault at CPL 3:\n{text}");
}

/// aarch64's stack lies above a guard page (a level-3 mapping in a 1 GiB-block map), and faults
/// are reported on a separate exception stack, so an overflow is a report, not silent corruption.
#[test]
fn stack_overflow_is_reported_on_aarch64() {
    let Some(run) = crash(Arch::Aarch64, &["overflow"], "stack_overflow_is_reported_on_aarch64") else { return };
    run.check(Exit::Status(ExitCode::CPU_EXCEPTION.0), "probably a stack overflow")
        .unwrap_or_else(|failure| panic!("{failure}"));
    let text = run.console_text().to_lowercase();
    assert!(
        text.contains("data abort") && text.contains("translation fault, level 3"),
        "report lacks the fault on the level-3 guard page:\n{text}"
    );
}

#[test]
fn appliance_status_reaches_the_host_on_both_arches() {
    for arch in Arch::ALL {
        let Some(run) = crash(arch, &["exit", "7"], "appliance_status_reaches_the_host") else { continue };
        run.check(Exit::Status(7), "mast: exit status 7").unwrap_or_else(|failure| panic!("{arch}: {failure}"));
    }
}
