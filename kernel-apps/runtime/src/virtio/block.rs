//! The virtio-blk driver: a disk of 512-byte sectors, read, written and flushed synchronously.
//!
//! Every call submits one request (or a few, for buffers over [`MAX_REQUEST`]), notifies the
//! device and polls until it completes. Blocking is the right trade for the appliances that use a
//! disk today (`kvlog`): an append is acknowledged only once it is on the disk, so the client
//! waits for the device whatever the driver does, and a single-CPU appliance with one disk has
//! nothing better to do in those microseconds than poll. An interrupt-driven queue would let the
//! event loop serve other connections meanwhile, at the cost of buffers owned across loop turns.
//!
//! The shape of the API (`capacity_sectors`, `read`, `write`, `flush`) is the one every block
//! backend of the runtime offers, so an appliance does not care which one it runs on; see
//! [`crate::block`].
//!
//! # Not supported
//! - Discard/write-zeroes, the device's geometry and topology hints, multiqueue, and read-only
//!   devices other than by refusing writes ([`BlockError::ReadOnly`]).

use core::fmt;

use virtio_drivers::{device::blk::VirtIOBlk, transport::DeviceType, transport::mmio::MmioTransport};

use super::{ClaimError, Hal, claim};

/// The size of a sector: the unit of every offset and length.
pub const SECTOR_SIZE: usize = 512;

/// The largest transfer handed to the device in one request; longer buffers are split. QEMU takes
/// far more, but a bound keeps one descriptor's worth of DMA within what any device accepts.
pub const MAX_REQUEST: usize = 128 * 1024;

type Driver = VirtIOBlk<Hal, MmioTransport<'static>>;

/// Why a disk could not be opened.
#[derive(Clone, Copy, Debug)]
pub enum OpenError {
    /// No usable virtio-blk device.
    Claim(ClaimError),
    /// The device refused to initialise.
    Driver(virtio_drivers::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Claim(e) => write!(f, "virtio-blk: {e}"),
            OpenError::Driver(e) => write!(f, "virtio-blk: the device failed to initialise: {e}"),
        }
    }
}

/// Why a read, write or flush failed. Nothing is retried: the caller decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// The buffer is empty or not a whole number of sectors.
    Unaligned,
    /// The transfer would run past the end of the disk.
    OutOfRange,
    /// The device is read-only.
    ReadOnly,
    /// The device reported an I/O error (or the driver a queue error).
    Io,
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockError::Unaligned => "the buffer is not a non-empty whole number of 512-byte sectors",
            BlockError::OutOfRange => "the transfer runs past the end of the disk",
            BlockError::ReadOnly => "the disk is read-only",
            BlockError::Io => "the disk reported an I/O error",
        })
    }
}

/// A virtio-blk disk.
pub struct BlockDevice {
    driver: Driver,
    capacity: u64,
}

impl fmt::Debug for BlockDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockDevice").field("capacity_sectors", &self.capacity).finish()
    }
}

impl BlockDevice {
    /// Claims the first virtio-blk device. Its interrupt stays off: requests are polled.
    pub fn open() -> Result<BlockDevice, OpenError> {
        let (transport, _slot) = claim(DeviceType::Block).map_err(OpenError::Claim)?;
        let mut driver = Driver::new(transport).map_err(OpenError::Driver)?;
        driver.disable_interrupts();
        let capacity = driver.capacity();
        Ok(BlockDevice { driver, capacity })
    }

    /// The disk's size in sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity
    }

    /// Whether writes are refused.
    pub fn is_read_only(&self) -> bool {
        self.driver.readonly()
    }

    /// Reads `buf.len() / SECTOR_SIZE` sectors starting at `sector`.
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.check(sector, buf.len())?;
        for (index, piece) in buf.chunks_mut(MAX_REQUEST).enumerate() {
            let start = piece_sector(sector, index)?;
            self.driver.read_blocks(start, piece).map_err(|_| BlockError::Io)?;
        }
        Ok(())
    }

    /// Writes `buf` to the sectors starting at `sector`. When this returns the device has the
    /// data, but it may sit in a volatile cache until [`flush`](Self::flush).
    pub fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        self.check(sector, buf.len())?;
        if self.is_read_only() {
            return Err(BlockError::ReadOnly);
        }
        for (index, piece) in buf.chunks(MAX_REQUEST).enumerate() {
            let start = piece_sector(sector, index)?;
            self.driver.write_blocks(start, piece).map_err(|_| BlockError::Io)?;
        }
        Ok(())
    }

    /// Makes every completed write durable (QEMU: `fdatasync` of the image file). A device
    /// without a volatile cache (no `VIRTIO_BLK_F_FLUSH`) has nothing to flush.
    pub fn flush(&mut self) -> Result<(), BlockError> {
        self.driver.flush().map_err(|_| BlockError::Io)
    }

    /// Refuses what the driver would panic on (empty or partial sectors) and transfers past the
    /// end, which the device would fail anyway.
    fn check(&self, sector: u64, len: usize) -> Result<(), BlockError> {
        if len == 0 || !len.is_multiple_of(SECTOR_SIZE) {
            return Err(BlockError::Unaligned);
        }
        let sectors = (len / SECTOR_SIZE) as u64;
        match sector.checked_add(sectors) {
            Some(end) if end <= self.capacity => Ok(()),
            _ => Err(BlockError::OutOfRange),
        }
    }
}

/// The first sector of the `index`th [`MAX_REQUEST`] piece of a transfer starting at `sector`.
fn piece_sector(sector: u64, index: usize) -> Result<usize, BlockError> {
    let offset = (index * (MAX_REQUEST / SECTOR_SIZE)) as u64;
    usize::try_from(sector + offset).map_err(|_| BlockError::OutOfRange)
}
