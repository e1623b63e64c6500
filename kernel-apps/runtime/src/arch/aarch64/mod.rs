//! The aarch64 port: QEMU `virt` (and, by design, boards booted the same way) as an arm64 Image.
//!
//! Boot flow: [`start`] (assembly: header, EL2 → EL1, FP/SIMD, provisional MMU, stack, `.bss`,
//! vectors) → [`mast_aarch64_start`] (device tree, full identity map, console, clock, PSCI, heap) →
//! [`crate::boot::start`]. The modules:
//!
//! - `start`: the arm64 Image header and the entry assembly;
//! - `mmu`: the identity map (1 GiB blocks: RAM Normal write-back, devices Device-nGnRnE);
//! - `platform`: the device tree questions boot asks;
//! - `exceptions`: vectors and fault reports (status 102);
//! - `pl011`, `timer`, `power`: console, clock, and power-off (semihosting, then PSCI);
//! - with the `virtio` feature: `devices` (the GIC, timer interrupt and virtio-mmio transports from
//!   the tree), `gic`, `irq` (the event loop's sleep) and `dma` (cache maintenance hooks).
//!
//! # Not supported
//! - Entry at EL3, or at an address other than the link address 0x4020_0000 (the CPU parks).
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
    boot::{self, BootInfo},
    exit::ExitCode,
    fdt::{self, Fdt, Region},
    println,
    time::Instant,
};
use mmu::GigabyteSet;
use power::Conduit;

unsafe extern "C" {
    /// The first byte of the image (the linker script's link address).
    static __mast_start: u8;
    /// One past the last byte the image uses: code, data, `.bss`, stack and page table.
    static __mast_end: u8;
}

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

/// Validates the device tree the loader left at `address` and borrows it for the rest of boot.
fn device_tree(address: usize) -> Result<Fdt<'static>, DeviceTreeError> {
    const GIB: usize = 1 << mmu::GIB_SHIFT;
    if address == 0 {
        return Err(DeviceTreeError::Missing);
    }
    // The boot code mapped the gigabyte holding `address`, if it is inside the table's reach.
    let mapped_end = (address & !(GIB - 1)) + GIB;
    if !address.is_multiple_of(8) || address >= mmu::ENTRIES * GIB || mapped_end - address < fdt::HEADER_SIZE {
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

/// Boots on the fallback console to say why there is no device tree, then powers off.
fn fail_without_device_tree(address: usize, why: DeviceTreeError) -> ! {
    let mut devices = GigabyteSet::default();
    devices.insert(Region { address: pl011::FALLBACK_BASE as u64, size: 0x1000 });
    mmu::map(&GigabyteSet::default(), &devices);
    pl011::init(pl011::FALLBACK_BASE);
    println!("mast: no usable device tree at {address:#x}: {why}");
    boot::power_off(ExitCode::BOOT_FAILURE)
}

/// The Rust half of boot, called by `start` on the boot stack with the MMU on.
///
/// `dtb` is the device tree's address from x0, `entry_ticks` the counter at the first instruction,
/// `entry_el` the exception level the loader entered at (1 or 2).
#[unsafe(no_mangle)]
extern "C" fn mast_aarch64_start(dtb: usize, entry_ticks: u64, entry_el: u64) -> ! {
    let fdt = match device_tree(dtb) {
        Ok(fdt) => fdt,
        Err(why) => fail_without_device_tree(dtb, why),
    };
    let mut platform = platform::discover(&fdt);
    #[cfg(feature = "virtio")]
    devices::remember(fdt);

    let mut ram = GigabyteSet::default();
    platform.ram.as_slice().iter().for_each(|&r| ram.insert(r));
    mmu::map(&ram, &platform.devices);
    pl011::init(platform.uart);
    // Entered at EL2, nothing answers HVC any more (the boot code made it undefined).
    let psci = platform.psci.filter(|&c| !(c == Conduit::Hvc && entry_el == 2));
    power::set_psci(psci);
    timer::init(platform.timer_hz);
    let entry = Instant::from_nanos(timer::ticks_to_ns(entry_ticks));

    // The image and everything below it in its RAM region (QEMU's boot stub, firmware data), and the
    // device tree, which the command line and platform name point into.
    let (image_start, image_end) = (&raw const __mast_start as u64, &raw const __mast_end as u64);
    let ram_regions = platform.ram.as_slice();
    let below = ram_regions.iter().find(|r| r.contains(image_start)).map_or(image_start, |r| r.address);
    platform.reserved.push(Region { address: below, size: image_end - below });
    platform.reserved.push(Region { address: dtb as u64, size: fdt.total_size() as u64 });

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
    let heap = fdt::largest_free_span(ram_regions, platform.reserved.as_slice(), HEAP_ALIGN)
        .map_or(0..0, |r| r.address as usize..r.end() as usize);
    let ram_bytes = ram_regions.iter().fold(0u64, |sum, r| sum.saturating_add(r.size));
    let data =
        platform.initrd.filter(|d| ram_regions.iter().any(|r| r.contains(d.address) && d.end() <= r.end())).map(|d| {
            // SAFETY: the loader put the initrd in RAM (checked just above), which the identity map
            // covers as normal memory; it is reserved from the heap and nothing writes it, so a
            // shared 'static borrow is sound.
            unsafe { core::slice::from_raw_parts(d.address as *const u8, d.size as usize) }
        });

    boot::start(BootInfo { platform: platform.name, cmdline, ram_bytes: ram_bytes as usize, heap, entry, data })
}
