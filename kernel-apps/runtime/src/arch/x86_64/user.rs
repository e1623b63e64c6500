//! CPL 3: the drop from the privileged boot into user mode, and the one gate back (a known `ud2`).
//!
//! # Why
//! Under PVM (the software-assisted nested KVM of the machines this is developed on), guest code
//! at CPL 0 is emulated instruction by instruction (~2 µs each), while CPL 3 code runs natively.
//! So the runtime does its privileged set-up at CPL 0 (page tables, GDT, TSS, IDT, clock MSRs),
//! then [`enter`]s CPL 3 and runs the shared boot path and the appliance there. On real hardware
//! and ordinary KVM the difference is a few cycles per gate crossing.
//!
//! # At CPL 3
//! - Interrupts stay off (IF clear) as at CPL 0, and IOPL is 0: port I/O, `cli`/`sti` and `hlt`
//!   are privileged. (IOPL 3 would be no help: PVM runs guest user code with the host's IOPL 0 —
//!   `in` at CPL 3 raises #GP and the pushed RFLAGS shows IOPL 0 — so the QEMU port's console and
//!   `isa-debug-exit` go through the gate, a console line per trip, and the tender's hypercalls
//!   are stores to its window.)
//! - Every mapped page is user-accessible (the U/S bit is set throughout the identity maps); the
//!   guard pages stay unmapped, so a stack overflow still faults.
//! - Faults and interrupts enter CPL 0 on the kernel stack (TSS.RSP0), through the existing
//!   vectors; a fault's report and exit run there.
//!
//! # The gate
//! What must stay privileged goes through one gate, whose handler is a few instructions (CPL 0
//! code is the slow kind). The gate is a `ud2` at a known address, `mast_gate_trap`, which the
//! invalid-opcode vector ([`super::idt`]) recognises by the faulting RIP and hands to
//! `mast_gate`, skipping the `ud2`. Not `int n` with a DPL 3 gate: under PVM `int 0x80` and
//! `int 0x81` at CPL 3 raise #UD instead of reaching the guest's IDT entry, and at CPL 0 PVM's
//! instruction emulator fails on `int` ("KVM internal error"). Two services, by RAX:
//! - RAX = 0, [`halt`]: send RDI end-of-interrupts to the x2APIC, write the MSR in ESI (if not 0)
//!   with RDX (the timer's deadline or count), then `sti; hlt; cli`. The event loop's sleep.
//! - RAX = a function, [`privileged`]: call it with RDI at CPL 0 (a console line, bringing up
//!   the local APIC, powering off, stopping the CPU).

/// The user-mode selectors. The GDT's user data and code sit at 0x28 and 0x30 (with RPL 3: 0x2b
/// and 0x33), where Linux has them: PVM runs guest user code on the host's user segments and
/// reports CS as 0x33 whatever the guest's GDT says, so these agree with what it shows.
pub(super) const USER_DATA_SELECTOR: u16 = 0x2b;
pub(super) const USER_CODE_SELECTOR: u16 = 0x33;
/// RFLAGS at CPL 3: only the reserved bit 1 (IF clear, IOPL 0).
const USER_RFLAGS: u64 = 0x2;
/// The x2APIC end-of-interrupt MSR.
const X2APIC_EOI_MSR: u32 = 0x80b;

core::arch::global_asm!(
    r#"
    .section .text.mast_gate, "ax", @progbits
    .code64
    /* Called with the service in RAX and its arguments; the `ud2` is the gate. */
    .balign 16
    .global mast_gate_call
mast_gate_call:
    .global mast_gate_trap
mast_gate_trap:
    ud2
    ret

    /* Entered from the invalid-opcode vector with the CPU's frame on the kernel stack, when the
     * faulting instruction is the `ud2` above: resume after it. */
    .balign 16
    .global mast_gate
mast_gate:
    addq $2, (%rsp)
    testq %rax, %rax
    jnz 3f
    movq %rdx, %r8
1:  testq %rdi, %rdi
    jz 2f
    movl ${eoi_msr}, %ecx
    xorl %eax, %eax
    xorl %edx, %edx
    wrmsr
    decq %rdi
    jmp 1b
2:  testl %esi, %esi
    jz 4f
    movl %esi, %ecx
    movl %r8d, %eax
    movq %r8, %rdx
    shrq $32, %rdx
    wrmsr
4:  sti
    hlt
    cli
    iretq
    /* The CPU aligned RSP to 16 bytes before pushing its five-word frame: realign for the call. */
3:  subq $8, %rsp
    cld
    callq *%rax
    addq $8, %rsp
    iretq
    "#,
    eoi_msr = const X2APIC_EOI_MSR,
    options(att_syntax),
);

/// Continues at `next(first, second)` at CPL 3, on the current stack, with interrupts off.
/// Called once, at the end of the privileged boot.
pub(super) fn enter(next: extern "C" fn(u64, u64) -> !, first: u64, second: u64) -> ! {
    // SAFETY: the GDT holds the user segments at these selectors, the TSS's RSP0 and the IDT are
    // installed (faults and interrupts at CPL 3 have somewhere to go), and every page is
    // user-accessible. The frame leaves RSP as a call would (8 below a 16-byte boundary), on the
    // same stack: nothing above it is used again.
    unsafe {
        core::arch::asm!(
            "mov {top}, rsp",
            "and {top}, -16",
            "sub {top}, 8",
            "push {ss}",
            "push {top}",
            "push {rflags}",
            "push {cs}",
            "push {next}",
            "iretq",
            ss = const USER_DATA_SELECTOR as u64,
            rflags = const USER_RFLAGS,
            cs = const USER_CODE_SELECTOR as u64,
            next = in(reg) next,
            in("rdi") first,
            in("rsi") second,
            top = in(reg) 0u64,
            options(noreturn),
        )
    }
}

/// Runs `function(argument)` at CPL 0: through the gate from CPL 3, directly when already there
/// (boot, fault reports). Each call is a trip through emulated code under PVM: keep `function`
/// short and calls rare.
pub(crate) fn privileged(function: extern "C" fn(u64), argument: u64) {
    // Already privileged: no trip through a fault.
    if current_privilege_level() == 0 {
        function(argument);
        return;
    }
    // SAFETY: the gate calls `function` with `argument` on the kernel stack at CPL 0 and returns;
    // `function` follows the C ABI, whose caller-saved registers are declared clobbered.
    unsafe {
        core::arch::asm!(
            "call mast_gate_call",
            inout("rax") function as usize => _,
            inout("rdi") argument => _,
            clobber_abi("C"),
        )
    };
}

/// The privilege level the CPU runs at: the low bits of CS.
fn current_privilege_level() -> u16 {
    let cs: u16;
    // SAFETY: reading CS has no side effects and is allowed at every privilege level.
    unsafe { core::arch::asm!("mov {0:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags)) };
    cs & 3
}

/// The event loop's sleep through the gate (from CPL 3 only: see [`privileged`]): `eois` x2APIC end-of-interrupts, then the MSR write
/// `msr = value` if `msr` is not 0 (arming the timer), then `sti; hlt; cli`.
#[cfg(all(feature = "virtio", not(feature = "platform-tender")))]
pub(super) fn halt(eois: u64, msr: u32, value: u64) {
    // SAFETY: the gate's wait path writes only the x2APIC EOI register (as many times as the
    // caller counted interrupts taken) and the MSR the caller names (the timer's), then halts with
    // interrupts enabled for exactly the `hlt`; every vector has a gate and interrupts return to
    // it on the kernel stack.
    unsafe {
        core::arch::asm!(
            "call mast_gate_call",
            inout("rax") 0u64 => _,
            inout("rdi") eois => _,
            in("esi") msr,
            inout("rdx") value => _,
            out("rcx") _,
            out("r8") _,
        )
    };
}
