//! The tender's x86_64 half: the 64-bit entry ([`boot`]), the stacks' guard pages ([`guard`]), the
//! QEMU port's exception vectors ([`idt`]) and drop to CPL 3 ([`user`], both shared source), the
//! hypercall store and the TSC.
//!
//! After installing the vectors the runtime runs at CPL 3, where PVM (nested KVM) runs guest code
//! natively instead of emulating it; hypercalls are then stores to the tender's window, which
//! works at any privilege level (the identity map is user-accessible).

mod boot;
mod guard;
#[path = "../../x86_64/idt.rs"]
mod idt;
#[path = "../../x86_64/segments.rs"]
mod segments;
#[path = "../../x86_64/user.rs"]
mod user;

pub(crate) use user::privileged;

use core::arch::x86_64::_rdtsc;

use super::abi;
use crate::{exit::ExitCode, tsc::PvclockSnapshot};

/// Called by [`boot`] on the boot stack with the GDT loaded: unmaps the stacks' guard pages and
/// installs the exception vectors first, so that everything after them reports its faults (stack
/// overflows included), then continues in the shared tender code at CPL 3.
extern "C" fn start(boot_info: u64, entry_tsc: u64) -> ! {
    guard::unmap_stack_guards();
    idt::init();
    user::enter(start_at_cpl3, boot_info, entry_tsc)
}

extern "C" fn start_at_cpl3(boot_info: u64, entry_tsc: u64) -> ! {
    super::tender_start(boot_info, entry_tsc)
}

/// What [`idt`] calls after a fault report.
fn exit(status: ExitCode) -> ! {
    super::exit(status)
}

/// A 64-bit store of the argument block's address to the call's slot in the hypercall window
/// (works at CPL 3, where `out` to the tender's ports would need IOPL).
pub(super) fn hypercall(call: abi::Hypercall, block: u64) {
    // SAFETY: the window belongs to the tender by the ABI and is mapped (user-accessible) in its
    // identity map; the store exits to the tender, which reads and writes only the argument block
    // named (and memory it names), both owned by the caller for the duration. No `nomem`: the
    // compiler must assume the call reads and writes that memory.
    unsafe {
        core::arch::asm!(
            "mov qword ptr [{at}], {block}",
            block = in(reg) block,
            at = in(reg) call.mmio_address(),
            options(nostack, preserves_flags)
        )
    };
}

/// The TSC.
pub(super) fn ticks() -> u64 {
    // SAFETY: `rdtsc` only reads the time-stamp counter; CR4.TSD is clear at the tender's entry.
    unsafe { _rdtsc() }
}

/// The TSC's scaling: time since the tender created the VM, at the tender's `tsc_khz`.
pub(super) fn clock(info: &abi::BootInfo) -> PvclockSnapshot {
    PvclockSnapshot { tsc_timestamp: info.tsc_at_creation, ..crate::tsc::fixed_frequency(info.tsc_khz) }
}

/// `cli; hlt` forever (at CPL 0, through the gate).
pub(super) fn halt_forever() -> ! {
    extern "C" fn at_cpl0(_: u64) {
        loop {
            // SAFETY: stops this CPU with interrupts off; nothing else is affected. This runs at
            // CPL 0 (the gate).
            unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
        }
    }
    user::privileged(at_cpl0, 0);
    unreachable!("the CPU halts for good")
}
