//! The stacks' guard pages, taken out of the tender's identity map at boot.
//!
//! The tender maps all of RAM (the first 2 MiB in 4 KiB pages, the rest in 2 MiB pages, see the
//! `tender-abi` crate), so the guard pages below the boot, double-fault and kernel stacks
//! ([`super::segments`]) are mapped when the guest starts. The page tables live in guest RAM and
//! belong to the guest, so the runtime edits them itself, at CPL 0 before anything runs on those
//! stacks, with [`crate::page_guard::unmap`]: a guard inside a 2 MiB page gets that page split
//! into a table of 4 KiB pages (from [`SPLIT_TABLES`], in `.bss`). An overflow then page-faults on
//! the guard and [`super::idt`] reports it (status 102) instead of the guest running into whatever
//! lies below the stack, or the tender seeing a triple fault.
//!
//! Doing this in the guest keeps the tender's ABI as it is: the tender needs to know nothing about
//! the image's layout.

use core::arch::asm;

use super::segments;
use crate::page_guard::{self, PhysicalMemory, Unmapped};

const ENTRIES: usize = 512;

#[repr(C, align(4096))]
struct PageTable([u64; ENTRIES]);

/// One table per guard page, in case each lies in a different 2 MiB page. `.bss`, which the tender
/// hands over zeroed and which costs the host nothing until a split writes it.
static mut SPLIT_TABLES: [PageTable; 3] = [const { PageTable([0; ENTRIES]) }; 3];

/// The guest's RAM through its identity map (virtual = physical).
struct IdentityMapped;

impl PhysicalMemory for IdentityMapped {
    fn read(&mut self, address: u64) -> u64 {
        // SAFETY: `page_guard` reads only entries of the tender's page tables (or of
        // SPLIT_TABLES), found through CR3: 8-byte aligned, in guest RAM, identity-mapped.
        unsafe { (address as *const u64).read_volatile() }
    }

    fn write(&mut self, address: u64, value: u64) {
        // SAFETY: as for `read`; the tables are this CPU's alone, and `page_guard` writes only
        // the entries that map the guard page (or a fresh split table before it is linked).
        unsafe { (address as *mut u64).write_volatile(value) }
    }
}

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
        // Three guards, three tables: a split never runs out.
        // SAFETY: `next_table` < 3 (each guard takes at most one); only the address is taken.
        let spare = (next_table < 3).then(|| unsafe { tables.add(next_table) } as u64);
        if page_guard::unmap(&mut IdentityMapped, cr3, guard, spare) == Unmapped::Split {
            next_table += 1;
        }
        // SAFETY: drops whatever translation the TLB holds for the guard's address: its 4 KiB
        // entry, or the 2 MiB page that held it before the split. `invlpg` rather than reloading
        // CR3, which under nested paging throws away every shadow translation at a cost.
        unsafe { asm!("invlpg [{}]", in(reg) guard, options(nostack, preserves_flags)) };
    }
}
