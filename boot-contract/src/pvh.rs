//! The PVH boot protocol's `hvm_start_info`, and choosing the heap from its memory map.
//!
//! A PVH loader (QEMU `microvm`, Firecracker, Cloud Hypervisor) passes the physical address of a
//! `struct hvm_start_info` (Xen's `public/arch-x86/hvm/start_info.h`) in EBX. This module parses
//! it from bytes, so the parsing is tested on the host; `arch::x86_64` reads the bytes from
//! physical memory. Used by the x86_64 port only.
//!
//! Supported: version 1 and later (the memory map is needed to find RAM), and the first boot
//! module (the initrd, which carries the appliance's data bundle). Not used: the ACPI RSDP and
//! further modules.

use core::ops::Range;

/// `hvm_start_info.magic`: "xEn3" with the top bit of the last byte set.
pub const MAGIC: u32 = 0x336e_c578;
/// Bytes of `hvm_start_info` this module reads (the version 1 layout).
pub const START_INFO_SIZE: usize = 56;
/// Bytes per `hvm_memmap_table_entry`.
pub const MEMMAP_ENTRY_SIZE: usize = 24;
/// Bytes per `hvm_modlist_entry` (paddr, size, cmdline_paddr, reserved).
pub const MODLIST_ENTRY_SIZE: usize = 32;
/// The memory-map type of usable RAM (the E820 numbering).
pub const TYPE_RAM: u32 = 1;

/// Why a start-info block cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The magic number is wrong: the image was not entered through PVH, or EBX was clobbered.
    BadMagic(u32),
    /// Version 0 has no memory map, and this runtime finds RAM only through it.
    NoMemoryMap {
        /// The version the loader wrote.
        version: u32,
    },
    /// Fewer bytes than the version 1 layout.
    Truncated,
}

/// The fields of `hvm_start_info` the runtime uses. Addresses are physical.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartInfo {
    /// The structure's version (1 or later has the memory map).
    pub version: u32,
    /// Boot modules; the first is the initrd.
    pub nr_modules: u32,
    /// The array of `nr_modules` entries of [`MODLIST_ENTRY_SIZE`] bytes.
    pub modlist_paddr: u64,
    /// The kernel command line, NUL-terminated; 0 when there is none.
    pub cmdline_paddr: u64,
    /// The array of `memmap_entries` entries of [`MEMMAP_ENTRY_SIZE`] bytes.
    pub memmap_paddr: u64,
    /// How many entries the memory map has.
    pub memmap_entries: u32,
}

impl StartInfo {
    /// Parses the first [`START_INFO_SIZE`] bytes at the address the loader passed.
    pub fn parse(bytes: &[u8]) -> Result<StartInfo, Error> {
        if bytes.len() < START_INFO_SIZE {
            return Err(Error::Truncated);
        }
        let magic = u32_at(bytes, 0);
        if magic != MAGIC {
            return Err(Error::BadMagic(magic));
        }
        let version = u32_at(bytes, 4);
        if version < 1 {
            return Err(Error::NoMemoryMap { version });
        }
        Ok(StartInfo {
            version,
            nr_modules: u32_at(bytes, 12),
            modlist_paddr: u64_at(bytes, 16),
            cmdline_paddr: u64_at(bytes, 24),
            memmap_paddr: u64_at(bytes, 40),
            memmap_entries: u32_at(bytes, 48),
        })
    }

    /// The byte length of the memory map.
    pub fn memmap_bytes(&self) -> usize {
        self.memmap_entries as usize * MEMMAP_ENTRY_SIZE
    }
}

/// The physical range of a module, from its `hvm_modlist_entry`; `None` if the entry is short or
/// the module empty or impossibly placed.
pub fn module(entry: &[u8]) -> Option<Range<u64>> {
    if entry.len() < MODLIST_ENTRY_SIZE {
        return None;
    }
    let (paddr, size) = (u64_at(entry, 0), u64_at(entry, 8));
    let end = paddr.checked_add(size)?;
    (size > 0).then_some(paddr..end)
}

/// One memory-map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemmapEntry {
    /// The range's physical start.
    pub addr: u64,
    /// The range's length in bytes.
    pub size: u64,
    /// Its E820 type ([`TYPE_RAM`] is usable RAM).
    pub kind: u32,
}

impl MemmapEntry {
    /// The physical range, saturating at the top of the address space.
    pub fn range(&self) -> Range<u64> {
        self.addr..self.addr.saturating_add(self.size)
    }
}

/// The entries of a memory map (`bytes` holds [`StartInfo::memmap_bytes`] bytes; a trailing
/// partial entry is ignored).
pub fn memmap(bytes: &[u8]) -> impl Iterator<Item = MemmapEntry> + '_ {
    bytes.chunks_exact(MEMMAP_ENTRY_SIZE).map(|entry| MemmapEntry {
        addr: u64_at(entry, 0),
        size: u64_at(entry, 8),
        kind: u32_at(entry, 16),
    })
}

/// The largest span of `ram` inside `window` that overlaps none of `reserved`, shrunk inwards to
/// 4 KiB boundaries; empty when there is none.
///
/// Used to choose the heap: `window` starts past the kernel image (and never below 1 MiB) and ends
/// where the identity map ends; `reserved` holds the boot data still to be read.
pub fn largest_free_span(
    ram: impl Iterator<Item = Range<u64>>,
    window: Range<u64>,
    reserved: &[Range<u64>],
) -> Range<u64> {
    let mut best = 0..0;
    for span in ram {
        let span = span.start.max(window.start)..span.end.min(window.end);
        // A free piece starts at the span's start or at the end of a reserved range, and runs to
        // the nearest reserved start after it (or the span's end).
        let starts = core::iter::once(span.start).chain(reserved.iter().map(|r| r.end));
        for start in starts.filter(|s| span.contains(s)) {
            if reserved.iter().any(|r| r.contains(&start)) {
                continue;
            }
            let end = reserved.iter().filter(|r| r.start > start).map(|r| r.start).fold(span.end, u64::min);
            let piece = align_up(start)..(end & !0xfff);
            if piece.end > piece.start && piece.end - piece.start > best.end - best.start {
                best = piece;
            }
        }
    }
    best
}

/// The command line: the bytes up to the first NUL (or all of them), as UTF-8. Invalid UTF-8 ends
/// the line early rather than losing it all: the valid prefix is returned.
pub fn cmdline(bytes: &[u8]) -> &str {
    let bytes = bytes.iter().position(|&b| b == 0).map_or(bytes, |nul| &bytes[..nul]);
    match core::str::from_utf8(bytes) {
        Ok(line) => line,
        // `valid_up_to` marks a UTF-8 boundary, so the prefix always converts.
        Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
    }
}

const fn align_up(address: u64) -> u64 {
    address.saturating_add(0xfff) & !0xfff
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn start_info(magic: u32, version: u32) -> [u8; START_INFO_SIZE] {
        let mut bytes = [0; START_INFO_SIZE];
        bytes[0..4].copy_from_slice(&magic.to_le_bytes());
        bytes[4..8].copy_from_slice(&version.to_le_bytes());
        bytes[12..16].copy_from_slice(&1u32.to_le_bytes());
        bytes[16..24].copy_from_slice(&0x7000u64.to_le_bytes());
        bytes[24..32].copy_from_slice(&0x2_0000u64.to_le_bytes());
        bytes[40..48].copy_from_slice(&0x6040u64.to_le_bytes());
        bytes[48..52].copy_from_slice(&3u32.to_le_bytes());
        bytes
    }

    #[test]
    fn parses_version_1() {
        let info = StartInfo::parse(&start_info(MAGIC, 1)).expect("valid start info");
        let expected = StartInfo {
            version: 1,
            nr_modules: 1,
            modlist_paddr: 0x7000,
            cmdline_paddr: 0x2_0000,
            memmap_paddr: 0x6040,
            memmap_entries: 3,
        };
        assert_eq!(info, expected);
        assert_eq!(info.memmap_bytes(), 72);
    }

    #[test]
    fn reads_a_module_entry() {
        let mut entry = [0u8; MODLIST_ENTRY_SIZE];
        entry[0..8].copy_from_slice(&(8 * MIB).to_le_bytes());
        entry[8..16].copy_from_slice(&4096u64.to_le_bytes());
        assert_eq!(module(&entry), Some(8 * MIB..8 * MIB + 4096));
        assert_eq!(module(&entry[..20]), None, "a short entry");
        entry[8..16].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(module(&entry), None, "an empty module");
        entry[0..8].copy_from_slice(&u64::MAX.to_le_bytes());
        entry[8..16].copy_from_slice(&2u64.to_le_bytes());
        assert_eq!(module(&entry), None, "a module that wraps around");
    }

    #[test]
    fn rejects_bad_magic_version_0_and_short_input() {
        assert_eq!(StartInfo::parse(&start_info(0x1bad_b002, 1)), Err(Error::BadMagic(0x1bad_b002)));
        assert_eq!(StartInfo::parse(&start_info(MAGIC, 0)), Err(Error::NoMemoryMap { version: 0 }));
        assert_eq!(StartInfo::parse(&[0; 40]), Err(Error::Truncated));
    }

    #[test]
    fn reads_memmap_entries() {
        let mut bytes = [0u8; 2 * MEMMAP_ENTRY_SIZE + 5];
        for (i, (addr, size, kind)) in [(0u64, 0x9fc00u64, 1u32), (MIB, 63 * MIB, 1)].iter().enumerate() {
            let entry = &mut bytes[i * MEMMAP_ENTRY_SIZE..];
            entry[0..8].copy_from_slice(&addr.to_le_bytes());
            entry[8..16].copy_from_slice(&size.to_le_bytes());
            entry[16..20].copy_from_slice(&kind.to_le_bytes());
        }
        let entries: Vec<MemmapEntry> = memmap(&bytes).collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1], MemmapEntry { addr: MIB, size: 63 * MIB, kind: TYPE_RAM });
        assert_eq!(entries[1].range(), MIB..64 * MIB);
    }

    #[test]
    fn heap_is_the_largest_ram_span_above_the_image() {
        let ram = [0..0x9fc00, MIB..64 * MIB];
        let heap = largest_free_span(ram.iter().cloned(), 0x12_3000..1 << 32, &[]);
        assert_eq!(heap, 0x12_3000..64 * MIB);
    }

    #[test]
    fn heap_avoids_reserved_boot_data_and_aligns_inwards() {
        let ram = || core::iter::once(MIB..64 * MIB);
        // A command line placed in the middle of RAM splits it; the larger side wins.
        let cmdline = 0x40_0123..0x40_0200;
        let heap = largest_free_span(ram(), 0x10_8000..1 << 32, core::slice::from_ref(&cmdline));
        assert_eq!(heap, 0x40_1000..64 * MIB);
        // Reserved data below the window changes nothing.
        let low = [0x6000..0x6038, 0x2_0000..0x2_0010];
        let heap = largest_free_span(ram(), 0x10_8000..1 << 32, &low);
        assert_eq!(heap, 0x10_8000..64 * MIB);
    }

    #[test]
    fn heap_is_clipped_to_the_identity_map_and_may_be_empty() {
        let ram = [MIB..0xc000_0000, 1 << 32..6 << 30];
        let heap = largest_free_span(ram.iter().cloned(), 2 * MIB..1 << 32, &[]);
        assert_eq!(heap, 2 * MIB..0xc000_0000);
        let none = largest_free_span(core::iter::once(0..0x9fc00), MIB..1 << 32, &[]);
        assert!(none.is_empty());
    }

    #[test]
    fn overlapping_reserved_ranges_are_skipped_together() {
        let reserved = [2 * MIB..4 * MIB, 3 * MIB..10 * MIB];
        let heap = largest_free_span(core::iter::once(MIB..16 * MIB), MIB..1 << 32, &reserved);
        assert_eq!(heap, 10 * MIB..16 * MIB);
    }

    #[test]
    fn command_line_stops_at_nul_and_keeps_the_valid_prefix() {
        assert_eq!(cmdline(b"a \"b c\"\0garbage"), "a \"b c\"");
        assert_eq!(cmdline(b"no terminator"), "no terminator");
        assert_eq!(cmdline(b"ok\xffbad\0"), "ok");
        assert_eq!(cmdline(b"\0"), "");
    }
}
