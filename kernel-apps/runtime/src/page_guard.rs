//! Taking one 4 KiB page out of an x86_64 identity map in place: the logic the tender port uses to
//! unmap its stacks' guard pages (`arch::tender::x86_64::guard`), over any [`PhysicalMemory`], so
//! it is unit-tested on the host against a map shaped like the tender's.
//!
//! The walk follows CR3 through the PML4, PDPT and page directory. A page in a 4 KiB table has its
//! entry cleared; a page inside a 2 MiB page gets that page split first: a spare table is filled
//! with 512 entries mapping the same memory with the same flags, and the directory entry points
//! at it. The caller flushes the TLB entry for the page afterwards.
//!
//! Not supported: 1 GiB pages (the page is left mapped: [`Unmapped::Unsupported`]), PAT on the
//! split pages (bit 12 of a 2 MiB entry is not carried over; the tender never sets it).

/// Reads and writes of 64-bit page-table entries at physical addresses.
pub trait PhysicalMemory {
    /// The entry at `address` (8-byte aligned, inside a page table).
    fn read(&mut self, address: u64) -> u64;
    /// Writes the entry at `address`.
    fn write(&mut self, address: u64, value: u64);
}

const PRESENT: u64 = 1 << 0;
/// PS in a PDPT or page-directory entry: a 1 GiB or 2 MiB page rather than a table.
const HUGE: u64 = 1 << 7;
/// The physical address bits of an entry.
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
/// The flags a 2 MiB entry passes on to the 4 KiB entries that replace it: present, writable, user,
/// write-through, cache-disable, accessed, dirty. Bit 7 means PAT in a 4 KiB entry, so PS is not
/// copied.
const INHERITED_FLAGS: u64 = 0x7f;
/// A table entry: present, writable, user-accessible (appliances run at CPL 3).
const TABLE: u64 = 0x7;
const ENTRIES: u64 = 512;

/// What [`unmap`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmapped {
    /// The page's 4 KiB entry was cleared.
    Cleared,
    /// The 2 MiB page holding it was split into the spare table given, then its entry cleared.
    Split,
    /// Nothing mapped the page.
    NotMapped,
    /// A 1 GiB page maps it, or a split was needed and no spare table was given: it stays mapped.
    Unsupported,
}

/// Unmaps the 4 KiB page at `page` in the map rooted at `cr3`, splitting a 2 MiB page with `spare`
/// (the physical address of a zeroed, page-aligned table nothing else uses) if one holds it.
pub fn unmap(memory: &mut impl PhysicalMemory, cr3: u64, page: u64, spare: Option<u64>) -> Unmapped {
    let index = |shift: u32| ((page >> shift) % ENTRIES) * 8;
    let pml4e = memory.read((cr3 & ADDRESS) + index(39));
    if pml4e & PRESENT == 0 {
        return Unmapped::NotMapped;
    }
    let pdpte = memory.read((pml4e & ADDRESS) + index(30));
    if pdpte & PRESENT == 0 {
        return Unmapped::NotMapped;
    }
    if pdpte & HUGE != 0 {
        return Unmapped::Unsupported;
    }
    let pde_at = (pdpte & ADDRESS) + index(21);
    let pde = memory.read(pde_at);
    if pde & PRESENT == 0 {
        return Unmapped::NotMapped;
    }
    let mut outcome = Unmapped::Cleared;
    let table = if pde & HUGE != 0 {
        let Some(table) = spare else { return Unmapped::Unsupported };
        let base = pde & ADDRESS & !((1 << 21) - 1);
        for entry in 0..ENTRIES {
            memory.write(table + entry * 8, (base + entry * 4096) | (pde & INHERITED_FLAGS));
        }
        // x86 needs no break-before-make: the new table maps what the 2 MiB page did.
        memory.write(pde_at, table | TABLE);
        outcome = Unmapped::Split;
        table
    } else {
        pde & ADDRESS
    };
    let pte_at = table + index(12);
    if outcome == Unmapped::Cleared && memory.read(pte_at) & PRESENT == 0 {
        return Unmapped::NotMapped;
    }
    memory.write(pte_at, 0);
    outcome
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Sparse physical memory: unwritten entries read as zero.
    #[derive(Default)]
    struct Memory(HashMap<u64, u64>);

    impl PhysicalMemory for Memory {
        fn read(&mut self, address: u64) -> u64 {
            *self.0.get(&address).unwrap_or(&0)
        }
        fn write(&mut self, address: u64, value: u64) {
            self.0.insert(address, value);
        }
    }

    const PML4: u64 = 0x2000;
    const MIB: u64 = 1 << 20;

    /// The tender's x86_64 map of 16 MiB: the first 2 MiB in 4 KiB pages without page 0, the rest
    /// in 2 MiB pages, every entry user-accessible.
    fn tender_map() -> Memory {
        let (pdpt, pd, pt) = (PML4 + 0x1000, PML4 + 0x2000, PML4 + 0x3000);
        let mut memory = Memory::default();
        memory.write(PML4, pdpt | TABLE);
        memory.write(pdpt, pd | TABLE);
        memory.write(pd, pt | TABLE);
        for page in 1..512 {
            memory.write(pt + page * 8, (page * 4096) | TABLE);
        }
        for huge in 1..8 {
            memory.write(pd + huge * 8, (huge * 2 * MIB) | TABLE | HUGE);
        }
        memory
    }

    /// Where `address` translates to, and with which low flags.
    fn translate(memory: &mut Memory, address: u64) -> Option<(u64, u64)> {
        let step = |memory: &mut Memory, table: u64, shift: u32| memory.read(table + ((address >> shift) % 512) * 8);
        let pml4e = step(memory, PML4, 39);
        let pdpte = step(memory, pml4e & ADDRESS, 30);
        let pde = step(memory, pdpte & ADDRESS, 21);
        if pde & PRESENT == 0 {
            return None;
        }
        if pde & HUGE != 0 {
            return Some(((pde & ADDRESS) + (address & (2 * MIB - 1)), pde & 0x7));
        }
        let pte = step(memory, pde & ADDRESS, 12);
        (pte & PRESENT != 0).then(|| ((pte & ADDRESS) + (address & 0xfff), pte & 0x7))
    }

    #[test]
    fn a_page_in_the_first_two_mib_loses_its_entry_and_nothing_else() {
        let mut memory = tender_map();
        assert_eq!(unmap(&mut memory, PML4, 0x13_4000, None), Unmapped::Cleared);
        assert_eq!(translate(&mut memory, 0x13_4008), None);
        assert_eq!(translate(&mut memory, 0x13_3ff8), Some((0x13_3ff8, 0x7)));
        assert_eq!(translate(&mut memory, 0x13_5000), Some((0x13_5000, 0x7)));
        assert_eq!(unmap(&mut memory, PML4, 0x13_4000, None), Unmapped::NotMapped, "already unmapped");
    }

    #[test]
    fn a_page_in_a_two_mib_page_splits_it_and_the_rest_stays_mapped_alike() {
        let mut memory = tender_map();
        let spare = 0x50_0000; // a table of the caller's, outside the pages checked below
        assert_eq!(unmap(&mut memory, PML4, 5 * MIB + 0x3000, Some(spare)), Unmapped::Split);
        assert_eq!(translate(&mut memory, 5 * MIB + 0x3010), None);
        for address in (4 * MIB..6 * MIB).step_by(4096).filter(|&a| a != 5 * MIB + 0x3000) {
            assert_eq!(translate(&mut memory, address + 8), Some((address + 8, 0x7)), "{address:#x}");
        }
        // A second guard in the same (now split) page needs no spare table.
        assert_eq!(unmap(&mut memory, PML4, 5 * MIB + 0x9000, None), Unmapped::Cleared);
        assert_eq!(translate(&mut memory, 5 * MIB + 0x9000), None);
        assert_eq!(translate(&mut memory, 7 * MIB), Some((7 * MIB, 0x7)), "other 2 MiB pages untouched");
    }

    #[test]
    fn without_a_spare_table_or_a_mapping_nothing_changes() {
        let mut memory = tender_map();
        assert_eq!(unmap(&mut memory, PML4, 3 * MIB, None), Unmapped::Unsupported);
        assert_eq!(translate(&mut memory, 3 * MIB), Some((3 * MIB, 0x7)));
        assert_eq!(unmap(&mut memory, PML4, 0, None), Unmapped::NotMapped, "page 0 is never mapped");
        assert_eq!(unmap(&mut memory, PML4, 64 * MIB, Some(0x50_0000)), Unmapped::NotMapped, "beyond RAM");
    }
}
