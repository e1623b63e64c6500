//! Powering off: semihosting `SYS_EXIT` (carries the status to QEMU), then PSCI `SYSTEM_OFF`, then
//! an idle loop.
//!
//! Semihosting is a debugger convention: `hlt #0xf000` with an operation number in w0. QEMU started
//! with `-semihosting-config enable=on,target=native` implements `SYS_EXIT` by exiting with the
//! status the block carries. Without semihosting, `hlt` is an undefined instruction; the exception
//! handler recognises that exact instruction and makes the call return
//! [`SEMIHOSTING_UNAVAILABLE`], so the same image powers off on real hardware through PSCI, the
//! firmware interface the device tree's `/psci` node names (`hvc` or `smc`). PSCI carries no
//! status, which is why the runtime also prints it.
//!
//! The Raspberry Pis have no PSCI (their trees have no `/psci` node, and the board's
//! [`crate::board::PowerOff::Halt`] ignores one if present): after semihosting the CPU halts in
//! `wfi` with the status on the console; see `docs/boards.md`.
//!
//! # Not supported
//! - PSCI 0.1 (no `SYSTEM_OFF`), and PSCI on machines whose tree has no `/psci` node (the CPU then
//!   idles with interrupts masked, and the host must stop it).
//! - Resetting a Pi through its PM watchdog.

use core::{
    arch::asm,
    sync::atomic::{AtomicU8, Ordering},
};

use crate::exit::ExitCode;

use super::pl011;

/// How PSCI calls reach the firmware, from the device tree's `/psci` `method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Conduit {
    Hvc = 1,
    Smc = 2,
}

/// The PSCI conduit, or 0 when there is no usable PSCI.
static PSCI: AtomicU8 = AtomicU8::new(0);

/// Remembers how to reach PSCI; `None` disables it.
pub(super) fn set_psci(conduit: Option<Conduit>) {
    PSCI.store(conduit.map_or(0, |c| c as u8), Ordering::Relaxed);
}

/// PSCI 0.2+ `SYSTEM_OFF` (SMC32 fast call).
const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
/// Semihosting `SYS_EXIT`.
const SYS_EXIT: u64 = 0x18;
/// `ADP_Stopped_ApplicationExit`: the program finished; the block's second word is its status.
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;
/// What [`__mast_semihosting_call`] returns when the `hlt` trapped (no semihosting host).
pub(super) const SEMIHOSTING_UNAVAILABLE: u64 = u64::MAX;

core::arch::global_asm!(
    r#"
    .section .text.mast_semihosting, "ax"
    .global __mast_semihosting_call
    .type __mast_semihosting_call, %function
__mast_semihosting_call:
    hlt     #0xf000
    ret
"#
);

unsafe extern "C" {
    /// Makes semihosting call `operation` with parameter `argument` (w0 and x1 by the semihosting
    /// convention, which match the C calling convention's first two arguments) and returns x0.
    /// The `hlt` is the function's first instruction; see [`semihosting_trap_address`].
    fn __mast_semihosting_call(operation: u64, argument: *const u64) -> u64;
}

/// The address of the semihosting `hlt`, so the exception handler can recognise its trap.
pub(super) fn semihosting_trap_address() -> u64 {
    __mast_semihosting_call as *const () as u64
}

/// Powers off with `status`: see the module docs for the order of attempts.
pub(crate) fn exit(status: ExitCode) -> ! {
    pl011::drain();
    let block = [ADP_STOPPED_APPLICATION_EXIT, u64::from(status.0)];
    // SAFETY: the call reads the two-word block, which lives on this stack frame until the call
    // returns (if it does: with semihosting on, QEMU exits here). Without semihosting the `hlt`
    // traps and the handler resumes after it with x0 = SEMIHOSTING_UNAVAILABLE.
    let _ = unsafe { __mast_semihosting_call(SYS_EXIT, block.as_ptr()) };

    match PSCI.load(Ordering::Relaxed) {
        // SAFETY: the device tree says PSCI firmware answers HVC; SYSTEM_OFF does not return when it
        // works, and otherwise returns an error code in x0 and may clobber the caller-saved registers
        // (SMCCC 1.0), which clobber_abi declares.
        x if x == Conduit::Hvc as u8 => unsafe {
            asm!("hvc #0", inout("x0") PSCI_SYSTEM_OFF => _, clobber_abi("C"), options(nostack));
        },
        // SAFETY: as above, for firmware that answers SMC.
        x if x == Conduit::Smc as u8 => unsafe {
            asm!("smc #0", inout("x0") PSCI_SYSTEM_OFF => _, clobber_abi("C"), options(nostack));
        },
        _ => {}
    }
    // Through the architecture boundary, like every other user of the contract.
    crate::arch::wait_forever()
}

/// Masks interrupts and waits for one forever: the lowest-power state that needs no firmware.
pub(crate) fn wait_forever() -> ! {
    // SAFETY: masking interrupts changes no memory; nothing in the runtime relies on them.
    unsafe { asm!("msr daifset, #0xf", options(nomem, nostack, preserves_flags)) };
    loop {
        // SAFETY: `wfi` only waits; with interrupts masked, a pending one wakes it and the loop
        // waits again.
        unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) };
    }
}
