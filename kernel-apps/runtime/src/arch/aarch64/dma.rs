//! Cache maintenance for device DMA: the hook points a non-coherent device needs.
//!
//! A DMA-coherent device (every virtio device QEMU `virt` describes: their tree nodes say
//! `dma-coherent`) sees the CPU's caches, and these functions do nothing for it. A device that is
//! not coherent reads and writes RAM behind the caches, so before it reads a buffer the CPU's
//! dirty lines must be cleaned to the point of coherency, and before the CPU reads what the device
//! wrote the stale lines must be invalidated. [`share`] and [`unshare`] do exactly that for the buffers
//! virtio-drivers passes through its `Hal`, when [`set_coherent`] has been told the device is not
//! coherent.
//!
//! # Not supported
//! - Non-coherent virtqueue rings: virtio-drivers reads and writes the rings in place, without a
//!   hook, so a non-coherent device would also need them mapped non-cacheable, which the 1 GiB
//!   block identity map cannot express. [`crate::virtio`] therefore refuses non-coherent devices,
//!   and these hooks are the part of that work already done.

use core::{
    arch::asm,
    ops::Range,
    sync::atomic::{AtomicBool, Ordering},
};

use virtio_drivers::BufferDirection;

/// Whether DMA needs no cache maintenance.
static COHERENT: AtomicBool = AtomicBool::new(true);

/// Records whether the devices in use are DMA-coherent.
pub(crate) fn set_coherent(coherent: bool) {
    COHERENT.store(coherent, Ordering::Relaxed);
}

/// Makes `buffer` ready for the device: cleans what the device will read.
pub(crate) fn share(buffer: Range<usize>, direction: BufferDirection) {
    if COHERENT.load(Ordering::Relaxed) {
        return;
    }
    match direction {
        // The device reads it: write back the CPU's dirty lines.
        BufferDirection::DriverToDevice => maintain(buffer, Op::Clean),
        // The device writes it: write back and drop the lines now, so no dirty line is evicted
        // over the device's data later.
        BufferDirection::DeviceToDriver | BufferDirection::Both => maintain(buffer, Op::CleanInvalidate),
    }
}

/// Makes `buffer` ready for the CPU again: drops stale lines over what the device wrote.
pub(crate) fn unshare(buffer: Range<usize>, direction: BufferDirection) {
    if COHERENT.load(Ordering::Relaxed) || direction == BufferDirection::DriverToDevice {
        return;
    }
    // Lines may have been fetched speculatively while the device owned the buffer. Clean and
    // invalidate rather than invalidate alone, so that a line the buffer shares with other data
    // never loses the CPU's writes to that data.
    maintain(buffer, Op::CleanInvalidate)
}

#[derive(Clone, Copy)]
enum Op {
    Clean,
    CleanInvalidate,
}

fn maintain(buffer: Range<usize>, op: Op) {
    // CTR_EL0.DminLine: log2 of the smallest data cache line, in 4-byte words.
    let line = 4usize << ((read_sysreg!("ctr_el0") >> 16) & 0xf);
    let mut address = buffer.start & !(line - 1);
    while address < buffer.end {
        // SAFETY: data cache maintenance by virtual address changes no data the program can
        // observe: cleaning writes dirty lines back, and clean-and-invalidate writes them back
        // before dropping them. (A buffer that shares a cache line with data the CPU writes while
        // the device owns the buffer would still be corrupted by the device's view of that line;
        // the drivers' buffers are whole cache lines for that reason.)
        unsafe {
            match op {
                Op::Clean => asm!("dc cvac, {}", in(reg) address, options(nostack, preserves_flags)),
                Op::CleanInvalidate => asm!("dc civac, {}", in(reg) address, options(nostack, preserves_flags)),
            }
        }
        address += line;
    }
    // SAFETY: a barrier only: the maintenance completes before the device is told to look.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
}
