//! Appliance data bundles: the files an appliance serves or reads (a website, tables, models),
//! packed into one blob that travels beside the kernel rather than inside it.
//!
//! Keeping data out of the kernel is what makes updates cheap: the image stores the bundle as its
//! own part, so editing one file changes only that file's chunks, and the kernel's chunks, which
//! a peer already has, stay identical. The bootloader hands the bundle over as an initial ramdisk
//! (`-initrd`); the appliance reads files from it in place, without copying.
//!
//! # Format (version 1, little-endian)
//! ```text
//! magic    8 bytes  "MASTDATA"
//! version  u32      1
//! count    u32      number of files
//! entries  count ×  { path_len u16, path (UTF-8, path_len bytes), offset u32, len u32 }
//! files    …        each file's bytes at its offset from the start of the bundle, 8-aligned
//! ```
//! Paths are sorted and unique, so the same files always make the same bytes.
//!
//! [`Bundle::parse`] checks every length and offset; it never panics on malformed input.

use alloc::vec::Vec;

/// The first bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"MASTDATA";
/// The format version this crate packs and reads.
pub const VERSION: u32 = 1;
const HEADER_LEN: usize = 16;

/// What is wrong with a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleError {
    /// It does not start with `MASTDATA`.
    BadMagic,
    /// A version this runtime does not read.
    UnsupportedVersion(u32),
    /// A length or offset points past the end.
    Truncated,
    /// A path is not UTF-8, or paths are not sorted and unique.
    BadPath,
}

impl core::fmt::Display for BundleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BundleError::BadMagic => f.write_str("not a data bundle (no MASTDATA magic)"),
            BundleError::UnsupportedVersion(v) => write!(f, "unsupported data bundle version {v}"),
            BundleError::Truncated => f.write_str("the data bundle is truncated"),
            BundleError::BadPath => f.write_str("the data bundle has a bad path table"),
        }
    }
}

/// A parsed bundle: its files, read in place.
#[derive(Debug, Clone, Copy)]
pub struct Bundle<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> Bundle<'a> {
    /// Checks the whole bundle (every entry, every range) and returns it.
    pub fn parse(bytes: &'a [u8]) -> Result<Bundle<'a>, BundleError> {
        if bytes.len() < HEADER_LEN {
            return Err(if bytes.starts_with(&MAGIC[..bytes.len().min(8)]) {
                BundleError::Truncated
            } else {
                BundleError::BadMagic
            });
        }
        if bytes[..8] != MAGIC {
            return Err(BundleError::BadMagic);
        }
        let version = read_u32(bytes, 8).ok_or(BundleError::Truncated)?;
        if version != VERSION {
            return Err(BundleError::UnsupportedVersion(version));
        }
        let count = read_u32(bytes, 12).ok_or(BundleError::Truncated)? as usize;
        let bundle = Bundle { bytes, count };
        let mut cursor = HEADER_LEN;
        let mut previous: Option<&str> = None;
        for _ in 0..count {
            let (path, _, next) = bundle.entry_at(cursor)?;
            if previous.is_some_and(|p| p >= path) {
                return Err(BundleError::BadPath);
            }
            previous = Some(path);
            cursor = next;
        }
        Ok(bundle)
    }

    /// The number of files.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the bundle holds no files.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The contents of the file at `path` (e.g. `"index.html"`).
    pub fn get(&self, path: &str) -> Option<&'a [u8]> {
        self.iter().find(|(p, _)| *p == path).map(|(_, data)| data)
    }

    /// Every (path, contents) pair, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + '_ {
        let mut cursor = HEADER_LEN;
        (0..self.count).map_while(move |_| {
            let (path, data, next) = self.entry_at(cursor).ok()?;
            cursor = next;
            Some((path, data))
        })
    }

    fn entry_at(&self, at: usize) -> Result<(&'a str, &'a [u8], usize), BundleError> {
        let bytes = self.bytes;
        let path_len = usize::from(read_u16(bytes, at).ok_or(BundleError::Truncated)?);
        let path_end = at.checked_add(2 + path_len).ok_or(BundleError::Truncated)?;
        let path = bytes.get(at + 2..path_end).ok_or(BundleError::Truncated)?;
        let path = core::str::from_utf8(path).map_err(|_| BundleError::BadPath)?;
        let offset = read_u32(bytes, path_end).ok_or(BundleError::Truncated)? as usize;
        let len = read_u32(bytes, path_end + 4).ok_or(BundleError::Truncated)? as usize;
        let data =
            bytes.get(offset..offset.checked_add(len).ok_or(BundleError::Truncated)?).ok_or(BundleError::Truncated)?;
        Ok((path, data, path_end + 8))
    }
}

/// Packs `files` (path, contents) into a bundle. Paths are sorted; a repeated path keeps the
/// last contents given.
pub fn pack(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut sorted: Vec<(&str, &[u8])> = Vec::new();
    for &(path, data) in files {
        match sorted.binary_search_by(|(p, _)| (*p).cmp(path)) {
            Ok(i) => sorted[i].1 = data,
            Err(i) => sorted.insert(i, (path, data)),
        }
    }
    let table_len: usize = sorted.iter().map(|(p, _)| 2 + p.len() + 8).sum();
    let mut offset = align8(HEADER_LEN + table_len);
    let mut out = Vec::with_capacity(offset + sorted.iter().map(|(_, d)| d.len() + 8).sum::<usize>());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(sorted.len() as u32).to_le_bytes());
    for (path, data) in &sorted {
        out.extend_from_slice(&(path.len() as u16).to_le_bytes());
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(&(offset as u32).to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        offset = align8(offset + data.len());
    }
    for (_, data) in &sorted {
        out.resize(align8(out.len()), 0);
        out.extend_from_slice(data);
    }
    out
}

fn align8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        pack(&[("style.css", b"body{}"), ("index.html", b"<h1>hi</h1>"), ("logo.png", &[0x89, b'P', b'N', b'G'])])
    }

    #[test]
    fn files_round_trip_in_path_order() {
        let bytes = sample();
        let bundle = Bundle::parse(&bytes).expect("valid bundle");
        assert_eq!(bundle.len(), 3);
        assert_eq!(bundle.get("index.html"), Some(&b"<h1>hi</h1>"[..]));
        assert_eq!(bundle.get("logo.png"), Some(&[0x89, b'P', b'N', b'G'][..]));
        assert_eq!(bundle.get("missing"), None);
        let paths: Vec<&str> = bundle.iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["index.html", "logo.png", "style.css"]);
    }

    #[test]
    fn packing_is_deterministic_whatever_the_input_order() {
        let a = pack(&[("b", b"2"), ("a", b"1")]);
        let b = pack(&[("a", b"1"), ("b", b"2")]);
        assert_eq!(a, b);
    }

    #[test]
    fn file_contents_are_8_aligned() {
        let bytes = sample();
        let bundle = Bundle::parse(&bytes).expect("valid");
        for (_, data) in bundle.iter() {
            let offset = data.as_ptr() as usize - bytes.as_ptr() as usize;
            assert_eq!(offset % 8, 0);
        }
    }

    #[test]
    fn every_truncation_and_garbage_is_an_error() {
        let bytes = sample();
        for len in 0..bytes.len() {
            let cut = &bytes[..len];
            if let Ok(bundle) = Bundle::parse(cut) {
                panic!("a bundle cut to {len} bytes parsed with {} files", bundle.len());
            }
        }
        assert_eq!(Bundle::parse(b"not a bundle at all").map(|_| ()), Err(BundleError::BadMagic));
        let mut future = bytes.clone();
        future[8] = 9;
        assert_eq!(Bundle::parse(&future).map(|_| ()), Err(BundleError::UnsupportedVersion(9)));
    }

    #[test]
    fn flipped_bytes_never_panic() {
        let bytes = sample();
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0xa5;
            if let Ok(bundle) = Bundle::parse(&bad) {
                for (_, data) in bundle.iter() {
                    let _ = data.len();
                }
            }
        }
    }

    #[test]
    fn unsorted_paths_are_refused() {
        let mut bytes = pack(&[("a", b"1"), ("b", b"2")]);
        // Swap the one-byte paths "a" and "b" in the table.
        let (first, second) = (HEADER_LEN + 2, HEADER_LEN + 2 + 1 + 8 + 2);
        bytes.swap(first, second);
        assert_eq!(Bundle::parse(&bytes).map(|_| ()), Err(BundleError::BadPath));
    }
}
