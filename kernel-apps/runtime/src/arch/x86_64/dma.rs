//! Cache maintenance for device DMA: nothing to do on x86_64, where device accesses to memory are
//! coherent with the CPU's caches (a platform guarantee for the virtio devices the runtime
//! drives, which are emulated by the hypervisor in the same coherency domain).

use core::ops::Range;

use virtio_drivers::BufferDirection;

/// Makes `buffer` ready for the device: nothing to do.
pub(crate) fn share(_buffer: Range<usize>, _direction: BufferDirection) {}

/// Makes `buffer` ready for the CPU again: nothing to do.
pub(crate) fn unshare(_buffer: Range<usize>, _direction: BufferDirection) {}
