//! The tender platform: Mast's per-appliance KVM monitor, reached through the `tender-abi` contract.
//!
//! Built with the runtime's `platform-tender` feature instead of the QEMU ports in `arch::x86_64`
//! and `arch::aarch64`. The machine is tiny and paravirtual: RAM, one vCPU, and hypercalls (one VM
//! exit each, carrying the address of an argument block). Everything here is shaped to exit
//! rarely, because each exit is expensive on nested KVM:
//!
//! - boot: the tender enters the kernel in 64-bit mode (x86_64: long mode on its identity map;
//!   aarch64: EL1, MMU off) with the address of its [`abi::BootInfo`]; [`tender_start`] checks
//!   magic and ABI version and hands the shared boot path its [`BootInfo`]. Nothing is zeroed:
//!   RAM arrives zeroed, and RAM the guest never touches costs the host nothing;
//! - console ([`console`]): buffered, one `ConsoleWrite` per 4 KiB or less, flushed before every
//!   `Poll` and `Exit` (so also on the panic and fault paths, which end in [`exit`]);
//! - clock: the cycle counter, no exit (x86_64: the TSC at [`abi::BootInfo::tsc_khz`]; aarch64:
//!   CNTVCT_EL0 at CNTFRQ_EL0);
//! - the event loop's sleep ([`wait`]): one `Poll`, which also moves network frames;
//! - devices: [`net`] (frames through shared rings) and [`block`] (sector reads and writes).
//!
//! The CPU halves, [`x86_64`] and [`aarch64`], hold the entry assembly, the hypercall instruction
//! and the counter. On x86_64 the QEMU port's exception vectors are reused, so a fault is reported
//! in words and ends with status 102 as on QEMU.
//!
//! # Not supported
//! - Stack-overflow detection: the tender maps all RAM, so the stack's guard page is ordinary RAM.
//! - aarch64 is compile-checked only: it runs with the MMU off (no identity map with Normal memory
//!   yet, so unaligned accesses fault on hardware) and has no exception vectors.

use spin::Once;
pub(crate) use tender_abi as abi;

use crate::{boot::BootInfo, exit::ExitCode, time::Instant, tsc::PvclockSnapshot};

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
use aarch64 as cpu;
#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
use x86_64 as cpu;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86_64::privileged;

#[cfg(feature = "virtio")]
pub mod block;
mod console;
#[cfg(feature = "virtio")]
pub mod net;
#[cfg(feature = "virtio")]
pub(crate) mod random;

pub(crate) use console::write as console_write;

// The ABI note: the tender refuses a kernel without it, or with another ABI version.
core::arch::global_asm!(
    r#"
    .section .note.mast, "a", %note
    .balign 4
    .long 5                     /* namesz: "Mast\0" */
    .long 4                     /* descsz */
    .long {note_type}
    .asciz "Mast"
    .balign 4
    .long {abi_version}
    .balign 4
    "#,
    note_type = const abi::ELF_NOTE_TYPE_ABI,
    abi_version = const abi::ABI_VERSION,
);
const _: () = assert!(
    abi::ELF_NOTE_NAME.len() == 4 && {
        let name = abi::ELF_NOTE_NAME.as_bytes();
        name[0] == b'M' && name[1] == b'a' && name[2] == b's' && name[3] == b't'
    },
    "the note above spells tender_abi::ELF_NOTE_NAME"
);

/// The tender's boot information, kept for the devices (flags, MAC address, block size).
static BOOT_INFO: Once<abi::BootInfo> = Once::new();
/// The cycle counter's scaling to nanoseconds, from the boot information.
static CLOCK: Once<PvclockSnapshot> = Once::new();

/// The boot information, once [`tender_start`] has checked it (for the devices).
#[cfg(feature = "virtio")]
pub(crate) fn boot_info() -> Option<&'static abi::BootInfo> {
    BOOT_INFO.get()
}

/// Nanoseconds since the VM was created.
pub(crate) fn now_ns() -> u64 {
    CLOCK.get().map_or(0, |clock| clock.nanos_at(cpu::ticks()))
}

/// Makes a hypercall with the argument block `block`, which must be a `#[repr(C)]` block of the
/// ABI living in RAM (the stack, a static or the heap all are). The tender writes results into it.
fn hypercall<T>(call: abi::Hypercall, block: &mut T) {
    cpu::hypercall(call, (block as *mut T).expose_provenance() as u64);
}

/// Flushes the console and stops the VM; the tender exits with `status`.
pub(crate) fn exit(status: ExitCode) -> ! {
    console::flush();
    let mut block = abi::Exit { status: u32::from(status.0), _reserved: 0 };
    hypercall(abi::Hypercall::Exit, &mut block);
    // The tender never resumes a guest that asked to exit.
    cpu::halt_forever()
}

/// Tells the tender the appliance is ready (it listens). The console is flushed first, so the
/// lines before it are in the log when the tender's parent acts on it.
pub(crate) fn ready() {
    console::flush();
    let mut unused = 0u64;
    hypercall(abi::Hypercall::Ready, &mut unused);
}

#[cfg(feature = "virtio")]
/// Flushes the console, then lets the tender move frames and block for up to `timeout_ns`
/// ([`abi::POLL_FOREVER`]: until a frame arrives).
pub(crate) fn poll(timeout_ns: u64) {
    console::flush();
    let mut block = abi::Poll { timeout_ns, rx_ready: 0, _reserved: 0 };
    hypercall(abi::Hypercall::Poll, &mut block);
}

#[cfg(feature = "virtio")]
/// The event loop's sleep (see [`crate::event`]): one `Poll` until the deadline, or until a frame
/// arrives. A deadline already past still polls once, without blocking, so frames keep moving.
pub(crate) fn wait(deadline_ns: Option<u64>) {
    let timeout = match deadline_ns {
        Some(deadline) => deadline.saturating_sub(now_ns()),
        None => abi::POLL_FOREVER,
    };
    poll(timeout);
}

/// What can be wrong with the tender's hand-off, in words.
enum BootProblem {
    NoBootInfo(u64),
    Magic(u64),
    Version(u32),
    Outside(&'static str),
}

impl core::fmt::Display for BootProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            BootProblem::NoBootInfo(at) => write!(f, "no boot information at {at:#x} (misaligned or null)"),
            BootProblem::Magic(magic) => {
                write!(f, "the boot information has magic {magic:#x}, expected {:#x}", abi::BOOT_INFO_MAGIC)
            }
            BootProblem::Version(version) => write!(
                f,
                "the tender speaks ABI version {version}, this kernel version {}: rebuild one of them",
                abi::ABI_VERSION
            ),
            BootProblem::Outside(what) => write!(f, "the boot information puts the {what} outside RAM"),
        }
    }
}

/// Whether `[start, start + len)` lies inside RAM.
fn inside_ram(info: &abi::BootInfo, start: u64, len: u64) -> bool {
    let ram_end = info.ram_base.saturating_add(info.ram_size);
    start >= info.ram_base && start.checked_add(len).is_some_and(|end| end <= ram_end)
}

fn check(address: u64) -> Result<abi::BootInfo, BootProblem> {
    if address == 0 || !address.is_multiple_of(8) {
        return Err(BootProblem::NoBootInfo(address));
    }
    // SAFETY: the tender passes the address of its BootInfo, inside RAM, which its identity map
    // covers; it is aligned (checked above). A wrong address faults, which the fault report
    // explains; the fields are plain integers, valid for any bits.
    let info = unsafe { (address as *const abi::BootInfo).read() };
    if info.magic != abi::BOOT_INFO_MAGIC {
        return Err(BootProblem::Magic(info.magic));
    }
    if info.abi_version != abi::ABI_VERSION {
        return Err(BootProblem::Version(info.abi_version));
    }
    if info.cmdline_len > abi::CMDLINE_MAX || !inside_ram(&info, info.cmdline_addr, info.cmdline_len) {
        return Err(BootProblem::Outside("command line"));
    }
    if info.free_start > info.free_end || !inside_ram(&info, info.free_start, info.free_end - info.free_start) {
        return Err(BootProblem::Outside("free memory"));
    }
    if info.data_len > 0 && !inside_ram(&info, info.data_addr, info.data_len) {
        return Err(BootProblem::Outside("data part"));
    }
    Ok(info)
}

/// Sets the wall clock from the host's time the tender wrote at VM creation, when the guest's clock
/// read zero (0: the tender did not know it).
fn set_wall_clock(info: &abi::BootInfo) {
    use crate::wallclock::{self, Sample, Source};
    if info.wall_clock_at_creation_ns == 0 {
        return;
    }
    wallclock::set(Sample {
        unix: core::time::Duration::from_nanos(info.wall_clock_at_creation_ns),
        monotonic: core::time::Duration::ZERO,
        uncertainty: core::time::Duration::from_nanos(abi::WALL_CLOCK_UNCERTAINTY_NS),
        source: Source::Tender,
    });
}

/// Bytes in RAM at a physical (= virtual) address.
fn ram_bytes(address: u64, len: u64) -> &'static [u8] {
    // SAFETY: callers pass ranges `check` found inside RAM (the command line, the data part),
    // which the tender wrote before entry and nothing writes afterwards; the heap excludes them
    // (the tender's free range lies between the kernel and the data part, and the command line
    // sits in the page below the kernel).
    unsafe { core::slice::from_raw_parts(address as *const u8, len as usize) }
}

/// The Rust entry, called by the CPU half's entry code on the boot stack, after it has installed
/// its own descriptor tables, with the address of the tender's BootInfo and the cycle counter at
/// the first instruction.
extern "C" fn tender_start(boot_info: u64, entry_ticks: u64) -> ! {
    let info = match check(boot_info) {
        Ok(info) => *BOOT_INFO.call_once(|| info),
        Err(problem) => {
            crate::console::emergency_print(format_args!("mast: cannot boot on the tender: {problem}\n"));
            crate::boot::power_off(ExitCode::BOOT_FAILURE);
        }
    };
    let clock = CLOCK.call_once(|| cpu::clock(&info));
    let entry = Instant::from_nanos(clock.nanos_at(entry_ticks));
    set_wall_clock(&info);

    let cmdline_bytes = ram_bytes(info.cmdline_addr, info.cmdline_len);
    let cmdline = match core::str::from_utf8(cmdline_bytes) {
        Ok(cmdline) => cmdline,
        Err(error) => {
            crate::console::emergency_print(format_args!(
                "mast: the command line is not UTF-8 after byte {}; ignoring the rest\n",
                error.valid_up_to()
            ));
            // The prefix up to `valid_up_to` is valid UTF-8 by the error's definition.
            core::str::from_utf8(cmdline_bytes.get(..error.valid_up_to()).unwrap_or(&[])).unwrap_or("")
        }
    };
    let data = (info.data_len > 0).then(|| ram_bytes(info.data_addr, info.data_len));
    crate::boot::start(BootInfo {
        platform: "tender",
        cmdline,
        ram_bytes: info.ram_size as usize,
        heap: info.free_start as usize..info.free_end as usize,
        more_heap: 0..0,
        entry,
        data,
    })
}
