//! The PVH entry: from the loader's 32-bit hand-off to Rust in 64-bit long mode.
//!
//! A PVH loader (QEMU `microvm` through qboot, Firecracker, Cloud Hypervisor) reads the `Xen` ELF
//! note of type `XEN_ELFNOTE_PHYS32_ENTRY`, loads the image at its physical addresses and jumps to
//! the noted address in 32-bit protected mode with paging off, flat segments, interrupts disabled
//! and EBX holding the physical address of the `hvm_start_info` structure. Everything else,
//! including the stack, is undefined.
//!
//! This module owns the code that runs before Rust can, and the machine state it sets up: it
//! records the TSC at the first instruction (for "reset → entry"), enters long mode on the
//! identity map below, zeroes `.bss`, and calls [`super::start`] on the boot stack with the
//! start-info address.
//!
//! The identity map (virtual = physical below 4 GiB):
//! - 0 – 2 MiB in 4 KiB pages, leaving page 0 (null pointers) and the guard page under each stack
//!   unmapped, so a null dereference or a stack overflow faults instead of corrupting memory;
//! - every entry user-accessible (U/S set), because the appliance runs at CPL 3 (see
//!   [`super::user`]);
//! - 2 MiB – 3 GiB in 2 MiB pages, write-back: RAM on every machine this runs on;
//! - 3 – 4 GiB in 2 MiB pages, uncached: the MMIO hole (IOAPIC, LAPIC, virtio-mmio, flash);
//! - nothing above 4 GiB, so a stray pointer there page-faults. 1 GiB pages are not used because
//!   QEMU's default CPU model may lack them.
//!
//! The page directories and the 4 KiB table are assembled into the image (20 KiB) rather than
//! built at boot, because boot time is dominated by executed instructions where the guest is
//! emulated: under the nested PVM hypervisor this is developed on, every guest instruction of this
//! (non-PVM-aware) kernel is emulated at about 0.7 µs, and building the 2,560 entries took
//! 10–25 ms. At boot the entry code only writes the five entries of the (otherwise zero) PML4 and
//! PDPT and clears the three unmapped pages.
//!
//! Not supported: NX and W^X (everything mapped is read-write-execute), RAM above 4 GiB, changing
//! the map after boot, and SSE/AVX state (the target is soft-float; `xgetbv` and `ldmxcsr` also
//! fail in early boot under PVM).

use super::segments::CODE_SELECTOR;

unsafe extern "C" {
    /// The TSC when the first instruction ran, stored by the entry code before anything else.
    pub(super) static mast_boot_tsc: u64;
    /// The first byte past the image, its `.bss`, page tables and stacks (page-aligned).
    pub(super) static __image_end: u8;
}

core::arch::global_asm!(
    // The PVH note. QEMU reads the descriptor as a pointer-sized value in a 64-bit ELF, so it is a
    // .quad, and it aligns the name to the PT_NOTE segment's alignment, so that stays 4.
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                     /* namesz: "Xen\0" */
    .long 8                     /* descsz */
    .long 18                    /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad mast_pvh_start
    .balign 4
    "#,
    // The page tables (see the module docs). Flags: 0x7 present, writable and user-accessible;
    // 0x87 also a 2 MiB page; 0x9f also write-through and cache-disabled, for the MMIO hole. The PML4 and PDPT are
    // almost all zeros, so they take no space in the image: they sit in a NOLOAD section, which
    // the loader zero-fills (the ELF rule for p_memsz beyond p_filesz), and the entry code writes
    // their five entries.
    r#"
    .section .mast_page_tables, "aw", @progbits
    .balign 4096
mast_pd:
    .quad mast_pt + 0x7
    .set mast_page, 1
    .rept 3 * 512 - 1
    .quad (mast_page << 21) | 0x87
    .set mast_page, mast_page + 1
    .endr
    .rept 512
    .quad (mast_page << 21) | 0x9f
    .set mast_page, mast_page + 1
    .endr
mast_pt:
    .set mast_page, 0
    .rept 512
    .quad (mast_page << 12) | 0x7
    .set mast_page, mast_page + 1
    .endr

    .section .mast_page_roots, "aw", @nobits
    .balign 4096
mast_pml4: .skip 4096
mast_pdpt: .skip 4096
    "#,
    r#"
    .section .data.mast_boot, "aw", @progbits
    .balign 8
    .global mast_boot_tsc
mast_boot_tsc:
    .quad 0
    "#,
    // The 32-bit entry. EBX, the start-info address, is preserved until the call into Rust.
    r#"
    .section .text.mast_boot, "ax", @progbits
    .code32
    .global mast_pvh_start
mast_pvh_start:
    rdtsc
    movl %eax, mast_boot_tsc
    movl %edx, mast_boot_tsc + 4
    cli
    cld

    /* PML4[0] -> PDPT; PDPT[0..4] -> the four page directories. The high halves are zero. */
    movl $mast_pdpt + 0x7, mast_pml4
    movl $mast_pd + 0x7, mast_pdpt
    movl $mast_pd + 0x1000 + 0x7, mast_pdpt + 8
    movl $mast_pd + 0x2000 + 0x7, mast_pdpt + 16
    movl $mast_pd + 0x3000 + 0x7, mast_pdpt + 24

    /* Unmap page 0 and the stack guard pages (the linker script checks they lie below 2 MiB). */
    movl $0, mast_pt
    movl $mast_stack_guard, %eax
    shrl $12, %eax
    movl $0, mast_pt(,%eax,8)
    movl $mast_fault_stack_guard, %eax
    shrl $12, %eax
    movl $0, mast_pt(,%eax,8)
    movl $mast_kernel_stack_guard, %eax
    shrl $12, %eax
    movl $0, mast_pt(,%eax,8)

    /* Long mode: PAE, the page tables, EFER.LME, then paging (with write protection in ring 0). */
    lgdt mast_gdt_pointer
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl $mast_pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80010001, %eax
    movl %eax, %cr0
    ljmp ${code_selector}, $mast_long_mode

    .code64
mast_long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs

    /* Zero .bss (Rust's zero-initialised statics). */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    shrl $3, %ecx
    xorl %eax, %eax
    rep stosq

    movl $mast_stack_top, %esp
    xorl %ebp, %ebp
    movl %ebx, %edi
    call {start}
    ud2
    "#,
    code_selector = const CODE_SELECTOR,
    start = sym super::start,
    options(att_syntax),
);
