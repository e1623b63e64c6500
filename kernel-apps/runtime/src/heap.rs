//! The heap: up to [`REGIONS`] free regions of RAM, chosen by the architecture at boot.
//!
//! Free RAM is rarely one piece: on QEMU `virt` the image sits 2 MiB into RAM, so the 2 MiB below
//! it and everything above it are two regions. Each region is its own first-fit heap
//! (`linked_list_allocator`, which manages one contiguous range); an allocation is tried in each,
//! the largest first, and freed into the one its address lies in. One allocation never spans two
//! regions, so the largest single allocation is bounded by the largest region.

use core::{
    alloc::{GlobalAlloc, Layout},
    ops::Range,
    ptr::{self, NonNull},
};

use linked_list_allocator::LockedHeap;

/// How many separate regions the heap can hold.
pub(crate) const REGIONS: usize = 3;

/// Regions smaller than this are not worth a heap of their own.
const MIN_REGION: usize = 4096;

struct Regions([LockedHeap; REGIONS]);

#[global_allocator]
static HEAP: Regions = Regions([const { LockedHeap::empty() }; REGIONS]);

// SAFETY: every allocation comes from exactly one region's allocator and is returned to the region
// whose range holds it; the regions never overlap (the caller of `add` promises it).
unsafe impl GlobalAlloc for Regions {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        for region in &self.0 {
            if let Ok(block) = region.lock().allocate_first_fit(layout) {
                return block.as_ptr();
            }
        }
        ptr::null_mut()
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(block) = NonNull::new(block) else { return };
        for region in &self.0 {
            let mut heap = region.lock();
            if heap.bottom() <= block.as_ptr() && block.as_ptr() < heap.top() {
                // SAFETY: `block` came from this region's allocator (it lies in its range, and the
                // ranges are disjoint) with this layout, as GlobalAlloc's contract says.
                unsafe { heap.deallocate(block, layout) };
                return;
            }
        }
    }
}

/// Hands `region` to the allocator as one more heap region. Called by boot, before anything that
/// allocates needs the memory; regions beyond [`REGIONS`] or smaller than a page are ignored.
/// Callers add the largest region first: allocations try regions in the order they were added.
///
/// # Safety
/// `region` must be RAM that nothing else uses for the rest of the appliance's life (not the kernel
/// image, not the stack, not page tables, not boot data still to be read) and must not overlap a
/// region added before.
pub(crate) unsafe fn add(region: Range<usize>) {
    let size = region.end.saturating_sub(region.start);
    if size < MIN_REGION {
        return;
    }
    for slot in &HEAP.0 {
        let mut heap = slot.lock();
        if heap.size() == 0 {
            // SAFETY: the caller guarantees the region is unused RAM owned by the heap from now on.
            unsafe { heap.init(region.start as *mut u8, size) };
            return;
        }
    }
}

/// Bytes currently free in the heap, over all regions.
pub(crate) fn free_bytes() -> usize {
    HEAP.0.iter().map(|region| region.lock().free()).sum()
}
