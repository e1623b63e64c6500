//! The heap: one contiguous free region of RAM, chosen by the architecture at boot.

use core::ops::Range;

use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Hands `region` to the allocator. Called once, before anything allocates.
///
/// # Safety
/// `region` must be RAM that nothing else uses for the rest of the appliance's life: not the kernel
/// image, not the stack, not page tables, and not boot data still to be read.
pub(crate) unsafe fn init(region: Range<usize>) {
    let size = region.end.saturating_sub(region.start);
    // SAFETY: the caller guarantees the region is unused RAM owned by the heap from now on.
    unsafe { HEAP.lock().init(region.start as *mut u8, size) };
}

/// Bytes currently free in the heap.
pub(crate) fn free_bytes() -> usize {
    HEAP.lock().free()
}
