//! A reader for ATAGs, the pre-device-tree boot protocol. Owned by the aarch64 port.
//!
//! QEMU's `raspi3b` machine, booting an image with `-kernel` and no `-dtb`, writes an ATAG list at
//! RAM base + 0x100 and passes its address in x0: the memory size, the initrd and the `-append`
//! command line. The runtime reads those three tags so appliances see their arguments there too.
//!
//! Each tag is `size` (in 32-bit words, header included), `tag`, then data; the list starts with
//! `ATAG_CORE` and ends with `ATAG_NONE`. All little-endian.
//!
//! # Guarantees
//! - Safe code over a `&[u8]`; never panics. A list that does not start with `ATAG_CORE` is not an
//!   ATAG list ([`parse`] returns `None`); a tag running past the bytes ends the walk.
//!
//! # Not supported
//! - Tags other than `ATAG_MEM`, `ATAG_INITRD2` and `ATAG_CMDLINE`; more than one `ATAG_MEM` (the
//!   first is used).

use crate::fdt::Region;

const ATAG_NONE: u32 = 0;
const ATAG_CORE: u32 = 0x5441_0001;
const ATAG_MEM: u32 = 0x5441_0002;
const ATAG_INITRD2: u32 = 0x5442_0005;
const ATAG_CMDLINE: u32 = 0x5441_0009;

/// What an ATAG list says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Atags<'a> {
    /// The RAM the loader describes (`ATAG_MEM`).
    pub memory: Option<Region>,
    /// Where the loader put the initial ramdisk (`ATAG_INITRD2`): the data bundle.
    pub initrd: Option<Region>,
    /// The command line, `None` if absent; `Some(Err(()))` if it is not UTF-8.
    pub cmdline: Option<Result<&'a str, ()>>,
}

fn word(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// Reads the ATAG list at the start of `bytes`, or `None` if it does not start with `ATAG_CORE`.
pub fn parse(bytes: &[u8]) -> Option<Atags<'_>> {
    if word(bytes, 4)? != ATAG_CORE {
        return None;
    }
    let mut found = Atags::default();
    let mut at = 0usize;
    while let (Some(size), Some(tag)) = (word(bytes, at), word(bytes, at + 4)) {
        if tag == ATAG_NONE || size < 2 {
            break;
        }
        let Some(end) = (size as usize).checked_mul(4).and_then(|len| at.checked_add(len)) else { break };
        let Some(data) = bytes.get(at + 8..end) else { break };
        match tag {
            ATAG_MEM if found.memory.is_none() => {
                if let (Some(size), Some(start)) = (word(data, 0), word(data, 4)) {
                    found.memory = Some(Region { address: start.into(), size: size.into() });
                }
            }
            ATAG_INITRD2 => {
                if let (Some(start), Some(size)) = (word(data, 0), word(data, 4)) {
                    found.initrd = Some(Region { address: start.into(), size: size.into() }).filter(|r| r.size > 0);
                }
            }
            ATAG_CMDLINE => {
                let len = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                found.cmdline = Some(data.get(..len).and_then(|s| core::str::from_utf8(s).ok()).ok_or(()));
            }
            _ => {}
        }
        at = end;
    }
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(out: &mut Vec<u8>, tag: u32, data: &[u8]) {
        let padded = data.len().div_ceil(4) * 4;
        out.extend_from_slice(&((2 + padded / 4) as u32).to_le_bytes());
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(data);
        out.resize(out.len() + padded - data.len(), 0);
    }

    fn qemu_list(cmdline: &[u8]) -> Vec<u8> {
        let mut list = Vec::new();
        tag(&mut list, ATAG_CORE, &[0; 12]);
        let mem: Vec<u8> = [0x4000_0000u32, 0].iter().flat_map(|w| w.to_le_bytes()).collect();
        tag(&mut list, ATAG_MEM, &mem);
        let initrd: Vec<u8> = [0x0800_0000u32, 0x1234].iter().flat_map(|w| w.to_le_bytes()).collect();
        tag(&mut list, ATAG_INITRD2, &initrd);
        tag(&mut list, ATAG_CMDLINE, cmdline);
        list.extend_from_slice(&[0; 8]);
        list
    }

    #[test]
    fn reads_what_qemu_writes() {
        let list = qemu_list(b"one \"two words\"\0");
        let atags = parse(&list).expect("an ATAG list");
        assert_eq!(atags.memory, Some(Region { address: 0, size: 0x4000_0000 }));
        assert_eq!(atags.initrd, Some(Region { address: 0x0800_0000, size: 0x1234 }));
        assert_eq!(atags.cmdline, Some(Ok("one \"two words\"")));
    }

    #[test]
    fn garbage_and_truncations_never_panic() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0xd0, 0x0d, 0xfe, 0xed, 0, 0, 0, 0]), None);
        let list = qemu_list(b"abc\0");
        for len in 0..list.len() {
            let _ = parse(&list[..len]);
        }
        let mut bad = qemu_list(&[0xff, 0xfe, 0]);
        assert_eq!(parse(&bad).map(|a| a.cmdline), Some(Some(Err(()))));
        // A size that points far past the end ends the walk.
        bad[0] = 0xff;
        bad[3] = 0xff;
        assert_eq!(parse(&bad).map(|a| a.memory), Some(None));
    }
}
