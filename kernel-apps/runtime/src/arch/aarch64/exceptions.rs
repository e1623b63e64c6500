//! Exception vectors: every exception becomes a readable report and status 102.
//!
//! VBAR_EL1 points at a table of 16 entries (synchronous, IRQ, FIQ, SError, for each of four
//! origins). The runtime runs on SP_EL0, so an exception switches to SP_EL1, the exception stack
//! (see `start`); each entry saves x0..x30, ELR and SPSR there and calls
//! [`mast_aarch64_exception`] with the entry's index. A stack overflow therefore still gets a
//! report: it faults on the guard page below SP_EL0's stack, and the report, taken on the other
//! stack, says so. The report names the exception in words (see [`crate::fault::aarch64`]) and
//! shows ESR, ELR, FAR, SPSR, LR and SP; then the machine powers off with
//! [`ExitCode::CPU_EXCEPTION`].
//!
//! One exception is expected and handled: the semihosting `hlt` in [`super::power`], which is an
//! undefined instruction when no debugger or QEMU semihosting is listening. The handler skips it and
//! makes the call return "unavailable", so powering off can try PSCI next.
//!
//! # Not supported
//! - Interrupts: the runtime keeps them masked, so an IRQ or FIQ here is reported as unexpected.
//! - Recovering from faults, and overflowing the 16 KiB exception stack (it has no guard page).
//! - Frames larger than the 4 KiB guard page: a function that moves SP past the guard in one step
//!   (a local array of several KiB) can skip it.
//! - Returning into code that uses FP/SIMD registers: the return path (only for the semihosting
//!   probe, which is a function call) restores general-purpose registers only.

use core::sync::atomic::{AtomicU8, Ordering};

use crate::{console, exit::ExitCode, fault::aarch64 as fault};

use super::power;

/// The registers the vector entries save, in stack order.
#[repr(C)]
pub(super) struct Frame {
    x: [u64; 31],
    elr: u64,
    spsr: u64,
    /// Keeps the frame a multiple of 16 bytes, as SP alignment requires.
    _pad: u64,
}

const FRAME_SIZE: usize = core::mem::size_of::<Frame>();
const _: () = assert!(FRAME_SIZE.is_multiple_of(16) && FRAME_SIZE == 272);

/// The vector for synchronous exceptions from EL1 on SP_EL0, which is how the runtime runs.
const VECTOR_CURRENT_EL_SP0_SYNC: u64 = 0;
/// The vector for synchronous exceptions from EL1 on SP_EL1: the exception handler itself (its
/// power-off tries the semihosting probe too).
const VECTOR_CURRENT_EL_SYNC: u64 = 4;
/// ESR exception class "unknown reason": what an undefined instruction such as `hlt` raises.
const CLASS_UNKNOWN: u8 = 0x00;

core::arch::global_asm!(
    r#"
    .macro mast_aarch64_vector index
    .balign 128
    sub     sp, sp, #{frame_size}
    stp     x0, x1, [sp]
    mov     x0, #\index
    b       .Lmast_exception_common
    .endm

    .section .text.vectors, "ax"
    .balign 2048
    .global __mast_vectors
__mast_vectors:
    mast_aarch64_vector 0
    mast_aarch64_vector 1
    mast_aarch64_vector 2
    mast_aarch64_vector 3
    mast_aarch64_vector 4
    mast_aarch64_vector 5
    mast_aarch64_vector 6
    mast_aarch64_vector 7
    mast_aarch64_vector 8
    mast_aarch64_vector 9
    mast_aarch64_vector 10
    mast_aarch64_vector 11
    mast_aarch64_vector 12
    mast_aarch64_vector 13
    mast_aarch64_vector 14
    mast_aarch64_vector 15

    .section .text.mast_exception, "ax"
.Lmast_exception_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x1, elr_el1
    stp     x30, x1, [sp, #240]
    mrs     x1, spsr_el1
    str     x1, [sp, #256]
    mov     x1, sp
    bl      mast_aarch64_exception
    // Only the semihosting probe returns here; resume where the handler said.
    ldr     x1, [sp, #256]
    msr     spsr_el1, x1
    ldp     x30, x1, [sp, #240]
    msr     elr_el1, x1
    ldp     x28, x29, [sp, #224]
    ldp     x26, x27, [sp, #208]
    ldp     x24, x25, [sp, #192]
    ldp     x22, x23, [sp, #176]
    ldp     x20, x21, [sp, #160]
    ldp     x18, x19, [sp, #144]
    ldp     x16, x17, [sp, #128]
    ldp     x14, x15, [sp, #112]
    ldp     x12, x13, [sp, #96]
    ldp     x10, x11, [sp, #80]
    ldp     x8, x9, [sp, #64]
    ldp     x6, x7, [sp, #48]
    ldp     x4, x5, [sp, #32]
    ldp     x2, x3, [sp, #16]
    ldp     x0, x1, [sp]
    add     sp, sp, #{frame_size}
    eret
"#,
    frame_size = const FRAME_SIZE,
);

/// How many unexpected exceptions have arrived. The first is reported; a second means the report or
/// the power-off faulted, so the machine powers off without printing; a third means powering off
/// itself faults (a PSCI conduit nobody answers, say), so the CPU just stops.
static UNEXPECTED: AtomicU8 = AtomicU8::new(0);

/// Called by the vector entries with the entry's index and the saved registers. Returns only to
/// skip the semihosting probe; every other exception ends in a report and power-off.
#[unsafe(no_mangle)]
extern "C" fn mast_aarch64_exception(vector: u64, frame: &mut Frame) {
    let esr = fault::Syndrome(read_sysreg!("esr_el1"));
    if (vector == VECTOR_CURRENT_EL_SP0_SYNC || vector == VECTOR_CURRENT_EL_SYNC)
        && esr.class() == CLASS_UNKNOWN
        && frame.elr == power::semihosting_trap_address()
    {
        frame.x[0] = power::SEMIHOSTING_UNAVAILABLE;
        frame.elr += 4;
        return;
    }
    let far = read_sysreg!("far_el1");

    match UNEXPECTED.fetch_add(1, Ordering::Relaxed) {
        0 => {}
        1 => power::exit(ExitCode::CPU_EXCEPTION),
        _ => power::wait_forever(),
    }
    let (kind, origin) = fault::vector(vector);
    // The stack pointer the exception interrupted: SP_EL0 for the runtime's code, else (a fault in
    // this handler) SP_EL1 before the vector entry pushed the frame.
    let sp = if vector < 4 { read_sysreg!("sp_el0") as usize } else { frame as *const Frame as usize + FRAME_SIZE };
    console::emergency_print(format_args!("\nmast: CPU exception: {kind} {origin}\n"));
    if fault::vector_has_syndrome(vector) {
        console::emergency_print(format_args!("  {esr}\n"));
    } else {
        console::emergency_print(format_args!("  an interrupt, but the runtime keeps them masked\n"));
    }
    let far_valid = fault::vector_has_syndrome(vector) && esr.far_valid();
    let far_note = if far_valid { "" } else { " (not valid)" };
    if far_valid && super::stack_guard().contains(&far) {
        console::emergency_print(format_args!(
            "  FAR={far:#x}: probably a stack overflow (the address is in the stack guard page)\n"
        ));
    }
    console::emergency_print(format_args!(
        "  ESR={:#x} ELR={:#x} FAR={far:#x}{far_note}\n  SPSR={:#x} LR={:#x} SP={sp:#x}\n",
        esr.0, frame.elr, frame.spsr, frame.x[30],
    ));
    crate::boot::power_off(ExitCode::CPU_EXCEPTION)
}
