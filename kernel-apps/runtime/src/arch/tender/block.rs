//! The tender's block device: whole sectors, read and written by hypercall into the caller's
//! buffer (no copy in the guest), synchronously.
//!
//! Published as [`crate::block`], with the same shape as the virtio-blk disk on QEMU
//! ([`BlockDevice`]). A call blocks the vCPU until the host's I/O is done (the tender does it
//! during the exit, so there is nothing to wait for afterwards); `flush` makes every completed
//! write durable.

use core::fmt;

use super::abi;

/// The sector size in bytes.
pub const SECTOR_SIZE: usize = abi::SECTOR_SIZE as usize;

/// Why a block operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// The tender has no block device for this appliance.
    NoDevice,
    /// The buffer is not a whole number of sectors, or the request runs past the device's end.
    Invalid,
    /// The host's I/O failed.
    Io,
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockError::NoDevice => "no block device is attached",
            BlockError::Invalid => "the request is not whole sectors inside the device",
            BlockError::Io => "the host's I/O failed",
        })
    }
}

/// The device's size in sectors of [`SECTOR_SIZE`] bytes; 0 without a device.
pub fn capacity_sectors() -> u64 {
    match super::boot_info() {
        Some(info) if info.flags & abi::FLAG_BLOCK != 0 => info.block_sectors,
        _ => 0,
    }
}

/// Checks a request against the device before troubling the tender with it.
fn check(sector: u64, len: usize) -> Result<(), BlockError> {
    if super::boot_info().is_none_or(|info| info.flags & abi::FLAG_BLOCK == 0) {
        return Err(BlockError::NoDevice);
    }
    let capacity = capacity_sectors();
    let sectors = (len / SECTOR_SIZE) as u64;
    if !len.is_multiple_of(SECTOR_SIZE) || sector.checked_add(sectors).is_none_or(|end| end > capacity) {
        return Err(BlockError::Invalid);
    }
    Ok(())
}

fn result(code: i32) -> Result<(), BlockError> {
    match code {
        abi::RESULT_OK => Ok(()),
        abi::RESULT_NO_DEVICE => Err(BlockError::NoDevice),
        abi::RESULT_INVALID => Err(BlockError::Invalid),
        _ => Err(BlockError::Io),
    }
}

/// Reads `buf.len() / SECTOR_SIZE` sectors from `sector` on into `buf`.
pub fn read(sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
    check(sector, buf.len())?;
    let addr = buf.as_mut_ptr().expose_provenance() as u64;
    let mut block = abi::BlockIo { sector, addr, len: buf.len() as u64, result: abi::RESULT_IO_ERROR, _reserved: 0 };
    super::hypercall(abi::Hypercall::BlockRead, &mut block);
    result(block.result)
}

/// Writes `buf` to the sectors from `sector` on. Durable only after [`flush`].
pub fn write(sector: u64, buf: &[u8]) -> Result<(), BlockError> {
    check(sector, buf.len())?;
    let addr = buf.as_ptr().expose_provenance() as u64;
    let mut block = abi::BlockIo { sector, addr, len: buf.len() as u64, result: abi::RESULT_IO_ERROR, _reserved: 0 };
    super::hypercall(abi::Hypercall::BlockWrite, &mut block);
    result(block.result)
}

/// Makes every completed write durable.
pub fn flush() -> Result<(), BlockError> {
    check(0, 0)?;
    let mut block = abi::BlockIo { result: abi::RESULT_IO_ERROR, ..abi::BlockIo::default() };
    super::hypercall(abi::Hypercall::BlockFlush, &mut block);
    result(block.result)
}

/// Why the disk could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The tender was started without `--block`.
    NoDevice,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no block device: the tender was started without --block FILE")
    }
}

/// The tender's disk, with the calls of the virtio-blk disk on QEMU.
#[derive(Debug)]
pub struct BlockDevice {
    capacity: u64,
}

impl BlockDevice {
    /// The disk the tender attached, if any.
    pub fn open() -> Result<BlockDevice, OpenError> {
        match capacity_sectors() {
            0 => Err(OpenError::NoDevice),
            capacity => Ok(BlockDevice { capacity }),
        }
    }

    /// Nothing to acknowledge: requests complete during their hypercall, without interrupts.
    pub fn ack_interrupt(&mut self) {}

    /// The disk's size in sectors.
    pub fn capacity_sectors(&self) -> u64 {
        self.capacity
    }

    /// Never: the tender opens the file for writing.
    pub fn is_read_only(&self) -> bool {
        false
    }

    /// Reads whole sectors from `sector` on into `buf`.
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        read(sector, buf)
    }

    /// Writes whole sectors from `sector` on; durable after [`BlockDevice::flush`].
    pub fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        write(sector, buf)
    }

    /// Makes every completed write durable.
    pub fn flush(&mut self) -> Result<(), BlockError> {
        flush()
    }
}
