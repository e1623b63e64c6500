//! The aarch64 port: QEMU `virt`, and the Raspberry Pi 3 and 4 (QEMU `raspi3b` and `raspi4b`, real
//! boards) as an arm64 Image.
//!
//! Boot flow: [`start`] (assembly: header, secondary cores parked, EL2 → EL1, FP/SIMD, provisional
//! MMU, stack, `.bss`, vectors) → [`mast_aarch64_start`] (board, device tree or ATAGs, full
//! identity map, console, clock, PSCI, the device tree moved next to the image, heap) →
//! [`crate::boot::start`].
//!
//! What differs per board is in [`crate::board`]: the build chooses one ([`BUILD_BOARD`], from the
//! runtime's `board-*` feature), the device tree's root `compatible` refines it at run time. The
//! modules:
//!
//! - `start`: the arm64 Image header and the entry assembly;
//! - `mmu`: the identity map (1 GiB blocks, 2 MiB where RAM and devices share a gigabyte: RAM Normal
//!   write-back, devices Device-nGnRnE);
//! - `platform`: the device tree questions boot asks;
//! - `exceptions`: vectors and fault reports (status 102);
//! - `pl011`, `timer`, `power`: console, clock, and power-off (semihosting, then PSCI);
//! - with the `virtio` feature: `devices` (the GIC, timer interrupt and virtio-mmio transports from
//!   the tree), `gic`, `irq` (the event loop's sleep) and `dma` (cache maintenance hooks).
//!
//! # Not supported
//! - Entry at EL3, or at an address other than the board's link address (the CPU parks).
//! - More than one CPU, interrupt handlers (with the `virtio` feature, `irq` and `gic` use
//!   interrupts only to wake `wfi`), and the rest listed in each module's docs.

/// Reads a system register whose read has no side effects.
macro_rules! read_sysreg {
    ($name:literal) => {{
        let value: u64;
        // SAFETY: the caller names a register whose read has no side effects and touches no memory,
        // and EL1 may read it.
        unsafe {
            core::arch::asm!(concat!("mrs {}, ", $name), out(reg) value, options(nomem, nostack, preserves_flags))
        };
        value
    }};
}

#[cfg(feature = "virtio")]
mod devices;
#[cfg(feature = "virtio")]
pub(crate) mod dma;
mod exceptions;
#[cfg(feature = "virtio")]
mod gic;
#[cfg(feature = "virtio")]
pub(crate) mod irq;
mod mmu;
mod pl011;
mod platform;
mod power;
mod start;
mod timer;

use core::{fmt, slice};

#[cfg(feature = "virtio")]
use devices::devices;
#[cfg(feature = "virtio")]
pub(crate) use devices::virtio_slots;
pub(crate) use pl011::console_write;
pub(crate) use power::{exit, wait_forever};
pub(crate) use timer::now_ns;

use crate::{
    atags,
    board::{self, Board, BoardKind},
    boot::{self, BootInfo},
    exit::ExitCode,
    fdt::{self, Fdt, Region},
    println,
    time::Instant,
};

use mmu::GigabyteSet;
use platform::Platform;
use power::Conduit;

#[cfg(all(feature = "board-rpi3", feature = "board-rpi4"))]
compile_error!("enable at most one of the runtime's board-rpi3 and board-rpi4 features");

/// The board this image was built for (linked at its address): see [`crate::board`].
#[cfg(not(any(feature = "board-rpi3", feature = "board-rpi4")))]
pub(super) const BUILD_BOARD: Board = board::VIRT;
#[cfg(feature = "board-rpi3")]
pub(super) const BUILD_BOARD: Board = board::RPI3;
#[cfg(all(feature = "board-rpi4", not(feature = "board-rpi3")))]
pub(super) const BUILD_BOARD: Board = board::RPI4;

unsafe extern "C" {
    /// The first byte of the image (the linker script's link address).
    static __mast_start: u8;
    /// One past the last byte the image uses: code, data, `.bss`, stack and page table.
    static __mast_end: u8;
    /// The page below the stack, which the boot code leaves unmapped (see `start`).
    static __mast_stack_guard: u8;
}

/// The stack's guard page, for the fault report.
fn stack_guard() -> core::ops::Range<u64> {
    let guard = &raw const __mast_stack_guard as u64;
    guard..guard + 4096
}

/// Bytes of ATAGs read at most: QEMU's list (memory, initrd, a command line) is far smaller.
const ATAGS_MAX: usize = 16 << 10;

/// The heap's alignment: whole pages.
const HEAP_ALIGN: u64 = 4096;

/// Why the device tree at x0 could not be used.
#[derive(Clone, Copy, Debug)]
enum DeviceTreeError {
    Missing,
    Misplaced,
    Invalid(fdt::Error),
}

impl fmt::Display for DeviceTreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceTreeError::Missing => f.write_str("the boot loader passed none (x0 = 0)"),
            DeviceTreeError::Misplaced => {
                f.write_str("it is misaligned, above 512 GiB, or crosses a gigabyte boundary")
            }
            DeviceTreeError::Invalid(e) => e.fmt(f),
        }
    }
}

/// The end of what the boot code mapped as Normal memory around `address` (`address` itself if
/// nothing): the whole gigabyte holding it, except that Normal memory stops at the board's RAM
/// limit in the image's gigabyte, and another gigabyte crossing that limit is not mapped at all.
fn boot_mapped_end(address: usize) -> usize {
    const GIB: usize = 1 << mmu::GIB_SHIFT;
    let gigabyte_end = (address & !(GIB - 1)) + GIB;
    let image = &raw const __mast_start as usize;
    let ram_limit = usize::try_from(BUILD_BOARD.ram_limit).unwrap_or(usize::MAX);
    if address >> mmu::GIB_SHIFT == image >> mmu::GIB_SHIFT {
        gigabyte_end.min(ram_limit)
    } else if gigabyte_end > ram_limit {
        address
    } else {
        gigabyte_end
    }
}

/// Validates the device tree the loader left at `address` and borrows it for the rest of boot.
fn device_tree(address: usize) -> Result<Fdt<'static>, DeviceTreeError> {
    const GIB: usize = 1 << mmu::GIB_SHIFT;
    if address == 0 {
        return Err(DeviceTreeError::Missing);
    }
    // The boot code mapped the gigabyte holding `address`, if it is inside the table's reach.
    let mapped_end = boot_mapped_end(address);
    if !address.is_multiple_of(8)
        || address >= mmu::ENTRIES * GIB
        || mapped_end.saturating_sub(address) < fdt::HEADER_SIZE
    {
        return Err(DeviceTreeError::Misplaced);
    }
    // SAFETY: the header lies inside the gigabyte the boot code mapped as Normal memory (checked
    // above), and any byte value is a valid u8.
    let header = unsafe { slice::from_raw_parts(address as *const u8, fdt::HEADER_SIZE) };
    let size = fdt::total_size(header).map_err(DeviceTreeError::Invalid)?;
    if size > mapped_end - address {
        return Err(DeviceTreeError::Misplaced);
    }
    // SAFETY: the blob lies in the same mapped gigabyte. It lives for the rest of the appliance's
    // life: the heap excludes it and nothing writes to it, so a 'static shared borrow is sound.
    let blob = unsafe { slice::from_raw_parts(address as *const u8, size) };
    Fdt::new(blob).map_err(DeviceTreeError::Invalid)
}

/// The ATAG list at `address`, if there is one: QEMU writes it below the image, in memory the boot
/// code mapped.
fn atags_at(address: usize) -> Option<atags::Atags<'static>> {
    let image = &raw const __mast_start as usize;
    if address == 0 || address >= image || address >> mmu::GIB_SHIFT != image >> mmu::GIB_SHIFT {
        return None;
    }
    let len = (image - address).min(ATAGS_MAX);
    // SAFETY: [address, image) lies below the image in its gigabyte, which the boot code mapped as
    // Normal memory (the board's RAM limit is above the image); any byte value is a valid u8.
    // Nothing writes below the image (boot reserves it from the heap), so a 'static shared borrow is
    // sound.
    let bytes = unsafe { slice::from_raw_parts(address as *const u8, len) };
    atags::parse(bytes)
}

/// Moves the device tree's used bytes (QEMU pads its tree to 1 MiB and puts it at half of RAM) to
/// the first page past the image and returns the copy, which boot keeps for the appliance's life;
/// reserves the copy's pages, or the tree where it lies if the pages past the image are not free
/// RAM the boot map covers. The platform's strings that point into the tree move with it.
fn keep_device_tree(fdt: Fdt<'static>, dtb: usize, platform: &mut Platform) -> Fdt<'static> {
    let old = Region { address: dtb as u64, size: fdt.total_size() as u64 };
    let used = fdt.used_size();
    let image_start = &raw const __mast_start as u64;
    let target = Region { address: &raw const __mast_end as u64, size: (used as u64).next_multiple_of(HEAP_ALIGN) };
    let overlaps = |r: &Region| r.address < target.end() && target.address < r.end();
    let fits = platform.ram.as_slice().iter().any(|r| r.contains(target.address) && target.end() <= r.end())
        && target.end() <= boot_mapped_end(image_start as usize) as u64
        && !platform.reserved.as_slice().iter().any(overlaps)
        && u32::try_from(used).is_ok();
    if !fits {
        platform.reserved.push(old);
        return fdt;
    }
    // Where the strings boot keeps lie in the tree, as (offset, length), taken before the move.
    let offset_of = |s: &str| {
        let at = (s.as_ptr() as usize).checked_sub(dtb)?;
        (at + s.len() <= used).then_some((at, s.len()))
    };
    let cmdline_at = platform.cmdline.map(offset_of);
    let name_at = offset_of(platform.name);
    // SAFETY: both ranges are RAM the boot map covers as Normal memory: the tree was validated
    // there, and the target was checked above to be free RAM below the boot map's end (no
    // reservation, initrd or image overlaps it). `copy` allows the two to overlap. Nothing reads
    // the old tree after this: the `fdt` borrow is dropped, and the platform's strings that point
    // into it are replaced below before anyone reads them.
    let blob = unsafe {
        core::ptr::copy(dtb as *const u8, target.address as *mut u8, used);
        // The copy's total size is what it uses (checked to fit a u32 above); the header field is
        // big-endian at byte 4.
        (target.address as *mut u8).add(4).cast::<[u8; 4]>().write_unaligned((used as u32).to_be_bytes());
        slice::from_raw_parts(target.address as *const u8, used)
    };
    let copy = match Fdt::new(blob) {
        Ok(copy) => copy,
        Err(why) => {
            println!("mast: the device tree's copy next to the image does not read back: {why}");
            boot::power_off(ExitCode::BOOT_FAILURE)
        }
    };
    let rebase = |at: (usize, usize)| blob.get(at.0..at.0 + at.1).and_then(|b| core::str::from_utf8(b).ok());
    if let Some(Some(at)) = cmdline_at {
        platform.cmdline = rebase(at);
    }
    if let Some(at) = name_at {
        platform.name = rebase(at).unwrap_or(BUILD_BOARD.description);
    }
    platform.reserved.push(target);
    copy
}

/// Boots on the fallback console to say why there is no device tree, then powers off.
fn fail_without_device_tree(address: usize, why: DeviceTreeError) -> ! {
    let uart = BUILD_BOARD.uart;
    let mut devices = GigabyteSet::default();
    devices.insert(Region { address: uart, size: 0x1000 });
    mmu::map(&[], &devices, BUILD_BOARD.devices);
    pl011::init(uart as usize);
    println!("mast: no usable device tree at {address:#x}: {why}");
    boot::power_off(ExitCode::BOOT_FAILURE)
}

/// The Rust half of boot, called by `start` on the boot stack with the MMU on.
///
/// `dtb` is the device tree's address from x0, `entry_ticks` the counter at the first instruction,
/// `entry_el` the exception level the loader entered at (1 or 2).
#[unsafe(no_mangle)]
extern "C" fn mast_aarch64_start(dtb: usize, entry_ticks: u64, entry_el: u64) -> ! {
    // The board: the one built for, refined by the tree's `compatible`. Boards with a fallback
    // memory map boot without a tree (QEMU `raspi3b` passes ATAGs instead); `virt` cannot.
    // A pointer that is neither a tree nor ATAGs is worth a line once the console works.
    let mut unusable = None;
    let (board, fdt, mut platform) = match device_tree(dtb) {
        Ok(fdt) => {
            let compatible = fdt.root().property("compatible").map(|p| p.strings());
            let board = board::refine(BUILD_BOARD, compatible.into_iter().flatten());
            (board, Some(fdt), platform::discover(&fdt, &board))
        }
        Err(why) if BUILD_BOARD.fallback_ram.is_none() => fail_without_device_tree(dtb, why),
        Err(why) => {
            let atags = atags_at(dtb);
            if atags.is_none() && dtb != 0 {
                unusable = Some(why);
            }
            (BUILD_BOARD, None, platform::without_tree(&BUILD_BOARD, atags))
        }
    };
    let unmapped = mmu::map(platform.ram.as_slice(), &platform.devices, board.devices);
    pl011::init(platform.uart);
    if let Some(why) = unusable {
        println!("mast: ignoring x0 = {dtb:#x}: neither ATAGs nor a usable device tree ({why})");
    }
    if board.kind != BoardKind::Virt {
        let source = if fdt.is_some() { "device tree" } else { "no device tree: board defaults" };
        println!("mast: board {} ({}; {source})", board.name, board.description);
    }
    if unmapped > 0 {
        println!("mast: {unmapped} gigabytes mixing RAM and devices are left unmapped (no level-2 table left)");
    }
    // Entered at EL2, nothing answers HVC any more (the boot code made it undefined).
    let psci = platform.psci.filter(|&c| !(c == Conduit::Hvc && entry_el == 2));
    power::set_psci(psci);
    timer::init(platform.timer_hz);
    let entry = Instant::from_nanos(timer::ticks_to_ns(entry_ticks));

    // The image, and on the Pis everything below it in its RAM region: the firmware's spin table
    // (cores 1-3 poll it) and ATAGs. On `virt` the 2 MiB below the image hold only QEMU's boot
    // stub, which has done its job (PSCI keeps the other cores off), so they go to the heap.
    let (image_start, image_end) = (&raw const __mast_start as u64, &raw const __mast_end as u64);
    let ram = platform.ram;
    let ram_regions = ram.as_slice();
    let below = match board.kind {
        BoardKind::Virt => image_start,
        _ => ram_regions.iter().find(|r| r.contains(image_start)).map_or(image_start, |r| r.address),
    };
    platform.reserved.push(Region { address: below, size: image_end - below });
    // The device tree, which the command line, the machine's name and (later) the device questions
    // read: moved next to the image, so its old place joins the heap.
    let fdt = fdt.map(|fdt| keep_device_tree(fdt, dtb, &mut platform));
    #[cfg(feature = "virtio")]
    if let Some(fdt) = fdt {
        devices::remember(fdt);
    }
    #[cfg(not(feature = "virtio"))]
    let _ = fdt;

    if ram_regions.is_empty() {
        println!("mast: the device tree lists no RAM");
        boot::power_off(ExitCode::BOOT_FAILURE);
    }
    if platform.reserved.dropped > 0 {
        // Ignoring a reservation could put the heap on top of firmware memory.
        println!("mast: the device tree reserves more memory regions than the runtime can track");
        boot::power_off(ExitCode::BOOT_FAILURE);
    }
    let cmdline = platform.cmdline.unwrap_or_else(|| {
        println!("mast: ignoring /chosen/bootargs: it is not UTF-8");
        ""
    });
    // The heap: the largest free span, and the next largest beside it (on `virt`, the image splits
    // RAM in two).
    let span = |r: Region| r.address as usize..r.end() as usize;
    let largest = fdt::largest_free_span(ram_regions, platform.reserved.as_slice(), HEAP_ALIGN);
    let heap = largest.map_or(0..0, span);
    let more_heap = largest
        .and_then(|largest| {
            platform.reserved.push(largest);
            let listed = platform.reserved.dropped == 0;
            fdt::largest_free_span(ram_regions, platform.reserved.as_slice(), HEAP_ALIGN).filter(|_| listed)
        })
        .map_or(0..0, span);
    let ram_bytes = ram_regions.iter().fold(0u64, |sum, r| sum.saturating_add(r.size));
    let data =
        platform.initrd.filter(|d| ram_regions.iter().any(|r| r.contains(d.address) && d.end() <= r.end())).map(|d| {
            // SAFETY: the loader put the initrd in RAM (checked just above), which the identity map
            // covers as normal memory; it is reserved from the heap and nothing writes it, so a
            // shared 'static borrow is sound.
            unsafe { core::slice::from_raw_parts(d.address as *const u8, d.size as usize) }
        });

    boot::start(BootInfo {
        platform: platform.name,
        cmdline,
        ram_bytes: ram_bytes as usize,
        heap,
        more_heap,
        entry,
        data,
    })
}
