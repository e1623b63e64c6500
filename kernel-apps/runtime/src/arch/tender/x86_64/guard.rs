//! The stacks' guard pages, taken out of the tender's identity map at boot.
//!
//! The tender maps all of RAM (the first 2 MiB in 4 KiB pages, the rest in 2 MiB pages, see the
//! `tender-abi` crate), so the guard pages below the boot, double-fault and kernel stacks
//! ([`super::segments`]) are mapped when the guest starts. The page tables live in guest RAM and
//! belong to the guest, so the runtime edits them itself, at CPL 0 before anything runs on those
//! stacks: a guard page inside a 2 MiB page gets that page split into a table of 4 KiB pages (from
//! [`SPLIT_TABLES`], in `.bss`), then its own entry is cleared. An overflow then page-faults on the
//! guard and [`super::idt`] reports it (status 102) instead of the guest running into whatever
//! lies below the stack, or the tender seeing a triple fault.
//!
//! Doing this in the guest keeps the tender's ABI as it is: the tender needs to know nothing about
//! the image's layout.

use core::arch::asm;

use super::segments;

const PRESENT: u64 = 1 << 0;
/// PS in a page-directory entry: a 2 MiB page rather than a table.
const HUGE: u64 = 1 << 7;
/// The physical address bits of an entry.
const ADDRESS: u64 = 0x000f_ffff_ffff_f000;
/// The flags a 2 MiB entry passes on to the 4 KiB entries that replace it: present, writable, user,
/// write-through, cache-disable, accessed, dirty. Bit 7 is PAT in a 4 KiB entry, so PS is not
/// copied; the 2 MiB entry's PAT bit (12) is never set by the tender.
const INHERITED_FLAGS: u64 = 0x7f;
/// A table entry: present, writable, user-accessible (the appliance runs at CPL 3).
const TABLE: u64 = 0x7;
const ENTRIES: usize = 512;

#[repr(C, align(4096))]
struct PageTable([u64; ENTRIES]);

/// One table per guard page, in case each lies in a different 2 MiB page. `.bss`, which the tender
/// hands over zeroed and which costs the host nothing until a split writes it.
static mut SPLIT_TABLES: [PageTable; 3] = [const { PageTable([0; ENTRIES]) }; 3];

/// Unmaps the guard pages below the three stacks. Runs once, at CPL 0, on the boot stack.
pub(super) fn unmap_stack_guards() {
    let guards = [
        &raw const segments::mast_stack_guard as u64,
        &raw const segments::mast_fault_stack_guard as u64,
        &raw const segments::mast_kernel_stack_guard as u64,
    ];
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects; this runs at CPL 0.
    unsafe { asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags)) };
    let tables = (&raw mut SPLIT_TABLES).cast::<PageTable>();
    let mut next_table = 0;
    for guard in guards {
        // SAFETY: CR3 and every present table entry point at the tender's page-table pages, which
        // lie in guest RAM, identity-mapped and used by this CPU alone; the indices are below 512.
        let pde = unsafe {
            let pml4 = (cr3 & ADDRESS) as *const u64;
            let pml4e = pml4.add((guard >> 39) as usize % ENTRIES).read_volatile();
            if pml4e & PRESENT == 0 {
                continue;
            }
            let pdpt = (pml4e & ADDRESS) as *const u64;
            let pdpte = pdpt.add((guard >> 30) as usize % ENTRIES).read_volatile();
            if pdpte & PRESENT == 0 || pdpte & HUGE != 0 {
                continue;
            }
            ((pdpte & ADDRESS) as *mut u64).add((guard >> 21) as usize % ENTRIES)
        };
        // SAFETY: `pde` points into the page directory (above).
        let entry = unsafe { pde.read_volatile() };
        if entry & PRESENT == 0 {
            continue;
        }
        if entry & HUGE != 0 {
            // `next_table` < 3: there are three guards, and each splits at most one page.
            // SAFETY: the table is inside SPLIT_TABLES and unused until its descriptor is written.
            let table = unsafe { tables.add(next_table) }.cast::<u64>();
            next_table += 1;
            let base = entry & ADDRESS & !((1 << 21) - 1);
            for index in 0..ENTRIES {
                let page = base + (index as u64) * 4096;
                // SAFETY: inside the fresh table; nothing walks it yet.
                unsafe { table.add(index).write_volatile(page | (entry & INHERITED_FLAGS)) };
            }
            // SAFETY: replaces the 2 MiB page with a table mapping the same memory the same way
            // (x86 needs no break-before-make; the TLB is flushed below).
            unsafe { pde.write_volatile(table as u64 | TABLE) };
        }
        // SAFETY: the entry (now) points at a page table in guest RAM: the tender's PT for the
        // first 2 MiB, or one of SPLIT_TABLES.
        unsafe {
            let pt = (pde.read_volatile() & ADDRESS) as *mut u64;
            pt.add((guard >> 12) as usize % ENTRIES).write_volatile(0);
        }
        // SAFETY: drops whatever translation the TLB holds for the guard's address: its 4 KiB
        // entry, or the 2 MiB page that held it before the split. `invlpg` rather than reloading
        // CR3, which under nested paging throws away every shadow translation at a cost.
        unsafe { asm!("invlpg [{}]", in(reg) guard, options(nostack, preserves_flags)) };
    }
}
