//! The identity map: a level-1 translation table of 1 GiB blocks, refined by level-2 tables of
//! 2 MiB blocks where a gigabyte mixes RAM and devices.
//!
//! Virtual addresses equal physical ones. With a 4 KiB granule and T0SZ = 25 the table walk starts
//! at level 1, so 512 entries of 1 GiB cover the low 512 GiB. A gigabyte is mapped
//!
//! - as Normal memory, write-back cacheable, inner shareable, if RAM (a device tree memory node) lies
//!   in it;
//! - as Device-nGnRnE, never executable, if a device the tree lists at the top level (or the console
//!   UART) lies in it and no RAM does;
//! - through a level-2 table if it holds the image (the boot code builds that one) or both RAM and
//!   one of the board's device windows (the Raspberry Pi 3's peripherals share the first gigabyte
//!   with RAM; the Pi 4's share the fourth). In a level-2 table a 2 MiB block touching a board device
//!   window is Device-nGnRnE, else one touching RAM is Normal, else it is left unmapped;
//! - not at all otherwise, so a stray access faults (the `crash fault` appliance relies on that).
//!
//! The boot assembly maps the image's and the device tree's gigabytes before the MMU goes on;
//! [`map`] adds the rest once the tree is read. It only ever fills invalid entries, never changes a
//! live one, so it needs no break-before-make sequence or TLB invalidation.
//!
//! # Not supported
//! - More than [`L2_TABLES`] - 1 mixed gigabytes besides the image's (the rest stay unmapped, and
//!   boot says so); 4 KiB pages (level 3) anywhere but in the 2 MiB block holding the stack guard
//!   page, which the boot code maps with one level-3 table so the guard page can stay unmapped.
//! - A device tree's own devices inside a gigabyte with RAM: the tree's devices are tracked per
//!   gigabyte, so only the board's fixed windows are placed at 2 MiB granularity.
//! - RAM or devices above 512 GiB are not mapped.
//! - Upper-half (TTBR1) addresses: their walks are disabled.
//! - Separate permissions: everything is read-write and (except devices) executable; the one
//!   guard page is the stack's (below the 128 KiB stack; the exception stack has none).

use core::arch::asm;

use crate::fdt::Region;

/// log2 of the bytes one level-1 block maps.
pub(super) const GIB_SHIFT: u32 = 30;
/// Entries in the level-1 table, and gigabytes it maps.
pub(super) const ENTRIES: usize = 512;

/// Bytes one level-2 block maps.
pub(super) const L2_BLOCK_SIZE: u64 = 1 << 21;
/// Level-2 tables reserved behind the level-1 table: the image's, and three for mixed gigabytes.
pub(super) const L2_TABLES: usize = 4;

// Block descriptor fields (Arm ARM, "VMSAv8-64 translation table format descriptors"); level-1 and
// level-2 block descriptors share them.
const DESC_BLOCK: u64 = 0b01;
/// A table descriptor (levels 0 to 2): bits 1:0 = 0b11, the next table's address in bits 47:12.
pub(super) const DESC_TABLE: u64 = 0b11;
const DESC_ADDRESS_MASK: u64 = 0x0000_ffff_ffff_f000;
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
/// Low bits of a level-3 page (4 KiB) of RAM: the block's attributes, with bits 1:0 = 0b11 as a
/// level-3 page descriptor has them.
pub(super) const NORMAL_PAGE: u64 = NORMAL_BLOCK | DESC_TABLE;
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
    /// The level-2 tables behind it; the first is live (the image's gigabyte), the rest unused
    /// until [`map`] hands them out. Not zeroed by anyone but their user.
    static mut __mast_l2_tables: [[u64; ENTRIES]; L2_TABLES];
}

fn overlaps(a: Region, b: Region) -> bool {
    a.size != 0 && b.size != 0 && a.address < b.end() && b.address < a.end()
}

/// Fills the invalid entries of a table: entry `index` maps `base + index * size` with whatever
/// `attributes` says (`None`: leave it unmapped).
///
/// # Safety
/// `table` points to a 4 KiB-aligned table of ENTRIES entries that only this CPU uses, read by the
/// walker through the cache (TCR_EL1 says the walks are cacheable), so plain stores reach it.
unsafe fn fill(table: *mut u64, base: u64, size: u64, attributes: impl Fn(Region) -> Option<u64>) {
    for index in 0..ENTRIES {
        let address = base + index as u64 * size;
        let Some(attributes) = attributes(Region { address, size }) else { continue };
        // SAFETY: `index` is below ENTRIES, so the pointer stays inside the table (the caller's
        // promise), aligned and initialised.
        let entry = unsafe { table.add(index) };
        // SAFETY: as above.
        if unsafe { entry.read_volatile() } & DESC_BLOCK != 0 {
            continue; // live: changing it would need break-before-make
        }
        // SAFETY: as above. Filling an invalid entry cannot disturb a translation in use.
        unsafe { entry.write_volatile(address | attributes) };
    }
}

/// Completes the identity map: RAM becomes Normal memory, devices Device memory, at 1 GiB
/// granularity except where a gigabyte mixes RAM and one of the board's device `windows` (see the
/// module docs). Returns how many such gigabytes had to stay unmapped for want of a level-2 table.
///
/// Entries that are already valid (the image's and the device tree's memory, mapped by the boot
/// code) are left alone: they are in use, and changing a live entry would need break-before-make.
pub(super) fn map(ram: &[Region], devices: &GigabyteSet, windows: &[Region]) -> usize {
    let l1 = (&raw mut __mast_l1_table).cast::<u64>();
    let l2_pool = (&raw mut __mast_l2_tables).cast::<u64>();
    // Table 0 is the boot code's.
    let mut next_l2 = 1;
    let mut unmapped = 0;
    for index in 0..ENTRIES {
        let gigabyte = Region { address: (index as u64) << GIB_SHIFT, size: 1 << GIB_SHIFT };
        let has_ram = ram.iter().any(|&r| overlaps(r, gigabyte));
        let has_window = windows.iter().any(|&w| overlaps(w, gigabyte));
        // SAFETY: `index` is below ENTRIES, so the pointer stays inside the level-1 table, which
        // only this CPU uses; the boot code initialised every entry.
        let entry = unsafe { l1.add(index) };
        // SAFETY: as above.
        let current = unsafe { entry.read_volatile() };
        let l2 = if current & DESC_TABLE == DESC_TABLE {
            (current & DESC_ADDRESS_MASK) as *mut u64
        } else if current & DESC_BLOCK != 0 {
            continue; // a live block from the boot code
        } else if has_ram && has_window {
            if next_l2 == L2_TABLES {
                unmapped += 1;
                continue;
            }
            // SAFETY: next_l2 < L2_TABLES, so the table lies inside the pool; tables from 1 on are
            // unused until here, and each is handed out once.
            let table = unsafe { l2_pool.add(next_l2 * ENTRIES) };
            next_l2 += 1;
            for i in 0..ENTRIES {
                // SAFETY: inside the fresh table; nothing walks it until the descriptor below.
                unsafe { table.add(i).write_volatile(0) };
            }
            table
        } else {
            let attributes = if has_ram {
                NORMAL_BLOCK
            } else if has_window || devices.contains(index) {
                DEVICE_BLOCK
            } else {
                continue;
            };
            // SAFETY: as above. Filling an invalid entry cannot disturb a translation in use.
            unsafe { entry.write_volatile(gigabyte.address | attributes) };
            continue;
        };
        let attributes = |block: Region| {
            if windows.iter().any(|&w| overlaps(w, block)) {
                Some(DEVICE_BLOCK)
            } else if ram.iter().any(|&r| overlaps(r, block)) {
                Some(NORMAL_BLOCK)
            } else {
                None
            }
        };
        // SAFETY: `l2` is the boot code's table or one from the pool, 4 KiB aligned and used by this
        // CPU alone.
        unsafe { fill(l2, gigabyte.address, L2_BLOCK_SIZE, attributes) };
        if current & DESC_TABLE != DESC_TABLE {
            // SAFETY: barrier only: the new table's entries reach the walker before the descriptor
            // that makes it reachable.
            unsafe { asm!("dsb ishst", options(nostack, preserves_flags)) };
            // SAFETY: the entry is inside the level-1 table and invalid, so filling it cannot
            // disturb a translation in use.
            unsafe { entry.write_volatile(l2 as u64 | DESC_TABLE) };
        }
    }
    // SAFETY: barriers only. The DSB makes the new entries visible to the table walker before the
    // ISB; invalid entries are never cached in the TLB, so no invalidation is needed.
    unsafe { asm!("dsb ishst", "isb", options(nostack, preserves_flags)) };
    unmapped
}
