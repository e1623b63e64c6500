//! CPU exceptions: the interrupt descriptor table, the TSS, and the fault report.
//!
//! All 32 architectural exception vectors are fatal. Each entry stub makes the stack look the same
//! (a dummy error code where the CPU pushes none, then the vector number), the common path saves
//! the general registers and calls [`exception`], which prints a report in words and powers off
//! with status 102 ([`ExitCode::CPU_EXCEPTION`]).
//!
//! Double faults run on their own stack (IST1), so an overflow of the boot stack, which faults on
//! the guard page and then cannot push the page-fault frame, still gets a report.
//!
//! The appliance runs at CPL 3 ([`super::user`]): what arrives there (faults, interrupts, the
//! gate's `ud2`, which the invalid-opcode stub hands to the gate) enters CPL 0 on the kernel stack
//! from the TSS's RSP0. An overflow of the boot stack at CPL 3 is a page fault on its guard page,
//! reported as such from the kernel stack.
//!
//! External interrupts (with the `virtio` feature): vectors 32–254 share one stub that counts the
//! interrupt and returns, and the spurious vector 255 one that only returns. Interrupts are enabled
//! only inside the event loop's `sti; hlt` (in the gate's wait path, see [`super::irq`]), whose caller reads the count to
//! send the end-of-interrupts later. Without the feature, vectors 32 and up have no entries and
//! interrupts stay disabled.
//!
//! The tender platform (`arch::tender::x86_64`) uses this module too, without interrupts.
//!
//! Not supported: resuming after an exception, and backtraces.

use core::cell::UnsafeCell;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, Ordering};

use super::segments::{self, CODE_SELECTOR, TSS_SELECTOR};
use crate::exit::ExitCode;
use crate::fault::x86_64::{self as fault, Exception};

/// The register state the entry stubs save, lowest address first.
#[repr(C)]
pub(super) struct Frame {
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rbp: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rbx: u64,
    rax: u64,
    vector: u64,
    error_code: u64,
    // Pushed by the CPU.
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

core::arch::global_asm!(
    r#"
    .section .text.mast_vectors, "ax", @progbits
    .code64
    .irp vector, 0,1,2,3,4,5,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
    .balign 16
mast_vector_\vector:
    pushq $0
    pushq $\vector
    jmp mast_vector_common
    .endr

    /* Invalid opcode: the gate's `ud2` (see `user`) goes to the gate, anything else is a fault. */
    .balign 16
mast_vector_6:
    cmpq $mast_gate_trap, (%rsp)
    je mast_gate
    pushq $0
    pushq $6
    jmp mast_vector_common

    .irp vector, 8,10,11,12,13,14,17,21,29,30
    .balign 16
mast_vector_\vector:
    pushq $\vector
    jmp mast_vector_common
    .endr

mast_vector_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    cld
    movq %rsp, %rdi
    call {exception}
    ud2

    .section .rodata.mast_vectors, "a", @progbits
    .balign 8
    .global mast_vector_table
mast_vector_table:
    .irp vector, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad mast_vector_\vector
    .endr
    "#,
    exception = sym exception,
    options(att_syntax),
);

unsafe extern "C" {
    /// The entry stub of each exception vector, in vector order.
    static mast_vector_table: [u64; fault::VECTORS];
}

/// The IOAPIC lines' vectors: line `n` raises `DEVICE_VECTORS.start + n`.
#[cfg(all(feature = "virtio", not(feature = "platform-tender")))]
pub(super) const DEVICE_VECTORS: core::ops::Range<u8> = 0x40..0x58;
/// The local APIC timer's vector, in a higher priority class than the devices'.
#[cfg(all(feature = "virtio", not(feature = "platform-tender")))]
pub(super) const TIMER_VECTOR: u8 = 0xf0;
/// The local APIC's spurious-interrupt vector.
#[cfg(all(feature = "virtio", not(feature = "platform-tender")))]
pub(super) const SPURIOUS_VECTOR: u8 = 0xff;
/// Entries in the IDT: every vector once interrupts are in use, else the exceptions only.
#[cfg(all(feature = "virtio", not(feature = "platform-tender")))]
const IDT_ENTRIES: usize = 256;
#[cfg(not(all(feature = "virtio", not(feature = "platform-tender"))))]
const IDT_ENTRIES: usize = fault::VECTORS;

/// Interrupts taken since the event loop last asked; each needs an end-of-interrupt.
#[cfg(all(feature = "virtio", not(feature = "platform-tender")))]
static INTERRUPTS_TAKEN: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// How many interrupts have been taken since the last call (and so need an end-of-interrupt).
#[cfg(all(feature = "virtio", not(feature = "platform-tender")))]
pub(super) fn take_interrupts_taken() -> u64 {
    INTERRUPTS_TAKEN.swap(0, Ordering::Relaxed)
}

// The interrupt stubs. An interrupt only ever arrives during the event loop's `sti; hlt` (IF is
// clear everywhere else), in the gate at CPL 0 on the kernel stack, where the CPU pushes its frame; the stub changes
// nothing but the counter and the flags, which `iretq` restores, so it saves no registers.
#[cfg(all(feature = "virtio", not(feature = "platform-tender")))]
core::arch::global_asm!(
    r#"
    .section .text.mast_interrupts, "ax", @progbits
    .code64
    .balign 16
    .global mast_interrupt_counted
mast_interrupt_counted:
    lock incq {taken}(%rip)
    iretq

    .balign 16
    .global mast_interrupt_spurious
mast_interrupt_spurious:
    iretq
    "#,
    taken = sym INTERRUPTS_TAKEN,
    options(att_syntax),
);

#[cfg(all(feature = "virtio", not(feature = "platform-tender")))]
unsafe extern "C" {
    /// Counts an interrupt and returns (vectors 32–254).
    fn mast_interrupt_counted();
    /// Returns (the spurious vector, which needs no end-of-interrupt).
    fn mast_interrupt_spurious();
}

/// An interrupt-gate descriptor (16 bytes).
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const MISSING: Gate =
        Gate { offset_low: 0, selector: 0, ist: 0, type_attributes: 0, offset_middle: 0, offset_high: 0, reserved: 0 };

    /// A present, ring-0, 64-bit interrupt gate (interrupts stay off in the handler).
    fn interrupt(handler: u64, ist: u8) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: CODE_SELECTOR,
            ist,
            type_attributes: 0x8e,
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

/// The 64-bit task-state segment: RSP0 (the kernel stack) and the interrupt stack table.
#[repr(C, packed(4))]
struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    io_map_base: u16,
}

/// Tables the CPU reads after boot. Written once by [`init`], before `lidt`/`ltr`, on one CPU.
struct CpuTables {
    idt: UnsafeCell<[Gate; IDT_ENTRIES]>,
    tss: UnsafeCell<Tss>,
}

// SAFETY: written only by `init`, once, on the only CPU, before the CPU is told where they are.
unsafe impl Sync for CpuTables {}

static TABLES: CpuTables = CpuTables {
    idt: UnsafeCell::new([Gate::MISSING; IDT_ENTRIES]),
    tss: UnsafeCell::new(Tss {
        reserved0: 0,
        rsp: [0; 3],
        reserved1: 0,
        ist: [0; 7],
        reserved2: 0,
        reserved3: 0,
        io_map_base: size_of::<Tss>() as u16,
    }),
};

/// The operand of `lidt`.
#[repr(C, packed)]
struct TablePointer {
    limit: u16,
    base: u64,
}

/// Installs the TSS (with the kernel and double-fault stacks) and the IDT. Called once, early in
/// boot.
pub(super) fn init() {
    let tss = TABLES.tss.get();
    let idt = TABLES.idt.get();
    // SAFETY: single CPU, called once before the CPU reads these tables; the GDT slot at
    // TSS_SELECTOR is reserved for this descriptor by the boot code; the vector table holds the
    // addresses of the stubs above, and the interrupt stubs are the functions declared above.
    unsafe {
        (*tss).rsp[0] = &raw const segments::mast_kernel_stack_top as u64;
        (*tss).ist[0] = &raw const segments::mast_fault_stack_top as u64;
        let base = tss as u64;
        let limit = size_of::<Tss>() as u64 - 1;
        let gdt = &raw mut segments::mast_gdt;
        let slot = TSS_SELECTOR as usize / 8;
        // An available 64-bit TSS (type 9), present, with the base split as the format requires.
        (*gdt)[slot] = (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (0x89 << 40)
            | (((limit >> 16) & 0xf) << 48)
            | (((base >> 24) & 0xff) << 56);
        (*gdt)[slot + 1] = base >> 32;
        core::arch::asm!("ltr {0:x}", in(reg) TSS_SELECTOR, options(nostack, preserves_flags));

        let stubs = &raw const mast_vector_table;
        for (vector, gate) in (*idt).iter_mut().enumerate().take(fault::VECTORS) {
            let ist = if vector == fault::DOUBLE_FAULT as usize { 1 } else { 0 };
            *gate = Gate::interrupt((*stubs)[vector], ist);
        }
        #[cfg(all(feature = "virtio", not(feature = "platform-tender")))]
        for (vector, gate) in (*idt).iter_mut().enumerate().skip(fault::VECTORS) {
            let stub = if vector == usize::from(SPURIOUS_VECTOR) {
                mast_interrupt_spurious as *const () as u64
            } else {
                mast_interrupt_counted as *const () as u64
            };
            *gate = Gate::interrupt(stub, 0);
        }
        let pointer = TablePointer { limit: size_of::<[Gate; IDT_ENTRIES]>() as u16 - 1, base: idt as u64 };
        core::arch::asm!("lidt [{0}]", in(reg) &raw const pointer, options(readonly, nostack, preserves_flags));
    }
}

/// Set by the first exception, so that a fault while reporting one powers off at once instead of
/// recursing.
static REPORTING: AtomicBool = AtomicBool::new(false);

/// Called by the common entry path with the saved registers; never returns.
extern "C" fn exception(frame: &Frame) -> ! {
    // Read CR2 first: a page fault while reporting would overwrite it.
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects; this runs in ring 0.
    unsafe { core::arch::asm!("mov {0}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
    if REPORTING.swap(true, Ordering::Relaxed) {
        super::exit(ExitCode::CPU_EXCEPTION);
    }
    let exception = Exception { vector: frame.vector as u8, error_code: frame.error_code };
    crate::console::emergency_print(format_args!("\nmast: CPU exception: {exception}\n"));
    // CR2 is meaningful for page faults, and for a double fault that follows one (a stack
    // overflow: the page-fault frame could not be pushed onto the guard page).
    if exception.vector == fault::PAGE_FAULT || exception.vector == fault::DOUBLE_FAULT {
        match fault::address_hint(cr2, &stack_guards()) {
            Some(hint) => crate::console::emergency_print(format_args!("  CR2={cr2:#x}: probably {hint}\n")),
            None => crate::console::emergency_print(format_args!("  CR2={cr2:#x}\n")),
        }
    }
    let f = frame;
    crate::console::emergency_print(format_args!(
        "  RIP={:#x} CS={:#x} RFLAGS={:#x} RSP={:#x} SS={:#x} ERROR={:#x}\n  \
         RAX={:#x} RBX={:#x} RCX={:#x} RDX={:#x} RSI={:#x} RDI={:#x} RBP={:#x}\n  \
         R8={:#x} R9={:#x} R10={:#x} R11={:#x} R12={:#x} R13={:#x} R14={:#x} R15={:#x}\n",
        f.rip,
        f.cs,
        f.rflags,
        f.rsp,
        f.ss,
        f.error_code,
        f.rax,
        f.rbx,
        f.rcx,
        f.rdx,
        f.rsi,
        f.rdi,
        f.rbp,
        f.r8,
        f.r9,
        f.r10,
        f.r11,
        f.r12,
        f.r13,
        f.r14,
        f.r15,
    ));
    crate::boot::power_off(ExitCode::CPU_EXCEPTION)
}

fn stack_guards() -> [Range<u64>; 3] {
    let boot_guard = &raw const segments::mast_stack_guard as u64;
    let fault_guard = &raw const segments::mast_fault_stack_guard as u64;
    let kernel_guard = &raw const segments::mast_kernel_stack_guard as u64;
    [boot_guard..boot_guard + 4096, fault_guard..fault_guard + 4096, kernel_guard..kernel_guard + 4096]
}
