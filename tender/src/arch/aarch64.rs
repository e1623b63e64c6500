//! aarch64 (KVM on Arm hosts): RAM at 1 GiB, entry at EL1h with the MMU off, hypercalls are 64-bit
//! stores to the hypercall window (an MMIO exit each).
//!
//! Built and unit-tested on x86_64 hosts (`cargo check -p tender --target aarch64-unknown-linux-gnu`);
//! it runs only on an Arm host with KVM. The register encodings below are pure and tested anywhere.

use tender_abi::{HYPERCALL_MMIO_BASE, Hypercall};

/// Guest RAM starts at 1 GiB on aarch64, as on QEMU `virt`.
pub const RAM_BASE: u64 = tender_abi::ram_base(true);

/// The largest RAM: everything below the hypercall window is free, above it is up to the guest's
/// 40-bit IPA space; 3 GiB keeps it simple and far above what appliances ask.
pub const MAX_RAM: u64 = 3 << 30;

// KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE (linux/arch/arm64/include/uapi/asm/kvm.h).
const KVM_REG_ARM64: u64 = 0x6000_0000_0000_0000;
const KVM_REG_SIZE_U64: u64 = 0x0030_0000_0000_0000;
const KVM_REG_ARM_CORE: u64 = 0x0010 << 16;

/// The `KVM_{GET,SET}_ONE_REG` id of the core register at byte `offset` in `struct kvm_regs`.
pub const fn core_reg_id(offset: u64) -> u64 {
    KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | (offset / 4)
}

/// `kvm_regs` starts with `user_pt_regs { regs[31], sp, pc, pstate }`.
pub const X0: u64 = core_reg_id(0);
pub const PC: u64 = core_reg_id(32 * 8);
pub const PSTATE: u64 = core_reg_id(33 * 8);

/// EL1 using SP_EL1 (EL1h), with debug, SError, IRQ and FIQ masked.
pub const ENTRY_PSTATE: u64 = 0x3c0 | 0x5;

/// The registers of the ABI's entry state, as (id, value) pairs.
pub fn entry_regs(entry: u64, boot_info: u64) -> [(u64, u64); 3] {
    [(PSTATE, ENTRY_PSTATE), (PC, entry), (X0, boot_info)]
}

const _: () = assert!(Hypercall::BlockFlush.mmio_address() < HYPERCALL_MMIO_BASE + 64);

#[cfg(target_arch = "aarch64")]
pub use kvm::*;

#[cfg(target_arch = "aarch64")]
mod kvm {
    use anyhow::{Context, Result, bail};
    use kvm_bindings::kvm_vcpu_init;
    use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

    use super::*;
    use crate::{
        arch::Event,
        guest::Ram,
        violation::{Access, Violation},
    };

    pub fn check_ram_size(size: u64) -> Result<()> {
        if size == 0 || !size.is_multiple_of(tender_abi::PAGE_SIZE) || size > MAX_RAM {
            bail!("aarch64 guests need RAM in whole pages, at most {} MiB", MAX_RAM >> 20);
        }
        Ok(())
    }

    /// Nothing to prepare: the guest starts with the MMU off.
    pub fn prepare_memory(_ram: &Ram) -> Result<()> {
        Ok(())
    }

    /// Initialises the vCPU as the host's preferred target. The guest reads its counter frequency
    /// from `CNTFRQ_EL0` and counts from its own virtual counter, so there is no TSC to pass.
    pub fn init_vcpu(_kvm: &Kvm, vm: &VmFd, vcpu: &VcpuFd) -> Result<crate::layout::GuestClock> {
        let mut init = kvm_vcpu_init::default();
        vm.get_preferred_target(&mut init).context("KVM_ARM_PREFERRED_TARGET")?;
        vcpu.vcpu_init(&init).context("KVM_ARM_VCPU_INIT")?;
        // The virtual counter starts at zero with the vCPU, so the guest's zero is now.
        Ok(crate::layout::GuestClock {
            wall_clock_at_creation_ns: crate::layout::host_wall_clock_ns(),
            ..Default::default()
        })
    }

    pub fn set_entry(vcpu: &VcpuFd, entry: u64, boot_info: u64) -> Result<()> {
        for (id, value) in entry_regs(entry, boot_info) {
            vcpu.set_one_reg(id, &value.to_le_bytes()).with_context(|| format!("KVM_SET_ONE_REG {id:#x}"))?;
        }
        Ok(())
    }

    pub fn instruction_pointer(vcpu: &VcpuFd) -> Option<u64> {
        let mut bytes = [0u8; 8];
        vcpu.get_one_reg(PC, &mut bytes).ok().map(|_| u64::from_le_bytes(bytes))
    }

    pub fn classify(exit: VcpuExit<'_>) -> Event {
        match exit {
            VcpuExit::MmioWrite(addr, data) => crate::arch::classify_mmio_write(addr, data),
            VcpuExit::MmioRead(addr, data) => {
                Event::Violation(Violation::UnbackedMemory { addr, len: data.len(), access: Access::Read })
            }
            other => crate::arch::classify_common(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_register_ids_match_the_kernel_headers() {
        // Values as QEMU and Firecracker compute them for arm64.
        assert_eq!(X0, 0x6030_0000_0010_0000);
        assert_eq!(PC, 0x6030_0000_0010_0040);
        assert_eq!(PSTATE, 0x6030_0000_0010_0042);
        assert_eq!(ENTRY_PSTATE, 0x3c5);
        let regs = entry_regs(0x4020_0000, 0x4000_1000);
        assert!(regs.contains(&(PC, 0x4020_0000)) && regs.contains(&(X0, 0x4000_1000)));
    }
}
