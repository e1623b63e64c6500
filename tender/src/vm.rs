//! The virtual machine: KVM VM with one memory slot and one vCPU, the loaded guest, and the run loop.

use anyhow::{Context, Result, anyhow};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use tender_abi::{BootInfo, Hypercall};
use vm_memory::{GuestAddress, GuestMemoryBackend};

use crate::{
    arch::{self, Event},
    guest::{Abi, Ram},
    hypercall::{self, Devices, Outcome},
    kernel::KernelInfo,
    layout::{self, Plan},
    stats::{ExitReason, Stats},
    violation::Violation,
};

/// What to boot.
#[derive(Debug)]
pub struct Guest<'a> {
    pub kernel: &'a [u8],
    pub info: KernelInfo,
    pub data: Option<&'a [u8]>,
    pub cmdline: &'a str,
    pub ram_size: u64,
}

/// A VM ready to run: everything opened, mapped and loaded.
#[derive(Debug)]
pub struct Vm {
    // Kept open for the VM's lifetime.
    _kvm: Kvm,
    _vm: VmFd,
    pub vcpu: VcpuFd,
    pub ram: Ram,
    pub devices: Devices,
}

/// How the guest's run ended.
#[derive(Debug)]
pub enum Ending {
    /// The guest exited with this status.
    Exit(u8),
    /// The tender was asked to stop (SIGTERM or SIGINT) by this signal.
    Stopped(i32),
    /// The guest broke the ABI; the instruction pointer, if it could be read.
    Violation(Violation, Option<u64>),
    /// The host side failed while the guest ran.
    Failure(anyhow::Error),
}

impl Vm {
    /// Creates the VM, maps RAM, loads `guest` and sets up the vCPU at its entry point.
    pub fn new(guest: &Guest<'_>, devices: Devices, net_mac: Option<[u8; 6]>) -> Result<Vm> {
        arch::check_ram_size(guest.ram_size)?;
        let data_len = guest.data.map_or(0, |d| d.len() as u64);
        let plan = layout::plan(arch::RAM_BASE, guest.ram_size, guest.info.span.clone(), data_len)?;

        let kvm = Kvm::new().context("opening /dev/kvm")?;
        let vm = kvm.create_vm().context("KVM_CREATE_VM")?;
        let ram = Ram::new(arch::RAM_BASE, guest.ram_size)?;
        let host = ram.memory.get_host_address(GuestAddress(arch::RAM_BASE)).context("guest RAM's host address")?;
        advise_no_huge_pages(host, guest.ram_size);
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: arch::RAM_BASE,
            memory_size: guest.ram_size,
            userspace_addr: host as u64,
        };
        // SAFETY: the region is the mapping `ram` owns, `ram_size` bytes at `host`; `ram` lives in
        // the returned `Vm` beside the VM fd, so the mapping outlives every guest access to it.
        unsafe { vm.set_user_memory_region(region) }.context("KVM_SET_USER_MEMORY_REGION")?;
        let vcpu = vm.create_vcpu(0).context("KVM_CREATE_VCPU")?;
        let clock = arch::init_vcpu(&kvm, &vm, &vcpu)?;

        load_kernel(&ram, guest.kernel, &plan)?;
        if let Some(data) = guest.data {
            ram.write_bytes(plan.data_addr, data).context("loading the data part")?;
        }
        arch::prepare_memory(&ram)?;
        let devices_info = layout::Devices {
            net_mac: devices.net.as_ref().and(net_mac),
            block_sectors: devices.block.as_ref().map(|b| b.sectors),
        };
        let info = layout::boot_info(&plan, guest.cmdline.len(), clock, devices_info);
        let boot_info = layout::boot_info_addr(arch::RAM_BASE);
        vm_memory::Bytes::write_obj(&ram.memory, Abi::<BootInfo>(info), GuestAddress(boot_info))
            .context("writing the boot info")?;
        ram.write_bytes(info.cmdline_addr, guest.cmdline.as_bytes())?;
        arch::set_entry(&vcpu, guest.info.entry, boot_info)?;
        Ok(Vm { _kvm: kvm, _vm: vm, vcpu, ram, devices })
    }

    /// Runs the guest until it exits or breaks the ABI. On the main thread: there is one vCPU and
    /// nothing else to do while it runs.
    pub fn run(&mut self, stats: &mut Stats) -> Ending {
        loop {
            // A stop request that arrived while the guest ran (or slept in Poll) ends the run at
            // the next exit; an idle guest spends its time in Poll, which the signal interrupts.
            if let Some(signal) = crate::signals::stop_requested() {
                return Ending::Stopped(signal);
            }
            let event = match self.vcpu.run() {
                Ok(exit) => arch::classify(exit),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Event::Interrupted,
                Err(e) => return Ending::Failure(anyhow!("KVM_RUN failed: {e}")),
            };
            let violation = match event {
                Event::Hypercall { number, arg } => {
                    stats.exit(ExitReason::Hypercall);
                    match hypercall::handle(&self.ram, &mut self.devices, stats, number, arg) {
                        Ok(Outcome::Continue) => continue,
                        Ok(Outcome::Exit(status)) => return Ending::Exit(status),
                        Err(violation) => violation,
                    }
                }
                Event::Interrupted => {
                    stats.exit(ExitReason::Interrupted);
                    continue;
                }
                Event::BadWidth { number, len } => match u16::try_from(number).ok().and_then(Hypercall::from_number) {
                    Some(call) => Violation::HypercallWidth { call, len },
                    None => Violation::UnknownHypercall { number },
                },
                Event::InternalError => Violation::InternalError { suberror: self.internal_suberror() },
                Event::Violation(violation) => violation,
            };
            stats.exit(ExitReason::Fatal);
            return Ending::Violation(violation, arch::instruction_pointer(&self.vcpu));
        }
    }

    fn internal_suberror(&mut self) -> u32 {
        let run = self.vcpu.get_kvm_run();
        // SAFETY: called right after KVM_RUN returned KVM_EXIT_INTERNAL_ERROR, for which the
        // kernel fills the `internal` member of the exit union; it is plain integers.
        unsafe { run.__bindgen_anon_1.internal.suberror }
    }
}

/// Copies the kernel's loadable segments to their physical addresses (already checked by
/// [`layout::plan`] to lie in RAM above the tender's area). x86_64 uses linux-loader's ELF loader;
/// its ELF support is x86-only, so aarch64 copies the segments itself.
fn load_kernel(ram: &Ram, kernel: &[u8], plan: &Plan) -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    {
        use linux_loader::loader::{KernelLoader, elf::Elf};
        let lowest = GuestAddress(plan.ram_base + tender_abi::TENDER_AREA_END);
        Elf::load(&ram.memory, None, &mut std::io::Cursor::new(kernel), Some(lowest)).context("loading the kernel")?;
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = plan;
        let elf = images::elf::Elf::parse(kernel).context("parsing the kernel")?;
        for segment in elf.load_segments().filter(|s| s.file_size > 0) {
            ram.write_bytes(segment.physical_address, elf.segment_bytes(segment)).context("loading the kernel")?;
        }
    }
    Ok(())
}

/// Transparent huge pages would turn one touched guest page into 2 MiB of host memory; an idle
/// appliance touches little, so small pages keep it small. Failing to advise only costs memory.
fn advise_no_huge_pages(host: *mut u8, len: u64) {
    // SAFETY: `host` and `len` describe the guest RAM mapping vm-memory just created; MADV_NOHUGEPAGE
    // changes only how the kernel backs it, never its contents or validity.
    unsafe { libc::madvise(host.cast(), len as usize, libc::MADV_NOHUGEPAGE) };
}
