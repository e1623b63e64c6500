//! x86_64: the guest starts in 64-bit long mode on the tender's identity map of its RAM; hypercalls
//! are `out dx, eax` to the hypercall ports.

use anyhow::{Context, Result, bail};
use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, Msrs, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use tender_abi::{HYPERCALL_MMIO_BASE, HYPERCALL_PORT_BASE, PAGE_TABLES_OFFSET};

use super::Event;
use crate::{
    guest::Ram,
    layout::GuestClock,
    violation::{Access, Violation},
};

/// Guest RAM starts at 0 on x86_64.
pub const RAM_BASE: u64 = tender_abi::ram_base(false);

const TWO_MIB: u64 = 2 << 20;
/// One page directory of 2 MiB pages maps 1 GiB (the ABI gives the page tables 16 KiB: PML4, PDPT,
/// PD and the PT that maps the first 2 MiB without page 0), and the hypercall window sits at
/// 1008 MiB: RAM ends below it.
pub const MAX_RAM: u64 = HYPERCALL_MMIO_BASE;

/// Why RAM of this size cannot be identity-mapped.
pub fn check_ram_size(size: u64) -> Result<()> {
    if size == 0 || !size.is_multiple_of(TWO_MIB) || size > MAX_RAM {
        bail!(
            "x86_64 guests need RAM in whole 2 MiB pages, at most {} MiB (asked for {} KiB)",
            MAX_RAM >> 20,
            size >> 10
        );
    }
    Ok(())
}

// Page-table entry bits. Every entry is user-accessible, so a guest may run its code at CPL 3 on
// these tables: under PVM nested KVM, CPL 0 code is emulated instruction by instruction while CPL 3
// code runs natively (see tender-abi's docs).
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const HUGE: u64 = 1 << 7;
const TABLE: u64 = PRESENT | WRITABLE | USER;

/// The four page-table pages (PML4, PDPT, PD, PT), in that order from [`PAGE_TABLES_OFFSET`], that
/// identity-map `[0, ram_size)`: the first 2 MiB in 4 KiB pages without page 0 (so a null pointer
/// faults), the rest in 2 MiB pages; plus the 2 MiB page of the hypercall window (not RAM: every
/// store there exits). Nothing else is mapped.
pub fn identity_map(ram_size: u64) -> [u64; 4 * 512] {
    let mut tables = [0u64; 4 * 512];
    let table_addr = |index: u64| RAM_BASE + PAGE_TABLES_OFFSET + index * 4096;
    let (pml4, pdpt, pd, pt) = (0, 512, 1024, 1536);
    tables[pml4] = table_addr(1) | TABLE;
    tables[pdpt] = table_addr(2) | TABLE;
    tables[pd] = table_addr(3) | TABLE;
    for page in 1..512u64 {
        tables[pt + page as usize] = (page * 4096) | TABLE;
    }
    for huge in 1..ram_size.min(MAX_RAM) / TWO_MIB {
        tables[pd + huge as usize] = (huge * TWO_MIB) | TABLE | HUGE;
    }
    tables[pd + (HYPERCALL_MMIO_BASE / TWO_MIB) as usize] = HYPERCALL_MMIO_BASE | TABLE | HUGE;
    tables
}

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// The special registers of the ABI's entry state, starting from the vCPU's reset state `sregs`
/// (which keeps KVM's valid task register and LDT).
pub fn long_mode_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x08,
        type_: 0xb, // execute/read, accessed
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        ..Default::default()
    };
    let data = kvm_segment { selector: 0x10, type_: 0x3, db: 1, l: 0, ..code }; // read/write, accessed
    sregs.cs = code;
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    // No GDT or IDT in memory: the guest loads its own. An exception before it does is a triple fault.
    sregs.gdt.base = 0;
    sregs.gdt.limit = 0;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_PG;
    sregs.cr3 = RAM_BASE + PAGE_TABLES_OFFSET;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.efer = EFER_LME | EFER_LMA;
    sregs
}

/// The general registers of the entry state.
pub fn entry_regs(entry: u64, boot_info: u64) -> kvm_regs {
    kvm_regs { rip: entry, rdi: boot_info, rflags: 0x2, ..Default::default() }
}

/// Writes the identity map into RAM.
pub fn prepare_memory(ram: &Ram) -> Result<()> {
    let tables = identity_map(ram.size);
    let bytes: Vec<u8> = tables.iter().flat_map(|entry| entry.to_le_bytes()).collect();
    // Only the pages that hold entries are written: the PT, PD, PDPT and PML4 are all used.
    ram.write_bytes(RAM_BASE + PAGE_TABLES_OFFSET, &bytes)
}

/// `IA32_TIME_STAMP_COUNTER`.
const MSR_TSC: u32 = 0x10;

/// Per-vCPU setup that does not depend on the guest: CPUID, and the TSC started from 0. Returns
/// the TSC frequency and the guest's TSC now, from which the guest counts its time.
///
/// Under PVM nested KVM the write is accepted but has no effect: PVM has no hardware TSC offset, so
/// the guest reads the host's TSC (seconds since the host booted). The TSC read back then is the
/// host's, which is what `BootInfo::tsc_at_creation` is for.
pub fn init_vcpu(kvm: &Kvm, _vm: &VmFd, vcpu: &VcpuFd) -> Result<GuestClock> {
    let cpuid: CpuId = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).context("KVM_GET_SUPPORTED_CPUID")?;
    vcpu.set_cpuid2(&cpuid).context("KVM_SET_CPUID2")?;
    let tsc = Msrs::from_entries(&[kvm_msr_entry { index: MSR_TSC, data: 0, ..Default::default() }])
        .context("building the TSC MSR list")?;
    let _ = vcpu.set_msrs(&tsc);
    let tsc_khz = tsc_khz(vcpu, &cpuid)?;
    // Back to back, so the guest's zero and the host's time name the same moment.
    let tsc_at_creation = guest_tsc_now(vcpu);
    let wall_clock_at_creation_ns = crate::layout::host_wall_clock_ns();
    Ok(GuestClock { tsc_khz, tsc_at_creation, wall_clock_at_creation_ns })
}

/// The guest's TSC as KVM reads it (`IA32_TIME_STAMP_COUNTER`), or the host's if KVM will not say:
/// under PVM the two are the same counter.
fn guest_tsc_now(vcpu: &VcpuFd) -> u64 {
    let mut msrs = match Msrs::from_entries(&[kvm_msr_entry { index: MSR_TSC, ..Default::default() }]) {
        Ok(msrs) => msrs,
        // SAFETY: `rdtsc` only reads the host's time-stamp counter.
        Err(_) => return unsafe { core::arch::x86_64::_rdtsc() },
    };
    match vcpu.get_msrs(&mut msrs) {
        Ok(1) => msrs.as_slice()[0].data,
        // SAFETY: as above.
        _ => unsafe { core::arch::x86_64::_rdtsc() },
    }
}

/// The TSC frequency: KVM's (`KVM_GET_TSC_KHZ`, what the guest's TSC really counts at); failing
/// that, CPUID leaf 0x15 (crystal ratio) or 0x16 (base MHz), as the guest would compute it.
fn tsc_khz(vcpu: &VcpuFd, cpuid: &CpuId) -> Result<u64> {
    if let Ok(khz) = vcpu.get_tsc_khz()
        && khz > 0
    {
        return Ok(u64::from(khz));
    }
    let leaf = |function: u32| cpuid.as_slice().iter().find(|e| e.function == function && e.index == 0).copied();
    if let Some(e) = leaf(0x15)
        && e.eax != 0
        && e.ecx != 0
    {
        return Ok(u64::from(e.ecx) * u64::from(e.ebx) / u64::from(e.eax) / 1000);
    }
    if let Some(e) = leaf(0x16)
        && e.eax != 0
    {
        return Ok(u64::from(e.eax) * 1000);
    }
    bail!("cannot tell the TSC frequency: KVM_GET_TSC_KHZ failed and CPUID leaves 0x15/0x16 are empty")
}

/// Puts the vCPU in the ABI's entry state.
pub fn set_entry(vcpu: &VcpuFd, entry: u64, boot_info: u64) -> Result<()> {
    let sregs = vcpu.get_sregs().context("KVM_GET_SREGS")?;
    vcpu.set_sregs(&long_mode_sregs(sregs)).context("KVM_SET_SREGS")?;
    // SSE usable at once, with no `ldmxcsr` (which PVM has been seen to fail on) in the guest.
    let fpu = kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() };
    vcpu.set_fpu(&fpu).context("KVM_SET_FPU")?;
    vcpu.set_regs(&entry_regs(entry, boot_info)).context("KVM_SET_REGS")?;
    Ok(())
}

/// Where the guest was, for violation reports.
pub fn instruction_pointer(vcpu: &VcpuFd) -> Option<u64> {
    vcpu.get_regs().ok().map(|regs| regs.rip)
}

/// Ports `HYPERCALL_PORT_BASE + n` for these `n` are hypercalls (known or not): a store to one
/// with no call behind it is reported as an unknown hypercall rather than a stray port.
pub const HYPERCALL_PORTS: u16 = 0x100;

/// What an exit means.
pub fn classify(exit: VcpuExit<'_>) -> Event {
    match exit {
        VcpuExit::IoOut(port, data) if port.wrapping_sub(HYPERCALL_PORT_BASE) < HYPERCALL_PORTS => {
            let number = u64::from(port - HYPERCALL_PORT_BASE);
            match <[u8; 4]>::try_from(data) {
                Ok(bytes) => Event::Hypercall { number, arg: u64::from(u32::from_le_bytes(bytes)) },
                Err(_) => Event::BadWidth { number, len: data.len() },
            }
        }
        VcpuExit::IoOut(port, data) => {
            Event::Violation(Violation::Port { port, len: data.len(), access: Access::Write })
        }
        VcpuExit::IoIn(port, data) => Event::Violation(Violation::Port { port, len: data.len(), access: Access::Read }),
        VcpuExit::MmioRead(addr, data) => {
            Event::Violation(Violation::UnbackedMemory { addr, len: data.len(), access: Access::Read })
        }
        VcpuExit::MmioWrite(addr, data) => super::classify_mmio_write(addr, data),
        other => super::classify_common(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the tables like the MMU: the physical address `virt` maps to, if any.
    fn translate(tables: &[u64; 2048], virt: u64) -> Option<u64> {
        let table = |addr: u64| ((addr & !0xfff) - PAGE_TABLES_OFFSET) as usize / 8;
        let pml4e = tables[(virt >> 39 & 511) as usize];
        if pml4e & PRESENT == 0 {
            return None;
        }
        let pdpte = tables[table(pml4e) + (virt >> 30 & 511) as usize];
        if pdpte & PRESENT == 0 {
            return None;
        }
        let pde = tables[table(pdpte) + (virt >> 21 & 511) as usize];
        if pde & PRESENT == 0 {
            return None;
        }
        if pde & HUGE != 0 {
            return Some((pde & !(TWO_MIB - 1)) + (virt & (TWO_MIB - 1)));
        }
        let pte = tables[table(pde) + (virt >> 12 & 511) as usize];
        (pte & PRESENT != 0).then_some((pte & !0xfff) + (virt & 0xfff))
    }

    #[test]
    fn the_identity_map_covers_ram_except_page_zero_and_nothing_else() {
        let ram = 16 << 20;
        let tables = identity_map(ram);
        assert_eq!(translate(&tables, 0), None, "page 0 is a guard");
        assert_eq!(translate(&tables, 0xfff), None);
        for addr in [0x1000, 0x1234, 0x1f_ffff, 0x20_0000, 0x10_0000, ram - 1] {
            assert_eq!(translate(&tables, addr), Some(addr), "{addr:#x}");
        }
        for addr in [ram, ram + 0x1000, HYPERCALL_MMIO_BASE - 1, 1 << 30, 1 << 39, !0xfff] {
            assert_eq!(translate(&tables, addr), None, "{addr:#x} is outside RAM");
        }
        assert_eq!(translate(&tables, HYPERCALL_MMIO_BASE + 8), Some(HYPERCALL_MMIO_BASE + 8), "the window");
        assert_eq!(translate(&identity_map(MAX_RAM), MAX_RAM - 1), Some(MAX_RAM - 1));
        assert!(tables.iter().filter(|e| **e & PRESENT != 0).all(|e| e & USER != 0), "CPL 3 may use them all");
    }

    #[test]
    fn ram_sizes_must_be_whole_huge_pages_up_to_a_gib() {
        assert!(check_ram_size(16 << 20).is_ok());
        assert!(check_ram_size(MAX_RAM).is_ok());
        for bad in [0, 1 << 20, 3 << 20, MAX_RAM + (2 << 20), 1 << 30] {
            assert!(check_ram_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn entry_state_is_flat_long_mode() {
        let sregs = long_mode_sregs(kvm_sregs::default());
        assert_eq!((sregs.cs.l, sregs.cs.db, sregs.cs.s, sregs.cs.present), (1, 0, 1, 1));
        assert_eq!((sregs.ss.l, sregs.ss.db, sregs.ss.type_), (0, 1, 3));
        assert_eq!(sregs.cr3, PAGE_TABLES_OFFSET);
        assert_eq!(sregs.efer, EFER_LME | EFER_LMA);
        assert_ne!(sregs.cr0 & CR0_PG, 0);
        assert_ne!(sregs.cr4 & CR4_OSFXSR, 0);
        let regs = entry_regs(0x10_0000, 0x1000);
        assert_eq!((regs.rip, regs.rdi, regs.rflags, regs.rsp), (0x10_0000, 0x1000, 2, 0));
    }
}
