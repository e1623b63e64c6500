//! Encoding and decoding of the superblock and records (see the crate docs for the layout).

use alloc::vec::Vec;

use crate::crc32::{Crc32, crc32};

/// The device's sector size: the unit of every position.
pub const SECTOR_SIZE: usize = 512;
/// The superblock's magic.
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"MASTKVLG";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Where the first record starts: sectors 1..8 are reserved, so that records begin 4 KiB in.
pub const FIRST_RECORD_SECTOR: u64 = 8;
/// A record's magic.
pub const RECORD_MAGIC: [u8; 4] = *b"KVLR";
/// The size of a record header.
pub const HEADER_LEN: usize = 40;
/// The longest key.
pub const MAX_KEY_LEN: usize = 128;
/// The longest value: 64 KiB.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// Whether `key` may name a record: 1..=[`MAX_KEY_LEN`] bytes of ASCII letters, digits, `-`, `_`,
/// `.` (so it needs no escaping in a URL path or query, nor in an HTTP header).
pub fn valid_key(key: &str) -> bool {
    (1..=MAX_KEY_LEN).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The superblock's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// A number chosen at format time that every record repeats.
    pub volume_id: u64,
}

/// What sector 0 holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuperblockState {
    /// All zeros: a fresh volume, to be formatted.
    Blank,
    /// A valid kvlog superblock.
    Valid(Superblock),
    /// A kvlog superblock of another format version.
    UnknownVersion(u32),
    /// Something else: not a kvlog volume (or a damaged superblock). Never formatted over.
    Foreign,
}

impl Superblock {
    /// The superblock sector.
    pub fn encode(&self) -> [u8; SECTOR_SIZE] {
        let mut sector = [0; SECTOR_SIZE];
        sector[0..8].copy_from_slice(&SUPERBLOCK_MAGIC);
        sector[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        sector[12..16].copy_from_slice(&(FIRST_RECORD_SECTOR as u32).to_le_bytes());
        sector[16..24].copy_from_slice(&self.volume_id.to_le_bytes());
        let crc = crc32(&sector[0..24]);
        sector[24..28].copy_from_slice(&crc.to_le_bytes());
        sector
    }

    /// What `sector` (sector 0 of a volume) holds.
    pub fn decode(sector: &[u8; SECTOR_SIZE]) -> SuperblockState {
        if sector.iter().all(|&b| b == 0) {
            return SuperblockState::Blank;
        }
        if sector[0..8] != SUPERBLOCK_MAGIC || crc32(&sector[0..24]) != le_u32(&sector[24..28]) {
            return SuperblockState::Foreign;
        }
        let version = le_u32(&sector[8..12]);
        if version != FORMAT_VERSION || u64::from(le_u32(&sector[12..16])) != FIRST_RECORD_SECTOR {
            return SuperblockState::UnknownVersion(version);
        }
        SuperblockState::Valid(Superblock { volume_id: le_u64(&sector[16..24]) })
    }
}

/// A record header, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub seq: u64,
    pub volume_id: u64,
    pub key_len: usize,
    pub value_len: usize,
    /// The CRC of the record before this one (0 for the first): the chain that keeps a record
    /// left behind a damaged one from being taken for the successor of a record written since.
    pub prev_crc: u32,
    pub crc: u32,
}

impl Header {
    /// How many sectors the whole record takes.
    pub fn sectors(&self) -> u64 {
        record_sectors(self.key_len, self.value_len)
    }

    /// Decodes the header at the start of `bytes`: `None` unless it has the magic, a reserved
    /// field of zero and lengths within the limits. (The CRC is checked against the payload by
    /// [`check`].)
    pub fn decode(bytes: &[u8]) -> Option<Header> {
        let bytes = bytes.get(..HEADER_LEN)?;
        if bytes[0..4] != RECORD_MAGIC || bytes[22..24] != [0, 0] || bytes[36..40] != [0; 4] {
            return None;
        }
        let key_len = usize::from(u16::from_le_bytes([bytes[20], bytes[21]]));
        let value_len = le_u32(&bytes[24..28]) as usize;
        if !(1..=MAX_KEY_LEN).contains(&key_len) || value_len > MAX_VALUE_LEN {
            return None;
        }
        Some(Header {
            seq: le_u64(&bytes[4..12]),
            volume_id: le_u64(&bytes[12..20]),
            key_len,
            value_len,
            prev_crc: le_u32(&bytes[28..32]),
            crc: le_u32(&bytes[32..36]),
        })
    }
}

/// How many sectors a record with this key and value takes.
pub fn record_sectors(key_len: usize, value_len: usize) -> u64 {
    (HEADER_LEN + key_len + value_len).div_ceil(SECTOR_SIZE) as u64
}

/// Whether `record` (a whole record's sectors, starting with its header) carries the CRC its
/// header claims. Returns the key and value if so.
pub fn check<'a>(header: &Header, record: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
    let payload_end = HEADER_LEN + header.key_len + header.value_len;
    let mut crc = Crc32::new();
    crc.update(record.get(..32)?);
    crc.update(record.get(HEADER_LEN..payload_end)?);
    if crc.finish() != header.crc {
        return None;
    }
    let key = record.get(HEADER_LEN..HEADER_LEN + header.key_len)?;
    let value = record.get(HEADER_LEN + header.key_len..payload_end)?;
    Some((key, value))
}

/// A record's sectors: header, key, value, zero padding. `key` must be 1..=[`MAX_KEY_LEN`] bytes
/// and `value` at most [`MAX_VALUE_LEN`] (the store checks before calling).
pub fn encode_record(seq: u64, volume_id: u64, prev_crc: u32, key: &[u8], value: &[u8]) -> Vec<u8> {
    let len = record_sectors(key.len(), value.len()) as usize * SECTOR_SIZE;
    let mut record = Vec::with_capacity(len);
    record.extend_from_slice(&RECORD_MAGIC);
    record.extend_from_slice(&seq.to_le_bytes());
    record.extend_from_slice(&volume_id.to_le_bytes());
    record.extend_from_slice(&(key.len() as u16).to_le_bytes());
    record.extend_from_slice(&[0, 0]);
    record.extend_from_slice(&(value.len() as u32).to_le_bytes());
    record.extend_from_slice(&prev_crc.to_le_bytes());
    let mut crc = Crc32::new();
    crc.update(&record);
    crc.update(key);
    crc.update(value);
    record.extend_from_slice(&crc.finish().to_le_bytes());
    record.extend_from_slice(&[0; 4]);
    record.extend_from_slice(key);
    record.extend_from_slice(value);
    record.resize(len, 0);
    record
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut array = [0; 4];
    array.copy_from_slice(bytes.get(..4).unwrap_or(&[0; 4]));
    u32::from_le_bytes(array)
}

fn le_u64(bytes: &[u8]) -> u64 {
    let mut array = [0; 8];
    array.copy_from_slice(bytes.get(..8).unwrap_or(&[0; 8]));
    u64::from_le_bytes(array)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_detect_any_flipped_bit() {
        let record = encode_record(7, 99, 0xabcd, b"key", b"value");
        assert_eq!(record.len(), SECTOR_SIZE);
        let header = Header::decode(&record).expect("a header");
        assert_eq!((header.seq, header.volume_id, header.key_len, header.value_len), (7, 99, 3, 5));
        assert_eq!(header.prev_crc, 0xabcd);
        assert_eq!(check(&header, &record), Some((&b"key"[..], &b"value"[..])));
        for bit in 0..(HEADER_LEN + 8) * 8 {
            let mut damaged = record.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let survives = Header::decode(&damaged).and_then(|h| check(&h, &damaged).map(|_| h));
            assert!(survives.is_none(), "bit {bit} went unnoticed");
        }
    }

    #[test]
    fn record_sizes() {
        assert_eq!(record_sectors(1, 0), 1);
        assert_eq!(record_sectors(1, SECTOR_SIZE - HEADER_LEN - 1), 1);
        assert_eq!(record_sectors(1, SECTOR_SIZE - HEADER_LEN), 2);
        assert_eq!(record_sectors(MAX_KEY_LEN, MAX_VALUE_LEN), 129);
    }

    #[test]
    fn superblocks() {
        let block = Superblock { volume_id: 0x1234 };
        assert_eq!(Superblock::decode(&block.encode()), SuperblockState::Valid(block));
        assert_eq!(Superblock::decode(&[0; SECTOR_SIZE]), SuperblockState::Blank);
        let mut foreign = [0; SECTOR_SIZE];
        foreign[100] = 1;
        assert_eq!(Superblock::decode(&foreign), SuperblockState::Foreign);
        let mut damaged = block.encode();
        damaged[17] ^= 4;
        assert_eq!(Superblock::decode(&damaged), SuperblockState::Foreign);
    }

    #[test]
    fn keys() {
        assert!(valid_key("user-42.name_x"));
        assert!(!valid_key(""));
        assert!(!valid_key("a b"));
        assert!(!valid_key("a%20"));
        assert!(!valid_key(&"k".repeat(MAX_KEY_LEN + 1)));
        assert!(valid_key(&"k".repeat(MAX_KEY_LEN)));
    }
}
