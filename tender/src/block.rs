//! The block device: a raw host file of 512-byte sectors, read and written in place.

use std::{
    fs::{File, OpenOptions},
    os::fd::AsRawFd,
    path::Path,
};

use anyhow::{Context, Result, bail};
use tender_abi::{RESULT_INVALID, RESULT_IO_ERROR, RESULT_OK, SECTOR_SIZE};
use vm_memory::{GuestAddress, GuestMemoryBackend};

use crate::guest::Ram;

/// An open block file.
#[derive(Debug)]
pub struct Block {
    file: File,
    pub sectors: u64,
}

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// File to guest memory.
    Read,
    /// Guest memory to file.
    Write,
}

impl Block {
    /// Opens `path` for reading and writing; its capacity is its size in whole sectors.
    pub fn open(path: &Path) -> Result<Block> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("--block {}: opening it for reading and writing", path.display()))?;
        let size = file.metadata().with_context(|| format!("--block {}", path.display()))?.len();
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            bail!("--block {}: not a regular file", path.display());
        }
        Ok(Block { file, sectors: size / SECTOR_SIZE })
    }

    /// The byte range in the file of `len` bytes from `sector`, if it is whole sectors inside the
    /// device.
    pub fn file_range(&self, sector: u64, len: u64) -> Option<u64> {
        request_offset(self.sectors, sector, len)
    }

    /// Moves `len` bytes between the file at `offset` and guest memory at `addr` (already checked to
    /// lie inside RAM). Returns a `RESULT_*` code.
    pub fn transfer(&self, ram: &Ram, direction: Direction, offset: u64, addr: u64, len: u64) -> i32 {
        let Ok(count) = usize::try_from(len) else { return RESULT_INVALID };
        if count == 0 {
            return RESULT_OK;
        }
        let Ok(slice) = ram.memory.get_slice(GuestAddress(addr), count) else { return RESULT_INVALID };
        let guard = slice.ptr_guard_mut();
        let mut done = 0usize;
        while done < count {
            let at = offset + done as u64;
            let Ok(at) = libc::off_t::try_from(at) else { return RESULT_INVALID };
            // SAFETY: `guard` points at `count` bytes of guest RAM that vm-memory checked are
            // mapped (`get_slice` refuses ranges outside the region) and stay mapped while `guard`
            // lives; `done < count` keeps the pointer and length inside them. The guest's vCPU is
            // stopped in this hypercall, so nothing else touches those bytes meanwhile.
            let moved = unsafe {
                let buffer = guard.as_ptr().add(done).cast::<libc::c_void>();
                match direction {
                    Direction::Read => libc::pread(self.file.as_raw_fd(), buffer, count - done, at),
                    Direction::Write => libc::pwrite(self.file.as_raw_fd(), buffer, count - done, at),
                }
            };
            match moved {
                0 => return RESULT_IO_ERROR, // the file shrank under us
                n if n > 0 => done += n as usize,
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                _ => return RESULT_IO_ERROR,
            }
        }
        RESULT_OK
    }

    /// Makes completed writes durable.
    pub fn flush(&self) -> i32 {
        if self.file.sync_data().is_ok() { RESULT_OK } else { RESULT_IO_ERROR }
    }
}

/// The file offset of a request of `len` bytes from `sector` on a device of `sectors` sectors, or
/// `None` if it is not whole sectors or runs past the end (overflow included).
pub fn request_offset(sectors: u64, sector: u64, len: u64) -> Option<u64> {
    if !len.is_multiple_of(SECTOR_SIZE) {
        return None;
    }
    let end = sector.checked_add(len / SECTOR_SIZE)?;
    if end > sectors {
        return None;
    }
    sector.checked_mul(SECTOR_SIZE)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn requests_must_be_whole_sectors_inside_the_device() {
        assert_eq!(request_offset(8, 0, 4096), Some(0));
        assert_eq!(request_offset(8, 7, 512), Some(7 * 512));
        assert_eq!(request_offset(8, 7, 1024), None, "runs past the end");
        assert_eq!(request_offset(8, 0, 100), None, "not whole sectors");
        assert_eq!(request_offset(8, u64::MAX, 512), None, "overflow");
        assert_eq!(request_offset(u64::MAX, u64::MAX / 2, 512), None, "offset overflows");
        assert_eq!(request_offset(8, 8, 0), Some(8 * 512), "an empty request at the end is fine");
    }

    proptest! {
        #[test]
        fn accepted_requests_lie_inside_the_file(sectors: u64, sector: u64, len: u64) {
            if let Some(offset) = request_offset(sectors, sector, len) {
                let (offset, len, size) = (offset as u128, len as u128, sectors as u128 * 512);
                prop_assert!(offset + len <= size);
                prop_assert_eq!(len % 512, 0);
            }
        }
    }

    #[test]
    fn transfers_move_bytes_both_ways() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(&[0xab; 1024]).expect("write");
        let block = Block::open(file.path()).expect("opens");
        assert_eq!(block.sectors, 2);
        let ram = Ram::new(0, 1 << 20).expect("maps");
        assert_eq!(block.transfer(&ram, Direction::Read, 512, 0x1000, 512), RESULT_OK);
        let mut back = [0u8; 512];
        vm_memory::Bytes::read_slice(&ram.memory, &mut back, GuestAddress(0x1000)).expect("read");
        assert_eq!(back, [0xab; 512]);
        ram.write_bytes(0x2000, &[7; 512]).expect("write");
        assert_eq!(block.transfer(&ram, Direction::Write, 0, 0x2000, 512), RESULT_OK);
        assert_eq!(block.flush(), RESULT_OK);
        assert_eq!(std::fs::read(file.path()).expect("read")[..512], [7; 512]);
    }
}
