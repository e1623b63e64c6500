//! The architecture-specific parts: entry state, memory preparation and what each VM exit means.
//! Each module exposes the same functions; the one for the host is re-exported as `arch::*`.

use kvm_ioctls::VcpuExit;

use crate::violation::Violation;

#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub mod aarch64;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

#[cfg(target_arch = "aarch64")]
pub use self::aarch64::{
    RAM_BASE, check_ram_size, classify, init_vcpu, instruction_pointer, prepare_memory, set_entry,
};
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::{RAM_BASE, check_ram_size, classify, init_vcpu, instruction_pointer, prepare_memory, set_entry};

/// What a VM exit means for the run loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Hypercall `number` with its argument (the argument block's guest-physical address).
    Hypercall {
        number: u64,
        arg: u64,
    },
    /// A store to a hypercall's port or address with the wrong width.
    BadWidth {
        number: u64,
        len: usize,
    },
    /// A signal interrupted `KVM_RUN`: run again.
    Interrupted,
    /// KVM could not emulate an instruction; the suberror is in `kvm_run`.
    InternalError,
    Violation(Violation),
}

/// The exits that mean the same on every architecture.
pub fn classify_common(exit: VcpuExit<'_>) -> Event {
    match exit {
        VcpuExit::Hlt => Event::Violation(Violation::Halted),
        VcpuExit::Shutdown => Event::Violation(Violation::Shutdown),
        VcpuExit::Intr => Event::Interrupted,
        VcpuExit::InternalError => Event::InternalError,
        VcpuExit::FailEntry(reason, _cpu) => Event::Violation(Violation::FailEntry { reason }),
        VcpuExit::SystemEvent(kind, _) => Event::Violation(Violation::UnexpectedExit {
            what: format!("system event {kind} (PSCI power-off or reset?)"),
        }),
        other => Event::Violation(Violation::UnexpectedExit { what: format!("{other:?}") }),
    }
}
