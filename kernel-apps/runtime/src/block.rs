//! The disk an appliance keeps its state on: 512-byte sectors, read, written and flushed
//! synchronously.
//!
//! Every platform's disk offers the same calls: [`BlockDevice::capacity_sectors`],
//! [`BlockDevice::read`]`(sector, buf)`, [`BlockDevice::write`]`(sector, buf)` and
//! [`BlockDevice::flush`]. On QEMU `virt` and `microvm` the disk is a virtio-blk device
//! (`virtio::block`); on the tender it is the host file behind the tender's block hypercalls
//! (`arch::tender::block`). A write is durable only after a `flush` returns.

#[cfg(feature = "platform-tender")]
pub use crate::arch::tender::block::{BlockDevice, BlockError, OpenError, SECTOR_SIZE};
#[cfg(not(feature = "platform-tender"))]
pub use crate::virtio::block::{BlockDevice, BlockError, OpenError, SECTOR_SIZE};
