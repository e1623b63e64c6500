//! The tender's x86_64 half: the 64-bit entry ([`boot`]), the QEMU port's exception vectors
//! ([`idt`], shared source), the hypercall instruction and the TSC.

mod boot;
#[path = "../../x86_64/idt.rs"]
mod idt;

use core::arch::x86_64::_rdtsc;

use super::abi;
use crate::{exit::ExitCode, tsc::PvclockSnapshot};

/// Called by [`boot`] on the boot stack with the GDT loaded: installs the exception vectors first,
/// so that everything after them reports its faults, then continues in the shared tender code.
extern "C" fn start(boot_info: u64, entry_tsc: u64) -> ! {
    idt::init();
    super::tender_start(boot_info, entry_tsc)
}

/// What [`idt`] calls after a fault report.
fn exit(status: ExitCode) -> ! {
    super::exit(status)
}

/// `out dx, eax`: the port names the call, EAX carries the argument block's address.
pub(super) fn hypercall(call: abi::Hypercall, block: u64) {
    // Argument blocks live in RAM, which the tender keeps below 4 GiB; a block above could not be
    // named in EAX, and the truncated address would be another block.
    debug_assert!(block <= u64::from(u32::MAX), "hypercall argument block above 4 GiB");
    // SAFETY: the port belongs to the tender by the ABI; the tender reads and writes only the
    // argument block named (and memory it names), both owned by the caller for the duration. No
    // `nomem`: the compiler must assume the call reads and writes that memory.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") call.port(), in("eax") block as u32, options(nostack, preserves_flags))
    };
}

/// The TSC.
pub(super) fn ticks() -> u64 {
    // SAFETY: `rdtsc` only reads the time-stamp counter; CR4.TSD is clear at the tender's entry.
    unsafe { _rdtsc() }
}

/// The TSC's scaling: it counts from about zero at VM creation at the tender's `tsc_khz`.
pub(super) fn clock(info: &abi::BootInfo) -> PvclockSnapshot {
    crate::tsc::fixed_frequency(info.tsc_khz)
}

/// `cli; hlt` forever.
pub(super) fn halt_forever() -> ! {
    loop {
        // SAFETY: stops this CPU with interrupts off; nothing else is affected.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
