//! The identity map: one level-1 translation table of 1 GiB blocks.
//!
//! Virtual addresses equal physical ones. With a 4 KiB granule and T0SZ = 25 the table walk starts
//! at level 1, so 512 entries of 1 GiB cover the low 512 GiB. A gigabyte is mapped
//!
//! - as Normal memory, write-back cacheable, inner shareable, if RAM (a device tree memory node) lies
//!   in it;
//! - as Device-nGnRnE, never executable, if a device the tree lists at the top level (or the console
//!   UART) lies in it and no RAM does;
//! - not at all otherwise, so a stray access faults (the `crash fault` appliance relies on that).
//!
//! The boot assembly maps the image's and the device tree's gigabytes before the MMU goes on;
//! [`map`] adds the rest once the tree is read. It only ever fills invalid entries, never changes a
//! live one, so it needs no break-before-make sequence or TLB invalidation.
//!
//! # Not supported
//! - A gigabyte holding both RAM and devices (e.g. Raspberry Pi 4's peripherals at 0xfe00_0000) is
//!   mapped as Normal memory, which is wrong for the devices; such boards need 2 MiB blocks.
//! - RAM or devices above 512 GiB are not mapped.
//! - Upper-half (TTBR1) addresses: their walks are disabled.
//! - Separate permissions: everything is read-write and (except devices) executable; there are no
//!   guard pages.

use core::arch::asm;

use crate::fdt::Region;

/// log2 of the bytes one level-1 block maps.
pub(super) const GIB_SHIFT: u32 = 30;
/// Entries in the level-1 table, and gigabytes it maps.
pub(super) const ENTRIES: usize = 512;

// Block descriptor fields (Arm ARM, "VMSAv8-64 translation table format descriptors").
const DESC_BLOCK: u64 = 0b01;
const DESC_ATTR_INDEX_SHIFT: u32 = 2;
const DESC_INNER_SHAREABLE: u64 = 0b11 << 8;
/// The access flag: set, because hardware management of it is not enabled and a clear flag faults.
const DESC_ACCESS_FLAG: u64 = 1 << 10;
const DESC_PXN: u64 = 1 << 53;
const DESC_UXN: u64 = 1 << 54;

/// MAIR_EL1 attribute indices.
const ATTR_DEVICE_NGNRNE: u64 = 0;
const ATTR_NORMAL_WB: u64 = 1;
/// MAIR_EL1: attribute 0 is Device-nGnRnE (0x00); attribute 1 is Normal memory, inner and outer
/// write-back non-transient, read- and write-allocate (0xff).
pub(super) const MAIR: u64 = (0x00 << (8 * ATTR_DEVICE_NGNRNE)) | (0xff << (8 * ATTR_NORMAL_WB));

/// Low bits of a 1 GiB block of RAM: cacheable, inner shareable, not executable at EL0.
pub(super) const NORMAL_BLOCK: u64 =
    DESC_BLOCK | (ATTR_NORMAL_WB << DESC_ATTR_INDEX_SHIFT) | DESC_INNER_SHAREABLE | DESC_ACCESS_FLAG | DESC_UXN;
/// Low bits of a 1 GiB block of devices: never executable, so the CPU cannot fetch instructions
/// (even speculatively) from device registers.
pub(super) const DEVICE_BLOCK: u64 =
    DESC_BLOCK | (ATTR_DEVICE_NGNRNE << DESC_ATTR_INDEX_SHIFT) | DESC_ACCESS_FLAG | DESC_PXN | DESC_UXN;

/// TCR_EL1 without IPS (which the boot code fills in from the CPU's physical address size):
/// T0SZ = 25 (39-bit addresses, walks start at level 1), 4 KiB granule (TG0 = 0), table walks
/// through the inner and outer write-back caches, inner shareable; TTBR1 walks disabled (EPD1).
pub(super) const TCR: u64 = 25 // T0SZ
    | (0b01 << 8) // IRGN0: write-back, read- and write-allocate
    | (0b01 << 10) // ORGN0: the same
    | (0b11 << 12) // SH0: inner shareable
    | (25 << 16) // T1SZ, unused but valid
    | (1 << 23) // EPD1
    | (0b10 << 30); // TG1: 4 KiB

/// SCTLR_EL1 bits that are RES1 in Armv8.0 (EOS, TSCXT, EIS, SPAN, nTLSMD, LSMAOE).
pub(super) const SCTLR_MMU_OFF: u64 = (1 << 11) | (1 << 20) | (1 << 22) | (1 << 23) | (1 << 28) | (1 << 29);
/// SCTLR_EL1 for running: MMU (M), data and instruction caches (C, I) and stack alignment checks
/// (SA, SA0) on; alignment checks (A) off, since Rust assumes unaligned Normal accesses work;
/// little-endian.
pub(super) const SCTLR_MMU_ON: u64 = SCTLR_MMU_OFF | 1 | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 12);

/// A set of gigabytes (level-1 table indices).
#[derive(Clone, Copy, Default)]
pub(super) struct GigabyteSet([u64; ENTRIES / 64]);

impl GigabyteSet {
    /// Adds every gigabyte `region` touches (within the 512 GiB the table maps).
    pub(super) fn insert(&mut self, region: Region) {
        if region.size == 0 {
            return;
        }
        let first = region.address >> GIB_SHIFT;
        let last = (region.end() - 1) >> GIB_SHIFT;
        for index in first..=last.min(ENTRIES as u64 - 1) {
            if let Some(word) = self.0.get_mut(index as usize / 64) {
                *word |= 1 << (index % 64);
            }
        }
    }

    pub(super) fn contains(&self, index: usize) -> bool {
        self.0.get(index / 64).is_some_and(|word| word & (1 << (index % 64)) != 0)
    }
}

unsafe extern "C" {
    /// The level-1 table (in `start.rs`), 4 KiB aligned; live in TTBR0_EL1 since boot.
    static mut __mast_l1_table: [u64; ENTRIES];
}

/// Completes the identity map: RAM gigabytes become Normal memory, device gigabytes Device memory.
///
/// Entries that are already valid (the image's and the device tree's gigabytes, mapped by the boot
/// code) are left alone: they are in use, and changing a live entry would need break-before-make.
pub(super) fn map(ram: &GigabyteSet, devices: &GigabyteSet) {
    let table = (&raw mut __mast_l1_table).cast::<u64>();
    for index in 0..ENTRIES {
        let attributes = if ram.contains(index) {
            NORMAL_BLOCK
        } else if devices.contains(index) {
            DEVICE_BLOCK
        } else {
            continue;
        };
        // SAFETY: `index` is below ENTRIES, so the pointer stays inside the table. Only this CPU
        // runs, and nothing else holds a reference to the table, which the MMU reads through the
        // cache (TCR_EL1 says the walks are cacheable), so plain stores reach it.
        let entry = unsafe { table.add(index) };
        // SAFETY: as above; the entry is aligned and initialised by the boot code.
        if unsafe { entry.read_volatile() } & DESC_BLOCK != 0 {
            continue;
        }
        let descriptor = ((index as u64) << GIB_SHIFT) | attributes;
        // SAFETY: as above. Filling an invalid entry cannot disturb a translation in use.
        unsafe { entry.write_volatile(descriptor) };
    }
    // SAFETY: barriers only. The DSB makes the new entries visible to the table walker before the
    // ISB; invalid entries are never cached in the TLB, so no invalidation is needed.
    unsafe { asm!("dsb ishst", "isb", options(nostack, preserves_flags)) };
}
