//! The virtio-blk driver: a disk of 512-byte sectors, read, written and flushed synchronously.
//!
//! Each call submits one request (or a few, for buffers over [`MAX_REQUEST`]) and returns once
//! the device has completed it. Blocking is the right trade for the appliances that use a disk
//! today (`kvlog`): an append is acknowledged only once it is on the disk, so the client waits for
//! the device whatever the driver does, and a single-CPU appliance with one disk has little else
//! to do meanwhile. While a read or write is in flight the CPU sleeps in the event loop's wait
//! (`wfi`/`hlt`) until the device's interrupt, which also leaves the host's CPU to the device
//! emulation; without interrupts it polls. A flush polls: virtio-drivers 0.13 has no
//! non-blocking flush, and a flush is one `fdatasync` on the host.
//!
//! The device's interrupt stays enabled, so its completions also wake the appliance's event loop:
//! call [`BlockDevice::ack_interrupt`] after each wake, as for the network device, or a completion
//! that arrived after the driver looked leaves the line asserted and the loop spinning.
//!
//! The shape of the API (`capacity_sectors`, `read`, `write`, `flush`) is the one every block
//! backend of the runtime offers, so an appliance does not care which one it runs on; see
//! [`crate::block`].
//!
//! # Not supported
//! - Discard/write-zeroes, the device's geometry and topology hints, multiqueue, more than one
//!   request in flight, and read-only devices other than by refusing writes
//!   ([`BlockError::ReadOnly`]).

use core::fmt;

use core::time::Duration;

use virtio_drivers::{
    device::blk::{BlkReq, BlkResp, VirtIOBlk},
    transport::{DeviceType, mmio::MmioTransport},
};

use super::{ClaimError, Hal, claim};
use crate::{arch, time::Instant};

/// The longest sleep between two looks at the queue while a request is in flight: a safety net
/// should an interrupt ever be lost, not the expected wake.
const WAIT_SLICE: Duration = Duration::from_millis(5);

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
    /// Whether the device's interrupt can wake the CPU (if not, requests are polled).
    interrupts: bool,
}

impl fmt::Debug for BlockDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockDevice").field("capacity_sectors", &self.capacity).finish()
    }
}

impl BlockDevice {
    /// Claims the first virtio-blk device and enables its interrupt.
    pub fn open() -> Result<BlockDevice, OpenError> {
        let (transport, slot) = claim(DeviceType::Block).map_err(OpenError::Claim)?;
        let mut driver = Driver::new(transport).map_err(OpenError::Driver)?;
        let interrupts = arch::irq::enable(slot.irq);
        if !interrupts {
            driver.disable_interrupts();
        }
        let capacity = driver.capacity();
        Ok(BlockDevice { driver, capacity, interrupts })
    }

    /// Lowers the device's interrupt. Call it after every wake of the event loop (see the module
    /// docs).
    pub fn ack_interrupt(&mut self) {
        let _ = self.driver.ack_interrupt();
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
            let mut request = BlkReq::default();
            let mut response = BlkResp::default();
            // SAFETY: `request`, `piece` and `response` stay borrowed here, untouched, until
            // `complete_read_blocks` below takes the same three back: `wait_for` returns only
            // once the device has returned the token.
            let token = unsafe { self.driver.read_blocks_nb(start, &mut request, piece, &mut response) }
                .map_err(|_| BlockError::Io)?;
            self.wait_for(token);
            // SAFETY: the same buffers `read_blocks_nb` was given for this token.
            unsafe { self.driver.complete_read_blocks(token, &request, piece, &mut response) }
                .map_err(|_| BlockError::Io)?;
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
            let mut request = BlkReq::default();
            let mut response = BlkResp::default();
            // SAFETY: as in `read`: the three buffers stay borrowed and untouched until
            // `complete_write_blocks` takes them back after the device returned the token.
            let token = unsafe { self.driver.write_blocks_nb(start, &mut request, piece, &mut response) }
                .map_err(|_| BlockError::Io)?;
            self.wait_for(token);
            // SAFETY: the same buffers `write_blocks_nb` was given for this token.
            unsafe { self.driver.complete_write_blocks(token, &request, piece, &mut response) }
                .map_err(|_| BlockError::Io)?;
        }
        Ok(())
    }

    /// Makes every completed write durable (QEMU: `fdatasync` of the image file). A device
    /// without a volatile cache (no `VIRTIO_BLK_F_FLUSH`) has nothing to flush.
    pub fn flush(&mut self) -> Result<(), BlockError> {
        let result = self.driver.flush().map_err(|_| BlockError::Io);
        // The flush was polled; its completion may have raised the interrupt all the same.
        self.ack_interrupt();
        result
    }

    /// Returns once the device has completed the request `token`: sleeping until its interrupt
    /// (or [`WAIT_SLICE`]) when it has one, polling when not.
    fn wait_for(&mut self, token: u16) {
        loop {
            // Acknowledge before looking, so that a completion after the look still wakes the
            // sleep below (the line rises again), and none is slept through.
            self.ack_interrupt();
            if self.driver.peek_used() == Some(token) {
                return;
            }
            if self.interrupts {
                let deadline = Instant::from_since_reset(Instant::now().since_reset() + WAIT_SLICE);
                crate::event::wait_until(Some(deadline));
            } else {
                core::hint::spin_loop();
            }
        }
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
