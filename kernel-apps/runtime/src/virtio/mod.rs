//! virtio devices on the MMIO transport: discovery, the [`Hal`] that `virtio-drivers` needs, and
//! the drivers appliances use ([`net`], [`block`], and `rng` behind [`crate::entropy`]).
//!
//! # Discovery
//! The architecture lists the platform's virtio-mmio register windows (`arch::virtio_slots`):
//! from the device tree on aarch64; on x86_64 from `virtio_mmio.device=` boot arguments when the
//! loader passes them, else QEMU `microvm`'s fixed windows. `claim` probes each window (magic
//! value, device id; an empty window reads as device id 0) and hands out the first unclaimed
//! device of the requested type, once.
//!
//! # DMA
//! [`Hal`] gives `virtio-drivers` memory from the heap: queues get whole zeroed pages, buffers are
//! used in place. Physical addresses equal virtual ones (both architectures run on an identity map),
//! so translation is the identity. Sharing a buffer with the device runs the architecture's cache
//! maintenance hooks (`arch::dma`), which do nothing on DMA-coherent platforms.
//!
//! # Ring indices past 65,535
//! A virtqueue numbers its entries with 16-bit indices that wrap. virtio-drivers 0.13 compares
//! them wrap-safely except in `VirtQueue::should_notify` with `VIRTIO_RING_F_EVENT_IDX` (which QEMU
//! offers and the crate negotiates): it tests `avail_idx >= avail_event + 1` as plain numbers,
//! where the specification's test (`vring_need_event`) is modular. Both agree whenever one entry
//! is added between checks, as every driver here does (each `transmit_begin`, `receive_begin`
//! and block request adds one entry and checks at once): then the device wants a kick exactly
//! when `avail_event + 1 == avail_idx` (mod 2^16), which the plain test also finds. The two differ
//! only in kicks the device did not ask for (harmless), and would lose a wanted kick only for
//! several entries added across the wrap before one check, which nothing here does. So no
//! workaround is needed; `pump` (`qemu-tests/tests/pump.rs`) pushes 70,000 frames and disk
//! requests through one device each to keep it so.
//!
//! # Not supported
//! - Non-coherent devices (a device tree node without `dma-coherent`): refused by `claim`,
//!   because the rings would need a non-cacheable mapping (see `arch::dma`).
//! - The virtio PCI transport, IOMMUs, and more than 64 transports.

pub mod block;
pub mod net;
pub(crate) mod rng;

use alloc::alloc::{alloc_zeroed, dealloc};
use core::{
    alloc::Layout,
    fmt,
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use virtio_drivers::{
    BufferDirection, PAGE_SIZE, PhysAddr,
    transport::{
        DeviceType, Transport,
        mmio::{MmioTransport, VirtIOHeader},
    },
};

use crate::arch;

/// A virtio-mmio register window the platform describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MmioSlot {
    /// The registers' physical (= virtual) address.
    pub base: usize,
    /// The window's size in bytes: the header and the device's configuration space.
    pub size: usize,
    /// Its interrupt, in the platform's numbering (a GIC INTID, an IOAPIC pin).
    pub irq: u32,
    /// Whether the device's memory accesses are coherent with the CPU's caches.
    pub coherent: bool,
}

/// The most transports the runtime tracks (QEMU `virt` has 32, `microvm` 8 or 24).
const MAX_SLOTS: usize = 64;

/// A fixed-capacity list of slots, built without the heap's help at discovery.
pub(crate) struct MmioSlots {
    slots: [MmioSlot; MAX_SLOTS],
    len: usize,
}

impl MmioSlots {
    pub(crate) const fn new() -> Self {
        MmioSlots { slots: [MmioSlot { base: 0, size: 0, irq: 0, coherent: true }; MAX_SLOTS], len: 0 }
    }

    /// Appends `slot`; slots beyond the capacity are ignored.
    pub(crate) fn push(&mut self, slot: MmioSlot) {
        if let Some(entry) = self.slots.get_mut(self.len) {
            *entry = slot;
            self.len += 1;
        }
    }

    pub(crate) fn as_slice(&self) -> &[MmioSlot] {
        self.slots.get(..self.len).unwrap_or(&[])
    }
}

/// Slots already handed out, one bit per index in `arch::virtio_slots()`.
static CLAIMED: AtomicU64 = AtomicU64::new(0);

/// Why no device could be claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimError {
    /// No unclaimed device of that type on this machine.
    NotFound,
    /// The device at this address is not DMA-coherent, which the runtime does not support yet.
    NotCoherent {
        /// The device's MMIO base address.
        base: usize,
    },
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimError::NotFound => f.write_str("no such virtio device (is one attached to the VM?)"),
            ClaimError::NotCoherent { base } => write!(
                f,
                "the virtio device at {base:#x} is not DMA-coherent, and the runtime cannot map its rings uncached yet"
            ),
        }
    }
}

/// The first unclaimed device of `device_type`, as a transport ready for its driver, and its slot.
pub(crate) fn claim(device_type: DeviceType) -> Result<(MmioTransport<'static>, MmioSlot), ClaimError> {
    for (index, slot) in arch::virtio_slots().iter().enumerate().take(MAX_SLOTS) {
        let bit = 1u64 << index;
        if CLAIMED.load(Ordering::Relaxed) & bit != 0 {
            continue;
        }
        let Some(header) = NonNull::new(slot.base as *mut VirtIOHeader) else { continue };
        if !slot.base.is_multiple_of(4) {
            continue;
        }
        // SAFETY: the architecture lists only register windows the platform describes (device
        // tree nodes, loader arguments or the machine model's fixed layout), which boot mapped as
        // Device memory for the appliance's lifetime; the window is aligned (checked above), and
        // the CLAIMED bit, taken below before the transport escapes, keeps a second transport
        // over the same registers from existing. `new` reads only the magic, version and device
        // id, which have no side effects, and refuses a window without a device.
        let Ok(transport) = (unsafe { MmioTransport::new(header, slot.size) }) else { continue };
        if transport.device_type() != device_type {
            continue;
        }
        if !slot.coherent {
            return Err(ClaimError::NotCoherent { base: slot.base });
        }
        if CLAIMED.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
            continue;
        }
        return Ok((transport, *slot));
    }
    Err(ClaimError::NotFound)
}

/// The `virtio-drivers` hardware abstraction: heap memory for DMA, identity translation, and
/// the architecture's cache maintenance when buffers change hands.
#[derive(Debug)]
pub struct Hal;

fn dma_layout(pages: usize) -> Option<Layout> {
    Layout::from_size_align(pages.checked_mul(PAGE_SIZE)?, PAGE_SIZE).ok().filter(|l| l.size() > 0)
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned memory owned by nobody else until
// `dma_dealloc` (a fresh heap allocation), whose physical address is its virtual address (the
// identity map); `mmio_phys_to_virt` is the identity, valid for the same reason; `share` returns
// the buffer's own (identity) address after the cache maintenance the platform needs, and
// `unshare` undoes it. Nothing is copied, so nothing needs copying back.
unsafe impl virtio_drivers::Hal for Hal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let Some(layout) = dma_layout(pages) else { return (0, NonNull::dangling()) };
        // SAFETY: the layout has a non-zero size (checked by `dma_layout`).
        let pointer = unsafe { alloc_zeroed(layout) };
        match NonNull::new(pointer) {
            Some(pointer) => (pointer.as_ptr() as PhysAddr, pointer),
            // virtio-drivers treats physical address 0 as allocation failure.
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let Some(layout) = dma_layout(pages) else { return -1 };
        // SAFETY: the caller passes memory `dma_alloc` returned for the same page count, which
        // therefore came from the global allocator with this layout.
        unsafe { dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        // Only the PCI transport asks, and it is not used; the identity is right anyway.
        NonNull::new(paddr as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let start = buffer.cast::<u8>().as_ptr() as usize;
        arch::dma::share(start..start + buffer.len(), direction);
        start as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        let start = buffer.cast::<u8>().as_ptr() as usize;
        arch::dma::unshare(start..start + buffer.len(), direction);
    }
}
