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
//! The tender maps every page of RAM, so the guard pages below the stacks are not unmapped here:
//! a stack overflow is not detected.

/// Size of the boot stack. Its pages are not touched until used, so a generous size costs nothing.
const STACK_BYTES: usize = 128 * 1024;
/// Size of the stack the CPU switches to for a double fault (IST1).
const FAULT_STACK_BYTES: usize = 16 * 1024;
/// Size of the kernel stack (TSS.RSP0), for faults and the gate at CPL 3.
const KERNEL_STACK_BYTES: usize = 16 * 1024;

/// Selector of the 64-bit code segment in the GDT.
pub(super) const CODE_SELECTOR: u16 = 0x08;
/// Selector of the TSS descriptor in the GDT; [`super::idt`] fills the descriptor in.
pub(super) const TSS_SELECTOR: u16 = 0x18;

unsafe extern "C" {
    /// The GDT; entries 3 and 4 (selector 0x18) are the TSS descriptor, filled in at boot.
    pub(super) static mut mast_gdt: [u64; 7];
    /// The page below the boot stack (a guard page only where the map leaves it out; not here).
    pub(super) static mast_stack_guard: u8;
    /// One past the top of the double-fault stack.
    pub(super) static mast_fault_stack_top: u8;
    /// The page below the double-fault stack.
    pub(super) static mast_fault_stack_guard: u8;
    /// One past the top of the kernel stack (TSS.RSP0).
    pub(super) static mast_kernel_stack_top: u8;
    /// The page below the kernel stack.
    pub(super) static mast_kernel_stack_guard: u8;
}

core::arch::global_asm!(
    r#"
    .section .mast_stacks, "aw", @nobits
    .balign 4096
    .global mast_stack_guard
mast_stack_guard:       .skip 4096
                        .skip {stack_bytes}
mast_stack_top:
    .global mast_fault_stack_guard
mast_fault_stack_guard: .skip 4096
                        .skip {fault_stack_bytes}
    .global mast_fault_stack_top
mast_fault_stack_top:
    .global mast_kernel_stack_guard
mast_kernel_stack_guard: .skip 4096
                        .skip {kernel_stack_bytes}
    .global mast_kernel_stack_top
mast_kernel_stack_top:
    "#,
    // The GDT: null, 64-bit code (0x08), data (0x10), a 16-byte TSS slot (0x18), user data (0x28)
    // and user 64-bit code (0x30), with the accessed bits preset so the CPU never writes to it.
    r#"
    .section .data.mast_boot, "aw", @progbits
    .balign 16
    .global mast_gdt
mast_gdt:
    .quad 0
    .quad 0x00af9b000000ffff
    .quad 0x00cf93000000ffff
    .quad 0, 0
    .quad 0x00cff3000000ffff
    .quad 0x00affb000000ffff
mast_gdt_end:
    .balign 8
    .word 0, 0, 0
mast_gdt_pointer:
    .word mast_gdt_end - mast_gdt - 1
    .quad mast_gdt
    "#,
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
    stack_bytes = const STACK_BYTES,
    fault_stack_bytes = const FAULT_STACK_BYTES,
    kernel_stack_bytes = const KERNEL_STACK_BYTES,
    code_selector = const CODE_SELECTOR,
    start = sym super::start,
    options(att_syntax),
);
