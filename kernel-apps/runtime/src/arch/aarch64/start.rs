//! The first instructions: the arm64 Image header and the assembly that makes Rust runnable.
//!
//! The image starts with the 64-byte arm64 Image header, then the 16-byte Mast header (magic,
//! version, file size) that `images` validates, then code. The loader (QEMU `-kernel`, U-Boot `booti`, UEFI stubs) follows the arm64 boot protocol
//! (Linux `Documentation/arch/arm64/booting.rst`): it reads the 64-byte header, loads the image at a
//! 2 MiB-aligned base plus `text_offset`, and jumps to the first byte with x0 holding the physical
//! address of the device tree, the MMU off, interrupts masked, at EL2 or EL1. The code here:
//!
//! 1. reads the counter for the "entry" boot timestamp;
//! 2. drops from EL2 to EL1 if it was entered at EL2 (EL3 is not supported: the CPU parks);
//! 3. checks that it runs at its link address (the code is position-dependent; it parks if not);
//! 4. enables FP/SIMD, because the compiler uses NEON registers for copies in any Rust function;
//! 5. builds a provisional identity map (the gigabyte holding the image and the one holding the
//!    device tree, as normal write-back memory) and turns on the MMU and caches, so no Rust code ever
//!    runs with the MMU off (where all data accesses are Device memory: exclusives, and on real
//!    hardware unaligned accesses, fault there);
//! 6. sets the stacks (SP_EL1 for exceptions, SP_EL0 for everything else), zeroes `.bss`, installs
//!    the exception vectors and calls
//!    [`super::mast_aarch64_start`], which parses the device tree and completes the map.
//!
//! Secondary CPUs are never started by the runtime. The Pi firmware and QEMU `raspi3b` (7.2) hold
//! cores 1-3 in a spin table (0xd8..0xf0, polled in `wfe`) that the runtime never writes, and PSCI
//! machines keep them off; but a loader may release every core into the image (QEMU's generic
//! loader with `cpu-num`, some boot stubs). Every core but the one with affinity 0.0.0 therefore
//! parks at once in a `wfe` loop, touching no memory and no stack (`qemu-tests/tests/boards.rs`
//! checks where they stop).
//!
//! The provisional map maps the image's gigabyte through a level-2 table of 2 MiB blocks, Normal
//! memory up to the board's `ram_limit` and nothing above it, because on the Raspberry Pi 3 that
//! gigabyte also holds the peripherals (0x3f00_0000), which must never be mapped as Normal memory.
//! The device tree's gigabyte, if another, is one Normal block, and only if it lies wholly below
//! `ram_limit`; a tree elsewhere is not read (`mod.rs` checks the same bounds). The 2 MiB block
//! holding the stack's guard page is a level-3 table of 4 KiB pages with the guard page left out,
//! so a stack overflow faults (and is reported from the separate exception stack) instead of
//! running into `.bss`.

use super::{BUILD_BOARD, mmu};

/// arm64 Image `text_offset`: the image's offset from a 2 MiB-aligned base. 0 on `virt` (QEMU
/// loads it at RAM base + 2 MiB); 0x80000 on the Pis, where firmware and QEMU `raspi3b` load
/// `kernel8.img` at 0x80000.
const TEXT_OFFSET: u64 = BUILD_BOARD.link_address & ((1 << 21) - 1);

/// arm64 Image header flags: little-endian (bit 0 clear), 4 KiB pages (bits 2:1 = 1), and placed
/// as close to the base of DRAM as possible (bit 3 clear), which is what QEMU and U-Boot do.
const IMAGE_FLAGS: u64 = 0b010;

/// The version of the Mast header that follows the arm64 header at byte 64: magic `MAST`, this
/// version (u32), then the raw image's size in bytes (u64), all little-endian.
const MAST_HEADER_VERSION: u32 = 1;

/// HCR_EL2 for the drop to EL1: EL1 runs AArch64 (RW); HVC is undefined (HCD), since nothing
/// answers at EL2 once we leave it, and an undefined-instruction report beats a hang.
const HCR_EL2_RW: u64 = 1 << 31;
const HCR_EL2_HCD: u64 = 1 << 29;
/// CNTHCTL_EL2: EL1 may read the physical counter (EL1PCTEN) and use the physical timer (EL1PCEN).
const CNTHCTL_EL1_ACCESS: u64 = 0b11;
/// CPTR_EL2 without any trap enabled (its RES1 bits only): FP/SIMD reach EL1 untrapped.
const CPTR_EL2_NO_TRAPS: u64 = 0x33ff;
/// SPSR for the `eret` into EL1: EL1 using SP_EL1 (EL1h), with D, A, I and F masked.
const SPSR_EL1H_MASKED: u64 = 0x3c5;
/// CPACR_EL1.FPEN = 0b11: FP/SIMD instructions do not trap at EL1 or EL0.
const CPACR_FPEN: u64 = 0b11 << 20;

core::arch::global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
    .type _start, %function
_start:
    b       .Lmast_entry                // code0: jump over the rest of the header
    .long   0                           // code1
    .quad   {text_offset}               // text_offset
    .quad   __mast_image_size           // image_size: the image plus .bss, stack and page table
    .quad   {image_flags}               // flags
    .quad   0                           // res2
    .quad   0                           // res3
    .quad   0                           // res4
    .ascii  "ARM\x64"                   // magic
    .long   0                           // res5 (PE/COFF header offset: none)
    // The Mast header, which the image tools check before booting anything (images/src/kernel.rs).
    .ascii  "MAST"                      // magic
    .long   {mast_header_version}       // format version
    .quad   __mast_file_size            // the exact size of the raw image file

.Lmast_entry:
    mov     x19, x0                     // x19: the device tree's physical address
    mrs     x1, mpidr_el1
    tst     x1, #0xffffff               // Aff2.Aff1.Aff0: only core 0.0.0 boots
    b.ne    .Lmast_secondary
    mrs     x21, CurrentEL
    ubfx    x21, x21, #2, #2            // x21: the exception level we were entered at
    cmp     x21, #2
    b.eq    .Lmast_counter_el2
    mrs     x20, cntvct_el0             // x20: the counter at entry
    b       .Lmast_check_el
.Lmast_counter_el2:
    // CNTVOFF_EL2 is not set yet, so read the physical counter; it equals the virtual one once
    // CNTVOFF_EL2 is 0 below.
    mrs     x20, cntpct_el0
.Lmast_check_el:
    cmp     x21, #1
    b.eq    .Lmast_el1
    cmp     x21, #2
    b.ne    .Lmast_park                 // EL3 is not supported

    // At EL2: configure EL1 as a plain AArch64 kernel level without traps, then return into it.
    ldr     x0, ={hcr_el2}
    msr     hcr_el2, x0
    isb                                 // HCR_EL2.E2H may have changed the CNTHCTL_EL2 layout
    mrs     x0, cnthctl_el2
    orr     x0, x0, #{cnthctl_el1_access}
    msr     cnthctl_el2, x0
    msr     cntvoff_el2, xzr            // the virtual counter reads the physical one
    mov     x0, #{cptr_el2}
    msr     cptr_el2, x0
    msr     hstr_el2, xzr
    mrs     x0, midr_el1                // EL1 reads MIDR/MPIDR through these: show the real ones
    msr     vpidr_el2, x0
    mrs     x0, mpidr_el1
    msr     vmpidr_el2, x0
    ldr     x0, ={sctlr_mmu_off}        // EL1 starts with its MMU and caches off
    msr     sctlr_el1, x0
    mov     x0, #{spsr_el1h}
    msr     spsr_el2, x0
    adr     x0, .Lmast_el1
    msr     elr_el2, x0
    eret

.Lmast_el1:
    msr     daifset, #0xf
    adr     x0, _start                  // where we run...
    ldr     x1, =_start                 // ...and where we were linked
    cmp     x0, x1
    b.ne    .Lmast_park
    mov     x0, #{cpacr_fpen}
    msr     cpacr_el1, x0
    msr     spsel, #1
    isb

    // The provisional identity map. The MMU is off, so these stores bypass the data cache. Cache
    // lines for the tables left by earlier software are invalidated before (so no dirty line is
    // written back over a table later) and after (so no stale line hides it from the table walker,
    // which reads through the cache once the MMU is on). The level-1 table and the boot level-2
    // table are adjacent pages.
    adrp    x22, __mast_l1_table
    mov     x0, x22
    add     x1, x22, #{boot_tables_bytes}
    bl      .Lmast_dcache_invalidate
    mov     x0, x22
    add     x1, x22, #{boot_tables_bytes}
.Lmast_zero_table:
    stp     xzr, xzr, [x0], #16
    cmp     x0, x1
    b.lo    .Lmast_zero_table
    ldr     x3, ={normal_block}
    adr     x0, _start
    lsr     x9, x0, #30                 // x9: the image's gigabyte
    add     x5, x22, #8192              // the boot level-2 table...
    orr     x4, x5, #{table_desc}
    str     x4, [x22, x9, lsl #3]       // ...maps the image's gigabyte
    lsl     x6, x9, #30                 // x6: the 2 MiB block's address
    ldr     x7, ={ram_limit}
    mov     x8, #0
.Lmast_fill_l2:
    cmp     x6, x7                      // Normal memory stops at the board's peripherals
    b.hs    .Lmast_l2_done
    orr     x4, x6, x3
    str     x4, [x5, x8, lsl #3]
    add     x6, x6, #{l2_block}
    add     x8, x8, #1
    cmp     x8, #{entries}
    b.lo    .Lmast_fill_l2
.Lmast_l2_done:
    // The stack guard: the 2 MiB block holding it becomes a level-3 table of 4 KiB pages, Normal
    // memory like the block it replaces, except the guard page itself, which stays invalid, so the
    // first store below the stack faults.
    add     x10, x22, #4096             // x10: the level-3 table
    adrp    x11, __mast_stack_guard     // x11: the guard page (page-aligned)
    lsr     x12, x11, #21
    lsl     x12, x12, #21               // x12: the page to map, from the block's base
    ubfx    x13, x11, #21, #9           // x13: the block's index in the level-2 table
    ldr     x14, ={normal_page}
    mov     x8, #0
.Lmast_fill_l3:
    orr     x4, x12, x14
    cmp     x12, x11
    csel    x4, xzr, x4, eq
    str     x4, [x10, x8, lsl #3]
    add     x12, x12, #4096
    add     x8, x8, #1
    cmp     x8, #{entries}
    b.lo    .Lmast_fill_l3
    orr     x4, x10, #{table_desc}
    str     x4, [x5, x13, lsl #3]
    cbz     x19, .Lmast_table_done
    lsr     x2, x19, #30                // the device tree's gigabyte, if the table reaches it
    cmp     x2, x9                      // (and it is not the image's, mapped above)
    b.eq    .Lmast_table_done
    cmp     x2, #{entries}
    b.hs    .Lmast_table_done
    lsl     x4, x2, #30                 // (and it lies wholly below the board's peripherals)
    mov     x10, #{gib}
    add     x4, x4, x10
    cmp     x4, x7
    b.hi    .Lmast_table_done
    orr     x4, x3, x2, lsl #30
    str     x4, [x22, x2, lsl #3]
.Lmast_table_done:
    dsb     sy
    mov     x0, x22
    add     x1, x22, #{boot_tables_bytes}
    bl      .Lmast_dcache_invalidate

    ldr     x0, ={mair}
    msr     mair_el1, x0
    ldr     x0, ={tcr}
    mrs     x1, id_aa64mmfr0_el1
    and     x1, x1, #0xf                // PARange: the CPU's physical address size...
    mov     x2, #5
    cmp     x1, x2
    csel    x1, x1, x2, ls              // ...capped at 48 bits, the most 4 KiB pages reach
    bfi     x0, x1, #32, #3             // TCR_EL1.IPS
    msr     tcr_el1, x0
    msr     ttbr0_el1, x22
    isb
    tlbi    vmalle1                     // drop translations left by earlier software
    dsb     nsh
    isb
    ldr     x0, ={sctlr_mmu_on}
    msr     sctlr_el1, x0
    isb
    ic      iallu                       // discard instructions fetched before the switch
    dsb     nsh
    isb

    // Rust from here on: stacks, zeroed .bss (zeroed through the cache, so no stale line can hide
    // the zeroes), exception vectors. Exceptions run on their own stack (SP_EL1) and everything
    // else on SP_EL0, so an overflow into the guard page, which leaves SP_EL0 unusable, is still
    // reported.
    adrp    x0, __mast_exception_stack_top
    add     x0, x0, :lo12:__mast_exception_stack_top
    mov     sp, x0                      // SPSel is 1: this is SP_EL1
    msr     spsel, #0
    isb
    adrp    x0, __mast_stack_top
    add     x0, x0, :lo12:__mast_stack_top
    mov     sp, x0                      // SP_EL0
    adrp    x0, __mast_bss_start
    add     x0, x0, :lo12:__mast_bss_start
    adrp    x1, __mast_bss_end
    add     x1, x1, :lo12:__mast_bss_end
.Lmast_zero_bss:
    cmp     x0, x1
    b.hs    .Lmast_bss_done
    stp     xzr, xzr, [x0], #16
    b       .Lmast_zero_bss
.Lmast_bss_done:
    adrp    x0, __mast_vectors
    add     x0, x0, :lo12:__mast_vectors
    msr     vbar_el1, x0
    isb
    mov     x0, x19
    mov     x1, x20
    mov     x2, x21
    mov     x29, xzr                    // terminate the frame-pointer chain for debuggers
    mov     x30, xzr
    bl      mast_aarch64_start

.Lmast_park:
    msr     daifset, #0xf
.Lmast_park_loop:
    wfi
    b       .Lmast_park_loop

    // A secondary core: wait for events forever, touching nothing. `wfe` rather than `wfi`: a
    // spurious event (another core's `sev`) only costs one more turn of the loop.
.Lmast_secondary:
    msr     daifset, #0xf
.Lmast_secondary_loop:
    wfe
    b       .Lmast_secondary_loop

// Invalidates the data cache lines covering [x0, x1) to the point of coherency. Clobbers x0, x2, x3.
.Lmast_dcache_invalidate:
    mrs     x3, ctr_el0
    ubfx    x3, x3, #16, #4             // CTR_EL0.DminLine: log2 of the smallest line, in words
    mov     x2, #4
    lsl     x2, x2, x3
    sub     x3, x2, #1
    bic     x0, x0, x3
.Lmast_dcache_invalidate_loop:
    dc      ivac, x0
    add     x0, x0, x2
    cmp     x0, x1
    b.lo    .Lmast_dcache_invalidate_loop
    dsb     sy
    ret
    .ltorg

    // The level-1 translation table (512 entries of 1 GiB each), the level-3 table of the stack
    // guard's 2 MiB block, and the level-2 tables (512 entries of 2 MiB each): the first maps the
    // image's gigabyte (written whole by the code above), the others are handed out by `mmu::map`
    // for gigabytes mixing RAM and devices. The first three are adjacent: the code above clears and
    // invalidates them as one range.
    .section .mast.pagetables, "aw", %nobits
    .balign 4096
    .global __mast_l1_table
__mast_l1_table:
    .space  4096
__mast_l3_table:
    .space  4096
    .global __mast_l2_tables
__mast_l2_tables:
    .space  4096 * {l2_tables}
"#,
    image_flags = const IMAGE_FLAGS,
    mast_header_version = const MAST_HEADER_VERSION,
    hcr_el2 = const HCR_EL2_RW | HCR_EL2_HCD,
    cnthctl_el1_access = const CNTHCTL_EL1_ACCESS,
    cptr_el2 = const CPTR_EL2_NO_TRAPS,
    sctlr_mmu_off = const mmu::SCTLR_MMU_OFF,
    sctlr_mmu_on = const mmu::SCTLR_MMU_ON,
    spsr_el1h = const SPSR_EL1H_MASKED,
    cpacr_fpen = const CPACR_FPEN,
    normal_block = const mmu::NORMAL_BLOCK,
    normal_page = const mmu::NORMAL_PAGE,
    boot_tables_bytes = const 3 * 4096,
    entries = const mmu::ENTRIES,
    text_offset = const TEXT_OFFSET,
    table_desc = const mmu::DESC_TABLE,
    ram_limit = const BUILD_BOARD.ram_limit,
    l2_block = const mmu::L2_BLOCK_SIZE,
    l2_tables = const mmu::L2_TABLES,
    gib = const 1u64 << mmu::GIB_SHIFT,
    mair = const mmu::MAIR,
    tcr = const mmu::TCR,
);
