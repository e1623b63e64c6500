//! The tender's aarch64 half: entry, the hypercall store, and the generic timer's counter.
//!
//! Compile-checked, not yet run (no tender runs aarch64 guests here). The tender enters
//! `mast_tender_start` at EL1 with the MMU off, DAIF masked and X0 the BootInfo address. The entry
//! enables FP/SIMD (Rust code uses its registers), takes its stack and calls
//! [`super::tender_start`]. Not done yet: an identity map with Normal memory (with the MMU off,
//! every access is Device-nGnRnE, and unaligned accesses fault on hardware) and exception vectors.

use super::abi;
use crate::tsc::PvclockSnapshot;

core::arch::global_asm!(
    r#"
    .section .text.mast_boot, "ax"
    .global mast_tender_start
mast_tender_start:
    isb
    mrs     x1, cntvct_el0          // second argument: the counter at entry
    mov     x2, #(3 << 20)          // CPACR_EL1.FPEN: FP/SIMD at EL1 without traps
    msr     cpacr_el1, x2
    isb
    adrp    x2, __mast_stack_top
    add     x2, x2, :lo12:__mast_stack_top
    mov     sp, x2
    bl      {start}                 // X0, the BootInfo address, is untouched since entry
1:  wfe
    b       1b
    "#,
    start = sym super::tender_start,
);

/// A 64-bit store of the argument block's address to the call's MMIO address, which is never
/// backed by memory, so the store exits to the tender.
pub(super) fn hypercall(call: abi::Hypercall, block: u64) {
    // SAFETY: the address belongs to the tender by the ABI and is not RAM; the tender reads and
    // writes only the argument block named (and memory it names), both owned by the caller for the
    // duration. No `nomem`: the compiler must assume the call reads and writes that memory.
    unsafe {
        core::arch::asm!("str {block}, [{at}]", block = in(reg) block, at = in(reg) call.mmio_address(), options(nostack, preserves_flags))
    };
}

/// The virtual counter.
pub(super) fn ticks() -> u64 {
    let ticks: u64;
    // SAFETY: reading CNTVCT_EL0 has no side effects; EL1 may read it. The ISB keeps the read in
    // program order.
    unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) ticks, options(nomem, nostack, preserves_flags)) };
    ticks
}

/// The counter's scaling, from CNTFRQ_EL0 (the tender's BootInfo has no frequency on aarch64).
pub(super) fn clock(_info: &abi::BootInfo) -> PvclockSnapshot {
    let hz: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effects; EL1 may read it.
    unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) hz, options(nomem, nostack, preserves_flags)) };
    crate::tsc::fixed_frequency((hz & 0xffff_ffff) / 1000)
}

/// `wfi` forever, interrupts masked.
pub(super) fn halt_forever() -> ! {
    loop {
        // SAFETY: waits for an interrupt that, masked, never comes; nothing else is affected.
        unsafe { core::arch::asm!("msr daifset, #0xf", "wfi", options(nomem, nostack)) };
    }
}
