//! A small, strict ELF64 little-endian reader: the header, program headers and notes.
//!
//! Only what booting needs is read. Every offset and size is checked against the file before it is
//! used, so a truncated or garbled file yields an [`ElfError`], never a panic or an out-of-bounds read.

use std::ops::Range;

const HEADER_LEN: usize = 64;
const PROGRAM_HEADER_LEN: usize = 56;

/// `p_type` of a loadable segment.
pub const PT_LOAD: u32 = 1;
/// `p_type` of a segment of notes.
pub const PT_NOTE: u32 = 4;

/// What is wrong with a file that should be an ELF64 executable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("file is {len} bytes, too short for an ELF header ({HEADER_LEN} bytes)")]
    TooShort { len: usize },
    #[error("not an ELF file: it does not start with the bytes 7f 45 4c 46 (\"\\x7fELF\")")]
    BadMagic,
    #[error("not a 64-bit little-endian ELF file (class {class}, data encoding {encoding})")]
    WrongClass { class: u8, encoding: u8 },
    #[error(
        "program headers ({count} × {entry_len} bytes at offset {offset}) run past the end of the {file_len}-byte file"
    )]
    ProgramHeadersOutOfBounds { offset: u64, count: u16, entry_len: u16, file_len: usize },
    #[error(
        "section headers ({count} × {entry_len} bytes at offset {offset}) run past the end of the {file_len}-byte file: truncated?"
    )]
    SectionHeadersOutOfBounds { offset: u64, count: u16, entry_len: u16, file_len: usize },
    #[error("segment {index} claims bytes {offset}..{end} but the file has only {file_len}: truncated?")]
    SegmentOutOfBounds { index: usize, offset: u64, end: u64, file_len: usize },
    #[error("segment {index} is larger in the file ({file_size} bytes) than in memory ({memory_size} bytes)")]
    SegmentFileLargerThanMemory { index: usize, file_size: u64, memory_size: u64 },
    #[error("malformed note in segment {index}")]
    BadNote { index: usize },
    #[error("no loadable segment")]
    NoLoadableSegments,
    #[error("loadable segments overlap at physical address {address:#x}")]
    OverlappingSegments { address: u64 },
    #[error("loadable segments span {span} bytes of memory, more than the {limit}-byte limit")]
    TooLarge { span: u64, limit: u64 },
}

/// One program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub kind: u32,
    pub flags: u32,
    pub offset: u64,
    pub virtual_address: u64,
    pub physical_address: u64,
    pub file_size: u64,
    pub memory_size: u64,
}

/// One entry of a note segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note<'a> {
    /// The owner's name without its terminating NUL (e.g. `b"Xen"`).
    pub name: &'a [u8],
    pub kind: u32,
    pub desc: &'a [u8],
}

/// A parsed ELF64 little-endian file.
#[derive(Debug, Clone)]
pub struct Elf<'a> {
    bytes: &'a [u8],
    /// `e_machine`: which CPU the code is for.
    pub machine: u16,
    /// `e_entry`: the entry point's address.
    pub entry: u64,
    segments: Vec<Segment>,
}

impl<'a> Elf<'a> {
    /// Parses the header and program headers, checking that every segment lies inside the file.
    pub fn parse(bytes: &'a [u8]) -> Result<Elf<'a>, ElfError> {
        if bytes.len() < HEADER_LEN {
            return Err(ElfError::TooShort { len: bytes.len() });
        }
        if bytes[..4] != *b"\x7fELF" {
            return Err(ElfError::BadMagic);
        }
        let (class, encoding) = (bytes[4], bytes[5]);
        if class != 2 || encoding != 1 {
            return Err(ElfError::WrongClass { class, encoding });
        }
        let machine = le_u16(bytes, 18);
        let entry = le_u64(bytes, 24);
        let table_offset = le_u64(bytes, 32);
        let entry_len = le_u16(bytes, 54);
        let count = le_u16(bytes, 56);
        let table_len = u64::from(count) * u64::from(entry_len);
        let table_fits = usize::from(entry_len) >= PROGRAM_HEADER_LEN || count == 0;
        let table = checked_range(table_offset, table_len, bytes.len()).filter(|_| table_fits).ok_or(
            ElfError::ProgramHeadersOutOfBounds { offset: table_offset, count, entry_len, file_len: bytes.len() },
        )?;

        // Loaders ignore section headers, but they sit at the very end of the file, so checking them
        // is what notices a file cut short after its last segment.
        let section_offset = le_u64(bytes, 40);
        let section_entry_len = le_u16(bytes, 58);
        let section_count = le_u16(bytes, 60);
        let section_len = u64::from(section_count) * u64::from(section_entry_len);
        if section_count > 0 && checked_range(section_offset, section_len, bytes.len()).is_none() {
            return Err(ElfError::SectionHeadersOutOfBounds {
                offset: section_offset,
                count: section_count,
                entry_len: section_entry_len,
                file_len: bytes.len(),
            });
        }

        let mut segments = Vec::with_capacity(usize::from(count));
        for (index, raw) in bytes[table].chunks_exact(usize::from(entry_len).max(1)).enumerate() {
            let segment = Segment {
                kind: le_u32(raw, 0),
                flags: le_u32(raw, 4),
                offset: le_u64(raw, 8),
                virtual_address: le_u64(raw, 16),
                physical_address: le_u64(raw, 24),
                file_size: le_u64(raw, 32),
                memory_size: le_u64(raw, 40),
            };
            if checked_range(segment.offset, segment.file_size, bytes.len()).is_none() {
                return Err(ElfError::SegmentOutOfBounds {
                    index,
                    offset: segment.offset,
                    end: segment.offset.saturating_add(segment.file_size),
                    file_len: bytes.len(),
                });
            }
            if segment.kind == PT_LOAD && segment.file_size > segment.memory_size {
                return Err(ElfError::SegmentFileLargerThanMemory {
                    index,
                    file_size: segment.file_size,
                    memory_size: segment.memory_size,
                });
            }
            segments.push(segment);
        }
        Ok(Elf { bytes, machine, entry, segments })
    }

    /// All program headers, in file order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The loadable segments, in file order.
    pub fn load_segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(|s| s.kind == PT_LOAD)
    }

    /// The file bytes of a segment (checked in [`Elf::parse`]).
    pub fn segment_bytes(&self, segment: &Segment) -> &'a [u8] {
        // Bounds were validated at parse time, and segments are only handed out by this Elf.
        let range = checked_range(segment.offset, segment.file_size, self.bytes.len())
            .expect("segment bounds were checked when the ELF was parsed");
        &self.bytes[range]
    }

    /// Every note in every `PT_NOTE` segment.
    pub fn notes(&self) -> Result<Vec<Note<'a>>, ElfError> {
        let mut notes = Vec::new();
        for (index, segment) in self.segments.iter().enumerate().filter(|(_, s)| s.kind == PT_NOTE) {
            let mut rest = self.segment_bytes(segment);
            while !rest.is_empty() {
                let bad = ElfError::BadNote { index };
                if rest.len() < 12 {
                    return Err(bad);
                }
                let name_len = le_u32(rest, 0) as usize;
                let desc_len = le_u32(rest, 4) as usize;
                let kind = le_u32(rest, 8);
                let name_end = 12usize.checked_add(name_len).ok_or(bad.clone())?;
                let desc_start = align4(name_end).ok_or(bad.clone())?;
                let desc_end = desc_start.checked_add(desc_len).ok_or(bad.clone())?;
                if desc_end > rest.len() {
                    return Err(bad);
                }
                let name = &rest[12..name_end];
                let name = name.strip_suffix(b"\0").unwrap_or(name);
                notes.push(Note { name, kind, desc: &rest[desc_start..desc_end] });
                rest = &rest[align4(desc_end).ok_or(bad)?.min(rest.len())..];
            }
        }
        Ok(notes)
    }

    /// The physical memory the loadable segments occupy, from the lowest start to the highest end.
    pub fn load_span(&self) -> Result<Range<u64>, ElfError> {
        let start = self.load_segments().map(|s| s.physical_address).min();
        let end = self.load_segments().map(|s| s.physical_address.saturating_add(s.memory_size)).max();
        match (start, end) {
            (Some(start), Some(end)) => Ok(start..end),
            _ => Err(ElfError::NoLoadableSegments),
        }
    }

    /// Lays the loadable segments out as one flat memory image starting at the lowest physical
    /// address, the way a loader of raw images (arm64 `Image`) will find them. Bytes past each
    /// segment's file contents (`.bss`) are not included: the kernel zeroes them itself.
    pub fn flatten(&self, limit: u64) -> Result<FlatImage, ElfError> {
        let mut loads: Vec<&Segment> = self.load_segments().filter(|s| s.file_size > 0).collect();
        loads.sort_by_key(|s| s.physical_address);
        let base = loads.first().ok_or(ElfError::NoLoadableSegments)?.physical_address;
        let end = loads.iter().map(|s| s.physical_address.saturating_add(s.file_size)).max().unwrap_or(base);
        let span = end.saturating_sub(base);
        if span > limit {
            return Err(ElfError::TooLarge { span, limit });
        }
        let mut bytes = vec![0u8; span as usize];
        let mut filled_to = base;
        for segment in loads {
            if segment.physical_address < filled_to {
                return Err(ElfError::OverlappingSegments { address: segment.physical_address });
            }
            let at = (segment.physical_address - base) as usize;
            let data = self.segment_bytes(segment);
            bytes[at..at + data.len()].copy_from_slice(data);
            filled_to = segment.physical_address.saturating_add(segment.file_size);
        }
        Ok(FlatImage { load_address: base, bytes })
    }
}

/// Loadable segments laid out contiguously from `load_address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlatImage {
    pub load_address: u64,
    pub bytes: Vec<u8>,
}

fn checked_range(offset: u64, len: u64, file_len: usize) -> Option<Range<usize>> {
    let end = offset.checked_add(len)?;
    if end > file_len as u64 {
        return None;
    }
    Some(offset as usize..end as usize)
}

fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|n| n & !3)
}

pub(crate) fn le_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

pub(crate) fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

pub(crate) fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a minimal ELF64 with the given (physical address, file bytes, memory size) loads and
    /// notes, for tests here and in `kernel`.
    pub(crate) fn build_elf(
        machine: u16,
        entry: u64,
        loads: &[(u64, &[u8], u64)],
        notes: &[(&[u8], u32, &[u8])],
    ) -> Vec<u8> {
        let mut note_bytes = Vec::new();
        for (name, kind, desc) in notes {
            note_bytes.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
            note_bytes.extend_from_slice(&(desc.len() as u32).to_le_bytes());
            note_bytes.extend_from_slice(&kind.to_le_bytes());
            note_bytes.extend_from_slice(name);
            note_bytes.push(0);
            while note_bytes.len() % 4 != 0 {
                note_bytes.push(0);
            }
            note_bytes.extend_from_slice(desc);
            while note_bytes.len() % 4 != 0 {
                note_bytes.push(0);
            }
        }
        let count = loads.len() + usize::from(!notes.is_empty());
        let mut data_offset = (HEADER_LEN + count * PROGRAM_HEADER_LEN) as u64;
        let mut elf = vec![0u8; HEADER_LEN];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[6] = 1;
        elf[16..18].copy_from_slice(&2u16.to_le_bytes());
        elf[18..20].copy_from_slice(&machine.to_le_bytes());
        elf[24..32].copy_from_slice(&entry.to_le_bytes());
        elf[32..40].copy_from_slice(&(HEADER_LEN as u64).to_le_bytes());
        elf[54..56].copy_from_slice(&(PROGRAM_HEADER_LEN as u16).to_le_bytes());
        elf[56..58].copy_from_slice(&(count as u16).to_le_bytes());
        let mut payload = Vec::new();
        let mut header = |kind: u32, address: u64, file: &[u8], memory: u64, elf: &mut Vec<u8>| {
            let mut ph = vec![0u8; PROGRAM_HEADER_LEN];
            ph[0..4].copy_from_slice(&kind.to_le_bytes());
            ph[8..16].copy_from_slice(&data_offset.to_le_bytes());
            ph[16..24].copy_from_slice(&address.to_le_bytes());
            ph[24..32].copy_from_slice(&address.to_le_bytes());
            ph[32..40].copy_from_slice(&(file.len() as u64).to_le_bytes());
            ph[40..48].copy_from_slice(&memory.to_le_bytes());
            elf.extend_from_slice(&ph);
            payload.extend_from_slice(file);
            data_offset += file.len() as u64;
        };
        for (address, file, memory) in loads {
            header(PT_LOAD, *address, file, *memory, &mut elf);
        }
        if !notes.is_empty() {
            header(PT_NOTE, 0, &note_bytes, note_bytes.len() as u64, &mut elf);
        }
        elf.extend_from_slice(&payload);
        elf
    }

    #[test]
    fn parses_segments_and_notes() {
        let elf = build_elf(62, 0x100000, &[(0x100000, b"code", 4096)], &[(b"Xen", 18, &[1, 2, 3, 4])]);
        let parsed = Elf::parse(&elf).expect("valid ELF");
        assert_eq!(parsed.machine, 62);
        assert_eq!(parsed.entry, 0x100000);
        assert_eq!(parsed.load_segments().count(), 1);
        let notes = parsed.notes().expect("valid notes");
        assert_eq!(notes, [Note { name: b"Xen", kind: 18, desc: &[1, 2, 3, 4] }]);
        assert_eq!(parsed.load_span(), Ok(0x100000..0x101000));
    }

    #[test]
    fn flatten_fills_gaps_and_skips_bss() {
        let elf = build_elf(183, 0, &[(0x1000, b"ab", 2), (0x1004, b"cd", 100)], &[]);
        let flat = Elf::parse(&elf).expect("valid").flatten(1 << 20).expect("flattens");
        assert_eq!(flat.load_address, 0x1000);
        assert_eq!(flat.bytes, b"ab\0\0cd");
    }

    #[test]
    fn flatten_refuses_overlaps_and_huge_spans() {
        let overlapping = build_elf(183, 0, &[(0x1000, b"abcd", 4), (0x1002, b"xy", 2)], &[]);
        assert_eq!(
            Elf::parse(&overlapping).expect("valid").flatten(1 << 20),
            Err(ElfError::OverlappingSegments { address: 0x1002 })
        );
        let sparse = build_elf(183, 0, &[(0x1000, b"a", 1), (0x4000_0000, b"b", 1)], &[]);
        assert!(matches!(Elf::parse(&sparse).expect("valid").flatten(1 << 20), Err(ElfError::TooLarge { .. })));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let elf = build_elf(62, 0x100000, &[(0x100000, b"some code bytes", 4096)], &[(b"Xen", 18, &[0; 4])]);
        for len in 0..elf.len() {
            let result = Elf::parse(&elf[..len]).and_then(|e| e.notes().map(|_| ()));
            assert!(result.is_err(), "a file cut to {len} of {} bytes was accepted", elf.len());
        }
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        assert_eq!(Elf::parse(b"hello").map(|_| ()), Err(ElfError::TooShort { len: 5 }));
        assert_eq!(Elf::parse(&[0xAB; 128]).map(|_| ()), Err(ElfError::BadMagic));
        let mut elf32 = build_elf(62, 0, &[(0, b"x", 1)], &[]);
        elf32[4] = 1;
        assert_eq!(Elf::parse(&elf32).map(|_| ()), Err(ElfError::WrongClass { class: 1, encoding: 1 }));
    }

    #[test]
    fn bit_flips_in_headers_never_panic() {
        let elf = build_elf(62, 0x100000, &[(0x100000, b"code", 64)], &[(b"Xen", 18, &[0; 4])]);
        for byte in 0..elf.len().min(HEADER_LEN + 2 * PROGRAM_HEADER_LEN) {
            for bit in 0..8 {
                let mut flipped = elf.clone();
                flipped[byte] ^= 1 << bit;
                if let Ok(parsed) = Elf::parse(&flipped) {
                    let _ = parsed.notes();
                    let _ = parsed.load_span();
                    let _ = parsed.flatten(1 << 20);
                }
            }
        }
    }
}
