//! The segments and stacks every x86_64 entry shares (QEMU's PVH entry and the tender's): the GDT
//! with its user segments and TSS slot, and the boot, double-fault and kernel stacks, each above a
//! guard page. [`super::idt`] and [`super::user`] rely on exactly this layout, so it is defined
//! once; the tender's port includes this file as its own `segments` module.
//!
//! The guard pages are unmapped by each entry: QEMU's page tables leave them out, and on the
//! tender, which maps all RAM, the runtime takes them out of the tender's map at boot.

/// Size of the boot stack. Its pages are not zeroed or touched until used, so a generous size
/// costs nothing at boot.
const STACK_BYTES: usize = 128 * 1024;
/// Size of the stack the CPU switches to for a double fault (IST1), so that a stack overflow
/// still produces a report.
const FAULT_STACK_BYTES: usize = 16 * 1024;
/// Size of the kernel stack (TSS.RSP0): where faults, interrupts and the gate run when they
/// arrive at CPL 3.
const KERNEL_STACK_BYTES: usize = 16 * 1024;

/// Selector of the 64-bit code segment in the GDT.
pub(super) const CODE_SELECTOR: u16 = 0x08;
/// Selector of the TSS descriptor in the GDT; [`super::idt`] fills the descriptor in.
pub(super) const TSS_SELECTOR: u16 = 0x18;

unsafe extern "C" {
    /// The GDT; entries 3 and 4 (selector 0x18) are the TSS descriptor, filled in at boot.
    pub(super) static mut mast_gdt: [u64; 7];
    /// The page below the boot stack.
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
    // Stacks, in their own section that is neither loaded nor zeroed, each above a guard page.
    // `mast_stack_top` and `mast_gdt_pointer` are global because the entries' assembly, in other
    // modules (and so possibly other object files), uses them.
    r#"
    .section .mast_stacks, "aw", @nobits
    .balign 4096
    .global mast_stack_guard
mast_stack_guard:       .skip 4096
                        .skip {stack_bytes}
    .global mast_stack_top
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
    // and user 64-bit code (0x30), as `super::user` expects. The accessed bits are preset so the
    // CPU never writes to the table. The pointer's base is a .quad so the same pointer serves a
    // 32-bit and a 64-bit `lgdt`.
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
    .global mast_gdt_pointer
mast_gdt_pointer:
    .word mast_gdt_end - mast_gdt - 1
    .quad mast_gdt
    "#,
    stack_bytes = const STACK_BYTES,
    fault_stack_bytes = const FAULT_STACK_BYTES,
    kernel_stack_bytes = const KERNEL_STACK_BYTES,
    options(att_syntax),
);
