//! Guest RAM: one anonymous mapping, reserved lazily, and every access to it bounds-checked.
//!
//! The mapping is `MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE` (vm-memory's default for anonymous
//! regions): a page costs the host memory only once the guest or the tender touches it, and the
//! tender touches only what it loads (kernel, boot info, page tables, data part). All access goes
//! through vm-memory's checked `Bytes` methods; the tender never does pointer arithmetic on a guest
//! address.

use std::mem::{align_of, size_of};

use anyhow::{Context, Result};
use tender_abi::{BlockIo, BootInfo, ConsoleWrite, Exit, Hypercall, NetAttach, Poll, Random};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

use crate::violation::Violation;

/// A tender-abi struct as vm-memory reads and writes it.
#[derive(Clone, Copy, Debug, Default)]
#[repr(transparent)]
pub struct Abi<T>(pub T);

// SAFETY: each of these is `#[repr(C)]`, made only of integers and integer arrays, with every
// padding byte an explicit `_reserved` field (tender-abi's `layouts_are_fixed` test pins the sizes),
// so every bit pattern is a valid value and no byte is uninitialised.
unsafe impl ByteValued for Abi<BootInfo> {}
// SAFETY: as above: two u64s.
unsafe impl ByteValued for Abi<ConsoleWrite> {}
// SAFETY: as above: two u32s.
unsafe impl ByteValued for Abi<Exit> {}
// SAFETY: as above: a u64 and two u32s.
unsafe impl ByteValued for Abi<Poll> {}
// SAFETY: as above: a u64, an i32 and a u32.
unsafe impl ByteValued for Abi<NetAttach> {}
// SAFETY: as above: three u64s, an i32 and a u32.
unsafe impl ByteValued for Abi<BlockIo> {}
// SAFETY: as above: two u64s, an i32 and a u32.
unsafe impl ByteValued for Abi<Random> {}

/// The guest's RAM: `size` bytes at guest-physical `base`.
#[derive(Debug)]
pub struct Ram {
    pub memory: GuestMemoryMmap,
    pub base: u64,
    pub size: u64,
}

impl Ram {
    /// Maps `size` bytes of RAM at `base`, touching none of it.
    pub fn new(base: u64, size: u64) -> Result<Ram> {
        let len = usize::try_from(size).context("guest RAM size does not fit this host's address space")?;
        let memory = GuestMemoryMmap::from_ranges(&[(GuestAddress(base), len)])
            .with_context(|| format!("mapping {} MiB of guest RAM", size >> 20))?;
        Ok(Ram { memory, base, size })
    }

    /// Whether `[addr, addr + len)` lies wholly inside RAM (overflow counts as outside).
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        range_inside(self.base, self.size, addr, len)
    }

    /// Reads hypercall `call`'s argument block at `addr`.
    pub fn read_args<T>(&self, call: Hypercall, addr: u64) -> Result<T, Violation>
    where
        Abi<T>: ByteValued,
    {
        self.check_args::<T>(call, addr)?;
        self.memory.read_obj::<Abi<T>>(GuestAddress(addr)).map(|abi| abi.0).map_err(|_| Violation::ArgumentBlock {
            call,
            addr,
            len: size_of::<T>(),
            problem: "not inside guest RAM",
        })
    }

    /// Writes hypercall `call`'s argument block back (its results) at `addr`.
    pub fn write_args<T>(&self, call: Hypercall, addr: u64, value: T) -> Result<(), Violation>
    where
        Abi<T>: ByteValued,
    {
        self.check_args::<T>(call, addr)?;
        self.memory.write_obj(Abi(value), GuestAddress(addr)).map_err(|_| Violation::ArgumentBlock {
            call,
            addr,
            len: size_of::<T>(),
            problem: "not inside guest RAM",
        })
    }

    fn check_args<T>(&self, call: Hypercall, addr: u64) -> Result<(), Violation> {
        let len = size_of::<T>();
        if !addr.is_multiple_of(align_of::<T>() as u64) {
            return Err(Violation::ArgumentBlock { call, addr, len, problem: "not naturally aligned" });
        }
        if !self.contains(addr, len as u64) {
            return Err(Violation::ArgumentBlock { call, addr, len, problem: "not inside guest RAM" });
        }
        Ok(())
    }

    /// Reads a little-endian u32 the guest owns (a ring counter or frame length).
    pub fn read_u32(&self, addr: u64) -> Option<u32> {
        self.memory.read_obj::<u32>(GuestAddress(addr)).ok()
    }

    /// Writes a u32 into guest memory.
    pub fn write_u32(&self, addr: u64, value: u32) -> Option<()> {
        self.memory.write_obj(value, GuestAddress(addr)).ok()
    }

    /// Copies `bytes` into RAM at `addr` (loading the kernel, boot info, data part).
    pub fn write_bytes(&self, addr: u64, bytes: &[u8]) -> Result<()> {
        self.memory
            .write_slice(bytes, GuestAddress(addr))
            .with_context(|| format!("writing {} bytes at guest address {addr:#x}", bytes.len()))
    }
}

/// Whether `[addr, addr + len)` lies inside `[base, base + size)`, without overflowing anywhere.
pub fn range_inside(base: u64, size: u64, addr: u64, len: u64) -> bool {
    let Some(end) = addr.checked_add(len) else { return false };
    let Some(limit) = base.checked_add(size) else { return false };
    addr >= base && end <= limit
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ranges_at_the_edges() {
        assert!(range_inside(0, 4096, 0, 4096));
        assert!(range_inside(0, 4096, 4096, 0));
        assert!(!range_inside(0, 4096, 4095, 2));
        assert!(!range_inside(0x1000, 0x1000, 0xfff, 1));
        assert!(!range_inside(0, 4096, u64::MAX, 2), "wrapping past the end is outside");
        assert!(!range_inside(u64::MAX - 1, 2, u64::MAX - 1, 2), "RAM ending at 2^64 cannot be described");
    }

    proptest! {
        #[test]
        fn range_check_agrees_with_wide_arithmetic(base: u64, size: u64, addr: u64, len: u64) {
            let (base, size, addr, len) = (base as u128, size as u128, addr as u128, len as u128);
            let expected = addr >= base && addr + len <= base + size && base + size <= u64::MAX as u128;
            prop_assert_eq!(range_inside(base as u64, size as u64, addr as u64, len as u64), expected);
        }
    }

    #[test]
    fn argument_blocks_must_be_aligned_and_inside() {
        let ram = Ram::new(0, 1 << 20).expect("1 MiB maps");
        let call = Hypercall::ConsoleWrite;
        ram.write_args(call, 0x100, ConsoleWrite { addr: 7, len: 9 }).expect("inside");
        assert_eq!(ram.read_args::<ConsoleWrite>(call, 0x100), Ok(ConsoleWrite { addr: 7, len: 9 }));
        let misaligned = ram.read_args::<ConsoleWrite>(call, 0x104).expect_err("misaligned");
        assert!(misaligned.to_string().contains("not naturally aligned"), "{misaligned}");
        let outside = ram.read_args::<ConsoleWrite>(call, (1 << 20) - 8).expect_err("straddles the end");
        assert!(outside.to_string().contains("not inside guest RAM"), "{outside}");
        assert!(ram.read_args::<ConsoleWrite>(call, !7).is_err());
    }
}
