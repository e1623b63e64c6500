//! The architecture-specific parts: entry state, memory preparation and what each VM exit means.
//! Each module exposes the same functions; the one for the host is re-exported as `arch::*`.

use kvm_ioctls::VcpuExit;
use tender_abi::HYPERCALL_MMIO_BASE;

use crate::violation::{Access, Violation};

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

/// The hypercall a store to `addr` is, if it is in the hypercall window: `Ok(number)`, or `Err(())`
/// for an address in the window that is not a call's (misaligned).
pub fn hypercall_number(addr: u64) -> Option<Result<u64, ()>> {
    const WINDOW: u64 = 8 * tender_abi::HYPERCALL_WINDOW_CALLS;
    let offset = addr.checked_sub(HYPERCALL_MMIO_BASE)?;
    if offset >= WINDOW {
        return None;
    }
    Some(if offset.is_multiple_of(8) { Ok(offset / 8) } else { Err(()) })
}

/// A store outside RAM: a hypercall if it is a 64-bit store into the hypercall window, else a
/// violation.
pub fn classify_mmio_write(addr: u64, data: &[u8]) -> Event {
    match hypercall_number(addr) {
        Some(Ok(number)) => match <[u8; 8]>::try_from(data) {
            Ok(bytes) => Event::Hypercall { number, arg: u64::from_le_bytes(bytes) },
            Err(_) => Event::BadWidth { number, len: data.len() },
        },
        _ => Event::Violation(Violation::UnbackedMemory { addr, len: data.len(), access: Access::Write }),
    }
}

#[cfg(test)]
mod tests {
    use tender_abi::Hypercall;

    use super::*;

    #[test]
    fn hypercall_window_decodes_calls_and_nothing_else() {
        assert_eq!(hypercall_number(Hypercall::ConsoleWrite.mmio_address()), Some(Ok(1)));
        assert_eq!(hypercall_number(Hypercall::BlockFlush.mmio_address()), Some(Ok(7)));
        assert_eq!(hypercall_number(HYPERCALL_MMIO_BASE + 12), Some(Err(())));
        assert_eq!(hypercall_number(HYPERCALL_MMIO_BASE - 8), None);
        assert_eq!(hypercall_number(Hypercall::Ready.mmio_address()), Some(Ok(8)));
        assert_eq!(hypercall_number(Hypercall::Random.mmio_address()), Some(Ok(9)));
        assert_eq!(hypercall_number(HYPERCALL_MMIO_BASE + 8 * 31), Some(Ok(31)));
        assert_eq!(hypercall_number(HYPERCALL_MMIO_BASE + 8 * 32), None);
        assert_eq!(hypercall_number(0x4000_0000), None);
    }

    #[test]
    fn window_stores_are_hypercalls_only_when_64_bits_wide() {
        let addr = Hypercall::Exit.mmio_address();
        assert_eq!(classify_mmio_write(addr, &0x1000u64.to_le_bytes()), Event::Hypercall { number: 2, arg: 0x1000 });
        assert_eq!(classify_mmio_write(addr, &[0; 4]), Event::BadWidth { number: 2, len: 4 });
        let outside = classify_mmio_write(0x1_0000_0000, &[0; 8]);
        assert!(matches!(outside, Event::Violation(Violation::UnbackedMemory { addr: 0x1_0000_0000, .. })));
    }
}
