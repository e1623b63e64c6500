//! x86_64 on a PVH loader (QEMU `microvm` under KVM): boot, console, clock, faults and power-off.
//!
//! Boot path: [`boot`] (assembly) enters long mode with an identity map of the first 4 GiB and
//! calls [`start`], which brings up the UART, the exception vectors and the clock at CPL 0, then
//! drops to CPL 3 ([`user`]) and there reads the PVH start info (command line, memory map) and
//! hands a [`BootInfo`] to [`crate::boot::start`]: the shared boot path and the appliance run at
//! CPL 3. Why: under PVM (nested KVM on the development machines) CPL 0 code is emulated, ~2 µs
//! per instruction, while CPL 3 code runs natively; see [`user`].
//!
//! Submodules: [`boot`] (entry, page tables, GDT, stacks), [`idt`] (exception vectors and
//! reports), [`user`] (the drop to CPL 3 and the gate back), [`serial`] (16550 console), [`clock`]
//! (kvmclock), [`io`] (port I/O). The pure parts
//! (the PVH structures, the pvclock arithmetic, exception words) live in [`crate::pvh`],
//! [`crate::tsc`] and [`crate::fault::x86_64`] so they are tested on the host.
//!
//! The platform is reported as `pvh-kvm`, `pvh-tcg` or `pvh` (another hypervisor), from the CPUID
//! hypervisor signature: a PVH loader does not say which machine model it is.
//!
//! Powering off: QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=4`)
//! turns a write of `status` to port 0xf4 into QEMU exiting with `status * 2 + 1`. Without the
//! device the write does nothing, and [`exit`] resets the CPU with a triple fault instead: QEMU
//! started with `-no-reboot` then exits with status 0; without `-no-reboot` the machine reboots
//! and runs the appliance again. There is no ACPI power-off.
//!
//! With the `virtio` feature, also [`devices`] (the virtio-mmio transports), [`irq`] (local APIC,
//! its timer and the IOAPIC, for the event loop's sleep) and [`dma`] (nothing to maintain).
//!
//! Not supported: more than one CPU, interrupt handlers (interrupts only wake `hlt`), RAM above
//! 4 GiB, booting other than through PVH (no multiboot, no Linux boot protocol, no UEFI).
//!
//! [`BootInfo`]: crate::boot::BootInfo

mod boot;
mod clock;
#[cfg(feature = "virtio")]
mod devices;
#[cfg(feature = "virtio")]
pub(crate) mod dma;
mod idt;
mod io;
#[cfg(feature = "virtio")]
pub(crate) mod irq;
mod segments;
mod serial;
mod user;

use core::ops::Range;

pub(crate) use clock::now_ns;
#[cfg(feature = "virtio")]
pub(crate) use devices::virtio_slots;
pub(crate) use user::privileged;

use crate::boot::BootInfo;
use crate::console::emergency_print;
use crate::exit::ExitCode;
use crate::pvh::{self, StartInfo};
use crate::time::Instant;

/// The I/O port of QEMU's `isa-debug-exit` device, as the runtime expects it configured.
const DEBUG_EXIT_PORT: u16 = 0xf4;
/// Everything above this is unmapped (see [`boot`]).
const IDENTITY_MAP_END: u64 = 1 << 32;
/// The heap never starts below 1 MiB: the area below holds the firmware's tables and data.
const LOW_MEMORY_END: u64 = 1 << 20;

/// Writes raw bytes to the console UART (port I/O: at CPL 0, through the gate).
pub(crate) fn console_write(bytes: &[u8]) {
    extern "C" fn at_cpl0(bytes: u64) {
        // SAFETY: `bytes` is the address of the caller's slice, which lives across the gate call.
        serial::write(unsafe { *(bytes as *const &[u8]) });
    }
    user::privileged(at_cpl0, (&raw const bytes) as u64);
}

/// Powers off with `status` through `isa-debug-exit`, or resets the CPU if that device is absent
/// (see the module docs).
pub(crate) fn exit(status: ExitCode) -> ! {
    extern "C" fn at_cpl0(status: u64) {
        serial::drain();
        // SAFETY: port 0xf4 is the debug-exit device by the runtime's contract with its host; on
        // a machine without it, a write to an unused port is ignored.
        unsafe { io::outl(DEBUG_EXIT_PORT, status as u32) };
    }
    user::privileged(at_cpl0, u64::from(status.0));
    emergency_print(format_args!(
        "mast: no isa-debug-exit device at port {DEBUG_EXIT_PORT:#x}; resetting the CPU \
         (QEMU needs -no-reboot to stop here)\n"
    ));
    triple_fault()
}

/// Stops the CPU until the machine is reset: interrupts off, then halt, forever.
pub(crate) fn wait_forever() -> ! {
    extern "C" fn halt_forever(_: u64) {
        loop {
            // SAFETY: `cli; hlt` only stops this CPU; with interrupts off only an NMI or reset
            // wakes it, and the loop halts again after an NMI. This runs at CPL 0 (the gate).
            unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
        }
    }
    user::privileged(halt_forever, 0);
    unreachable!("the CPU halts for good")
}

/// Resets the machine: with an empty IDT, the #UD from `ud2` cannot be delivered, nor can the
/// resulting #GP or double fault, and the CPU shuts down, which QEMU treats as a reset request.
///
/// `ud2` rather than `int3`: under the nested PVM hypervisor, an `int3` that cannot be delivered
/// stops QEMU with "KVM internal error" (the VM pauses and QEMU never exits), while a fault takes
/// the ordinary triple-fault path.
fn triple_fault() -> ! {
    extern "C" fn at_cpl0(_: u64) {
        let empty: [u16; 5] = [0; 5];
        // SAFETY: deliberately unrecoverable: this ends the machine, which is the intent. Nothing
        // runs after it, so the broken IDT harms nothing. This runs at CPL 0 (the gate).
        unsafe { core::arch::asm!("lidt [{0}]", "ud2", in(reg) &raw const empty, options(nostack)) };
    }
    user::privileged(at_cpl0, 0);
    // Through the architecture boundary's name, which the shared code does not use otherwise.
    super::wait_forever()
}

/// The Rust entry point, called by the boot code on the boot stack with the physical address of
/// the PVH start info (EBX at entry). The privileged set-up, then the drop to CPL 3.
extern "C" fn start(start_info_paddr: u32) -> ! {
    serial::init();
    idt::init();
    clock::init(clock::hypervisor());
    user::enter(start_at_cpl3, u64::from(start_info_paddr), 0)
}

/// The rest of the boot, at CPL 3: the start info, the heap, and the shared boot path.
extern "C" fn start_at_cpl3(start_info_paddr: u64, _: u64) -> ! {
    let start_info_paddr = start_info_paddr as u32;
    let hypervisor = clock::hypervisor();
    // SAFETY: the boot code wrote this before anything else ran and nothing writes it again.
    let entry_tsc = unsafe { (&raw const boot::mast_boot_tsc).read() };
    let entry = Instant::from_nanos(clock::nanos_at(entry_tsc));

    let platform = match hypervisor {
        clock::Hypervisor::Kvm => "pvh-kvm",
        clock::Hypervisor::Tcg => "pvh-tcg",
        clock::Hypervisor::Other => "pvh",
    };
    let info = match read_start_info(start_info_paddr) {
        Ok(info) => info,
        Err(problem) => {
            emergency_print(format_args!("mast: cannot boot: {problem}\n"));
            crate::boot::power_off(ExitCode::BOOT_FAILURE);
        }
    };

    let memmap = phys_bytes(info.memmap_paddr, info.memmap_bytes());
    let ram = || pvh::memmap(memmap).filter(|e| e.kind == pvh::TYPE_RAM).map(|e| e.range());
    let ram_bytes: u64 = ram().map(|r| r.end - r.start).sum();

    let cmdline_bytes = if info.cmdline_paddr == 0 {
        &[][..]
    } else {
        // SAFETY: the loader put a NUL-terminated command line at this identity-mapped address
        // (checked below 4 GiB in `read_start_info`), and nothing writes it while it is in use.
        unsafe { core::ffi::CStr::from_ptr(info.cmdline_paddr as *const core::ffi::c_char) }.to_bytes_with_nul()
    };
    let cmdline = pvh::cmdline(cmdline_bytes);
    #[cfg(feature = "virtio")]
    devices::remember(cmdline);
    if cmdline.len() + 1 < cmdline_bytes.len() {
        emergency_print(format_args!(
            "mast: the command line is not UTF-8 after byte {}; ignoring the rest\n",
            cmdline.len()
        ));
    }

    // The heap: the largest RAM span above the image, avoiding the boot data still to be read
    // (the start info and memory map are read above, the command line after the heap starts).
    let image_end = &raw const boot::__image_end as u64;
    let data = initrd(&info, ram());
    let reserved: [Range<u64>; 4] = [
        range_of(u64::from(start_info_paddr), pvh::START_INFO_SIZE),
        range_of(info.memmap_paddr, info.memmap_bytes()),
        range_of(info.cmdline_paddr, cmdline_bytes.len()),
        data.clone().unwrap_or(0..0),
    ];
    let window = image_end.max(LOW_MEMORY_END)..IDENTITY_MAP_END;
    let heap = pvh::largest_free_span(ram(), window, &reserved);

    crate::boot::start(BootInfo {
        platform,
        cmdline,
        ram_bytes: ram_bytes as usize,
        heap: heap.start as usize..heap.end as usize,
        more_heap: 0..0,
        entry,
        data: data.map(|d| phys_bytes(d.start, (d.end - d.start) as usize)),
    })
}

/// The first boot module (the initrd: the appliance's data bundle), if the loader passed one that
/// lies wholly in RAM below 4 GiB.
fn initrd(info: &StartInfo, mut ram: impl Iterator<Item = Range<u64>>) -> Option<Range<u64>> {
    let list_end = info.modlist_paddr.checked_add(pvh::MODLIST_ENTRY_SIZE as u64)?;
    if info.nr_modules == 0 || info.modlist_paddr < 0x1000 || list_end > IDENTITY_MAP_END {
        return None;
    }
    let module = pvh::module(phys_bytes(info.modlist_paddr, pvh::MODLIST_ENTRY_SIZE))?;
    (module.start >= 0x1000 && module.end <= IDENTITY_MAP_END)
        .then_some(())
        .and_then(|()| ram.find(|r| r.start <= module.start && module.end <= r.end))
        .map(|_| module)
}

/// What can go wrong before the heap exists, in words.
enum StartInfoProblem {
    Pvh(pvh::Error, u32),
    Unreachable(&'static str, u64),
}

impl core::fmt::Display for StartInfoProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            StartInfoProblem::Pvh(pvh::Error::BadMagic(magic), at) => write!(
                f,
                "the PVH start info at {at:#x} has magic {magic:#x}, expected {:#x}: \
                 the image must be entered through the PVH ELF note with EBX pointing at it",
                pvh::MAGIC
            ),
            StartInfoProblem::Pvh(pvh::Error::NoMemoryMap { version }, at) => write!(
                f,
                "the PVH start info at {at:#x} is version {version}, which has no memory map \
                 (version 1 or later is needed to find RAM)"
            ),
            StartInfoProblem::Pvh(pvh::Error::Truncated, at) => {
                write!(f, "the PVH start info at {at:#x} is truncated")
            }
            StartInfoProblem::Unreachable(what, at) => {
                write!(f, "the PVH {what} at {at:#x} lies outside the 4 GiB identity map")
            }
        }
    }
}

fn read_start_info(paddr: u32) -> Result<StartInfo, StartInfoProblem> {
    if paddr < 0x1000 {
        // Page 0 is unmapped; a zero EBX means the loader passed nothing.
        return Err(StartInfoProblem::Pvh(pvh::Error::BadMagic(0), paddr));
    }
    let info = StartInfo::parse(phys_bytes(u64::from(paddr), pvh::START_INFO_SIZE))
        .map_err(|e| StartInfoProblem::Pvh(e, paddr))?;
    let memmap_end = info.memmap_paddr.saturating_add(info.memmap_bytes() as u64);
    if info.memmap_paddr < 0x1000 || memmap_end > IDENTITY_MAP_END {
        return Err(StartInfoProblem::Unreachable("memory map", info.memmap_paddr));
    }
    // A command line may be up to a page or two; past 4 GiB minus that it would run off the map.
    if info.cmdline_paddr != 0 && !(0x1000..IDENTITY_MAP_END - 0x10000).contains(&info.cmdline_paddr) {
        return Err(StartInfoProblem::Unreachable("command line", info.cmdline_paddr));
    }
    Ok(info)
}

/// Boot data at a physical address, as a byte slice.
fn phys_bytes(paddr: u64, len: usize) -> &'static [u8] {
    // SAFETY: callers pass ranges the loader filled in below 4 GiB, outside page 0 (checked in
    // `read_start_info` and `initrd`), which the identity map covers; nothing writes boot data
    // after entry, and the heap excludes these ranges.
    unsafe { core::slice::from_raw_parts(paddr as *const u8, len) }
}

fn range_of(paddr: u64, len: usize) -> Range<u64> {
    paddr..paddr.saturating_add(len as u64)
}
