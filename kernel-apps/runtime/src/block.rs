//! The disk an appliance keeps its state on: 512-byte sectors, read, written and flushed
//! synchronously.
//!
//! Every platform's disk offers the same calls: [`BlockDevice::capacity_sectors`],
//! [`BlockDevice::read`]`(sector, buf)`, [`BlockDevice::write`]`(sector, buf)` and
//! [`BlockDevice::flush`]. On QEMU `virt` and `microvm` the disk is a virtio-blk device
//! ([`crate::virtio::block`]). A write is durable only after a `flush` returns.

pub use crate::virtio::block::{BlockDevice, BlockError, OpenError, SECTOR_SIZE};
