//! The tender's x86_64 entry: from the tender's hand-off to Rust, in a handful of instructions.
//!
//! The tender enters at `mast_tender_start` in 64-bit long mode on its identity map of RAM, with
//! flat segments it describes only in the VM's registers (no GDT in memory), interrupts off, SSE
//! usable, RDI the address of its BootInfo and RSP 0. The entry records the TSC (for "VM creation
//! → entry"), takes its stack, loads its own GDT and reloads every segment register from it (so
//! exception delivery and the TSS, which [`super::idt`] installs, have a table to use), and calls
//! [`super::start`]. Nothing is zeroed: RAM arrives zeroed, `.bss` included, and touching it would
//! only make the host back pages the guest may never use.
//!
//! The symbols and selectors here are the ones [`super::idt`] and [`super::user`] (shared with the
//! QEMU port) expect: a GDT with user segments at 0x28 and 0x30, and a kernel stack for TSS.RSP0.
//! The tender maps every page of RAM; [`super::guard`] takes the guard pages below the stacks out
//! of its map before anything else runs, so a stack overflow is a fault report.

use super::segments::CODE_SELECTOR;

core::arch::global_asm!(
    r#"
    .section .text.mast_boot, "ax", @progbits
    .code64
    .global mast_tender_start
mast_tender_start:
    rdtsc
    shlq $32, %rdx
    orq %rax, %rdx
    movq %rdx, %rsi                 /* second argument: the TSC at entry */
    leaq mast_stack_top(%rip), %rsp
    lgdt mast_gdt_pointer(%rip)
    movl $0x10, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    xorl %eax, %eax
    movl %eax, %fs
    movl %eax, %gs
    pushq ${code_selector}
    leaq 1f(%rip), %rax
    pushq %rax
    lretq
1:
    xorl %ebp, %ebp
    call {start}                    /* RDI, the BootInfo address, is untouched since entry */
    ud2
    "#,
    code_selector = const CODE_SELECTOR,
    start = sym super::start,
    options(att_syntax),
);
