//! The store: recovery at open, appends, reads by sequence number and by key, over any [`Disk`].

use alloc::{boxed::Box, collections::BTreeMap, vec, vec::Vec};
use core::fmt;

use crate::format::{
    FIRST_RECORD_SECTOR, HEADER_LEN, Header, MAX_KEY_LEN, MAX_VALUE_LEN, SECTOR_SIZE, Superblock, SuperblockState,
    check, encode_record, record_sectors, valid_key,
};

/// The most records the in-RAM index holds (4 bytes each: 8 MiB).
pub const MAX_RECORDS: usize = 2 * 1024 * 1024;
/// The most distinct keys the in-RAM index holds.
pub const MAX_KEYS: usize = 16 * 1024;
/// How much recovery reads at a time: 256 sectors (128 KiB).
const SCAN_SECTORS: u64 = 256;

/// A disk of [`SECTOR_SIZE`]-byte sectors: the runtime's block device in the appliance, memory
/// in tests. Buffers are whole sectors.
pub trait Disk {
    /// The disk's size in sectors.
    fn capacity_sectors(&self) -> u64;
    /// Reads `buf.len() / SECTOR_SIZE` sectors from `sector` on.
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError>;
    /// Writes `buf` from `sector` on; durable only after [`flush`](Self::flush).
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DiskError>;
    /// Makes the writes so far durable.
    fn flush(&mut self) -> Result<(), DiskError>;
}

/// The disk failed a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskError;

/// Why a volume could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// The volume is too small for the superblock and one record.
    TooSmall { sectors: u64 },
    /// Sector 0 is neither blank nor a kvlog superblock: this is someone else's disk, and it is
    /// left alone.
    Foreign,
    /// A kvlog volume of a format version this build does not know.
    UnknownVersion(u32),
    /// The disk failed a read or the format's write.
    Disk,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::TooSmall { sectors } => write!(f, "the volume has {sectors} sectors; kvlog needs at least 16"),
            OpenError::Foreign => f.write_str(
                "sector 0 is neither blank nor a kvlog superblock; refusing to format over it (attach an empty volume)",
            ),
            OpenError::UnknownVersion(version) => write!(f, "kvlog format version {version} is not supported"),
            OpenError::Disk => f.write_str("the disk failed while opening the log"),
        }
    }
}

/// Why an append was refused. Nothing was acknowledged, and the store is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// The key is not 1..=128 bytes of `[A-Za-z0-9._-]`.
    BadKey,
    /// The value is over [`MAX_VALUE_LEN`].
    TooLarge,
    /// The volume, or the in-RAM index, has no room left.
    Full,
    /// The disk failed the write or the flush.
    Disk,
}

/// A record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub key: Box<str>,
    pub value: Vec<u8>,
}

/// The figures `GET /stats` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Records in the log.
    pub records: u64,
    /// Bytes of keys and values in the log.
    pub bytes: u64,
    /// The sequence number the next append gets.
    pub next_seq: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Bytes of the volume used (superblock and reserved sectors included) and its size.
    pub used_bytes: u64,
    pub capacity_bytes: u64,
}

/// An open log.
#[derive(Debug)]
pub struct Store<D: Disk> {
    disk: D,
    volume_id: u64,
    /// The first sector of each record, by sequence number.
    sectors: Vec<u32>,
    /// Each key's latest sequence number.
    latest: BTreeMap<Box<str>, u64>,
    /// Where the next record goes.
    end: u64,
    /// The CRC of the last record (0 before the first), which the next one repeats.
    last_crc: u32,
    payload_bytes: u64,
    /// Whether the recovered log ended at a damaged record rather than at blank space.
    recovered_torn: bool,
}

impl<D: Disk> Store<D> {
    /// Opens the log on `disk`: formats a blank volume (with `volume_id`, which should differ
    /// between volumes), or recovers the longest valid prefix of an existing one.
    pub fn open(mut disk: D, volume_id: u64) -> Result<Store<D>, OpenError> {
        let capacity = disk.capacity_sectors().min(u64::from(u32::MAX));
        if capacity < FIRST_RECORD_SECTOR * 2 {
            return Err(OpenError::TooSmall { sectors: capacity });
        }
        let mut sector = [0; SECTOR_SIZE];
        disk.read(0, &mut sector).map_err(|_| OpenError::Disk)?;
        let volume_id = match Superblock::decode(&sector) {
            SuperblockState::Valid(superblock) => superblock.volume_id,
            SuperblockState::Blank => {
                let superblock = Superblock { volume_id };
                disk.write(0, &superblock.encode()).map_err(|_| OpenError::Disk)?;
                disk.flush().map_err(|_| OpenError::Disk)?;
                volume_id
            }
            SuperblockState::Foreign => return Err(OpenError::Foreign),
            SuperblockState::UnknownVersion(version) => return Err(OpenError::UnknownVersion(version)),
        };
        let mut store = Store {
            disk,
            volume_id,
            sectors: Vec::new(),
            latest: BTreeMap::new(),
            end: FIRST_RECORD_SECTOR,
            last_crc: 0,
            payload_bytes: 0,
            recovered_torn: false,
        };
        store.recover(capacity)?;
        Ok(store)
    }

    /// Reads records from the start until the first missing or invalid one.
    fn recover(&mut self, capacity: u64) -> Result<(), OpenError> {
        let mut window: Vec<u8> = Vec::new();
        let mut window_start = FIRST_RECORD_SECTOR;
        loop {
            if self.end >= capacity || self.sectors.len() >= MAX_RECORDS {
                return Ok(());
            }
            // Make sure the window holds the header sector at `end`.
            let window_sectors = (window.len() / SECTOR_SIZE) as u64;
            if self.end < window_start || self.end >= window_start + window_sectors {
                let count = SCAN_SECTORS.min(capacity - self.end);
                window = vec![0; count as usize * SECTOR_SIZE];
                self.disk.read(self.end, &mut window).map_err(|_| OpenError::Disk)?;
                window_start = self.end;
            }
            let offset = (self.end - window_start) as usize * SECTOR_SIZE;
            let Some(header) = window.get(offset..).and_then(Header::decode) else {
                self.recovered_torn =
                    window.get(offset..offset + SECTOR_SIZE).is_some_and(|s| s.iter().any(|&b| b != 0));
                return Ok(());
            };
            let sectors = header.sectors();
            if header.seq != self.sectors.len() as u64
                || header.volume_id != self.volume_id
                || header.prev_crc != self.last_crc
                || self.end + sectors > capacity
            {
                self.recovered_torn = true;
                return Ok(());
            }
            let len = sectors as usize * SECTOR_SIZE;
            if offset + len > window.len() {
                // The record runs past the window: read the window again from its start.
                let count = SCAN_SECTORS.max(sectors).min(capacity - self.end);
                window = vec![0; count as usize * SECTOR_SIZE];
                self.disk.read(self.end, &mut window).map_err(|_| OpenError::Disk)?;
                window_start = self.end;
                continue;
            }
            let record = window.get(offset..offset + len).unwrap_or_default();
            let Some((key, _value)) = check(&header, record) else {
                self.recovered_torn = true;
                return Ok(());
            };
            let Some(key) = core::str::from_utf8(key).ok().filter(|k| valid_key(k)) else {
                self.recovered_torn = true;
                return Ok(());
            };
            if !self.latest.contains_key(key) && self.latest.len() >= MAX_KEYS {
                // Written by a build with a larger limit; stop rather than lose track of a key.
                return Ok(());
            }
            self.index(header.seq, key, header.value_len, sectors, header.crc);
        }
    }

    fn index(&mut self, seq: u64, key: &str, value_len: usize, sectors: u64, crc: u32) {
        self.sectors.push(self.end as u32);
        self.last_crc = crc;
        match self.latest.get_mut(key) {
            Some(latest) => *latest = seq,
            None => {
                self.latest.insert(Box::from(key), seq);
            }
        }
        self.payload_bytes += (key.len() + value_len) as u64;
        self.end += sectors;
    }

    /// Appends a record, and returns its sequence number once it is written and flushed.
    pub fn append(&mut self, key: &str, value: &[u8]) -> Result<u64, AppendError> {
        if !valid_key(key) {
            return Err(AppendError::BadKey);
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(AppendError::TooLarge);
        }
        let sectors = record_sectors(key.len(), value.len());
        let capacity = self.disk.capacity_sectors().min(u64::from(u32::MAX));
        let new_key = !self.latest.contains_key(key);
        if self.end + sectors > capacity
            || self.sectors.len() >= MAX_RECORDS
            || (new_key && self.latest.len() >= MAX_KEYS)
        {
            return Err(AppendError::Full);
        }
        let seq = self.sectors.len() as u64;
        let record = encode_record(seq, self.volume_id, self.last_crc, key.as_bytes(), value);
        let crc = Header::decode(&record).map_or(0, |header| header.crc);
        self.disk.write(self.end, &record).map_err(|_| AppendError::Disk)?;
        // The acknowledgement promises durability: flush before indexing (and so before the
        // caller answers). On failure the record may or may not be on the disk; the next
        // append reuses its place and number, so the log stays one consistent sequence.
        self.disk.flush().map_err(|_| AppendError::Disk)?;
        self.index(seq, key, value.len(), sectors, crc);
        Ok(seq)
    }

    /// The record with sequence number `seq`, if there is one. `Err` if the disk failed or the
    /// record no longer checks out (the volume was damaged under the running appliance).
    pub fn read(&mut self, seq: u64) -> Result<Option<Record>, DiskError> {
        let Some(&sector) = usize::try_from(seq).ok().and_then(|index| self.sectors.get(index)) else {
            return Ok(None);
        };
        let mut first = [0; SECTOR_SIZE];
        self.disk.read(u64::from(sector), &mut first)?;
        let header = Header::decode(&first).ok_or(DiskError)?;
        let mut record = vec![0; header.sectors() as usize * SECTOR_SIZE];
        record[..SECTOR_SIZE].copy_from_slice(&first);
        if header.sectors() > 1 {
            self.disk.read(u64::from(sector) + 1, &mut record[SECTOR_SIZE..])?;
        }
        if header.seq != seq {
            return Err(DiskError);
        }
        let (key, value) = check(&header, &record).ok_or(DiskError)?;
        let key = core::str::from_utf8(key).map_err(|_| DiskError)?;
        Ok(Some(Record { seq, key: Box::from(key), value: value.to_vec() }))
    }

    /// The latest record for `key`, if any.
    pub fn latest(&mut self, key: &str) -> Result<Option<Record>, DiskError> {
        match self.latest.get(key) {
            Some(&seq) => self.read(seq),
            None => Ok(None),
        }
    }

    /// The figures for `/stats`.
    pub fn stats(&self) -> Stats {
        Stats {
            records: self.sectors.len() as u64,
            bytes: self.payload_bytes,
            next_seq: self.sectors.len() as u64,
            keys: self.latest.len() as u64,
            used_bytes: self.end * SECTOR_SIZE as u64,
            capacity_bytes: self.disk.capacity_sectors() * SECTOR_SIZE as u64,
        }
    }

    /// Whether recovery stopped at a damaged record (a torn write, a truncated copy) rather than
    /// at blank space.
    pub fn recovered_torn(&self) -> bool {
        self.recovered_torn
    }

    /// The disk, for tests that damage it.
    pub fn into_disk(self) -> D {
        self.disk
    }

    /// The disk, for callers that look at what was read.
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// The disk, for device housekeeping (acknowledging its interrupt). Writing through it
    /// would bypass the log.
    pub fn disk_mut(&mut self) -> &mut D {
        &mut self.disk
    }
}

const _: () = assert!(HEADER_LEN + MAX_KEY_LEN + MAX_VALUE_LEN <= 129 * SECTOR_SIZE);

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk in memory that can fail and that keeps what was flushed apart from what was not.
    #[derive(Clone, Debug)]
    struct MemDisk {
        bytes: Vec<u8>,
        fail_writes: bool,
    }

    impl MemDisk {
        fn new(sectors: usize) -> Self {
            MemDisk { bytes: vec![0; sectors * SECTOR_SIZE], fail_writes: false }
        }
    }

    impl Disk for MemDisk {
        fn capacity_sectors(&self) -> u64 {
            (self.bytes.len() / SECTOR_SIZE) as u64
        }
        fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
            let start = sector as usize * SECTOR_SIZE;
            buf.copy_from_slice(self.bytes.get(start..start + buf.len()).ok_or(DiskError)?);
            Ok(())
        }
        fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DiskError> {
            if self.fail_writes {
                return Err(DiskError);
            }
            let start = sector as usize * SECTOR_SIZE;
            self.bytes.get_mut(start..start + buf.len()).ok_or(DiskError)?.copy_from_slice(buf);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), DiskError> {
            Ok(())
        }
    }

    fn value(seq: u64) -> Vec<u8> {
        // Sizes from 0 to a few sectors, so records span sector and window boundaries.
        (0..(seq * 97 % 1700)).map(|i| (i as u8) ^ (seq as u8)).collect()
    }

    fn filled(records: u64) -> Store<MemDisk> {
        let mut store = Store::open(MemDisk::new(4096), 42).expect("open a blank volume");
        for seq in 0..records {
            assert_eq!(store.append(&format!("k{}", seq % 5), &value(seq)), Ok(seq));
        }
        store
    }

    #[test]
    fn appends_read_back_by_seq_and_key_and_survive_reopening() {
        let store = filled(300);
        let mut store = Store::open(store.into_disk(), 7).expect("reopen");
        assert_eq!(store.stats().records, 300);
        assert!(!store.recovered_torn());
        for seq in 0..300 {
            let record = store.read(seq).expect("read").expect("present");
            assert_eq!((record.key.as_ref(), record.value), (format!("k{}", seq % 5).as_str(), value(seq)));
        }
        assert_eq!(store.read(300), Ok(None));
        assert_eq!(store.latest("k3").expect("read").expect("present").seq, 298);
        assert_eq!(store.latest("nope"), Ok(None));
        assert_eq!(store.append("k0", b"more"), Ok(300));
    }

    #[test]
    fn every_truncation_recovers_the_prefix_of_whole_records() {
        let store = filled(40);
        let disk = store.into_disk();
        let ends: Vec<usize> = {
            let reopened = Store::open(disk.clone(), 0).expect("reopen");
            (0..40).map(|seq| reopened.sectors[seq] as usize * SECTOR_SIZE).collect()
        };
        let used = Store::open(disk.clone(), 0).expect("reopen").end as usize * SECTOR_SIZE;
        // Cut the volume (zeroing the rest, as a snapshot that stopped there would) at every
        // 100th byte and at every record boundary.
        let cuts = (FIRST_RECORD_SECTOR as usize * SECTOR_SIZE..used).step_by(100).chain(ends.iter().copied());
        for cut in cuts {
            let mut damaged = disk.clone();
            damaged.bytes[cut..].fill(0);
            let mut store = Store::open(damaged, 0).expect("recover");
            // The records that began before the cut, the last of which may or may not be whole
            // (its padding is zeros, so a cut there leaves it intact).
            let begun = ends.iter().filter(|&&start| start < cut).count() as u64;
            let records = store.stats().records;
            assert!(records == begun || records + 1 == begun, "cut at {cut}: {records} records of {begun} begun");
            for seq in 0..records {
                assert_eq!(store.read(seq).expect("read").expect("present").value, value(seq));
            }
            // The log goes on from there.
            assert_eq!(store.append("after", b"x"), Ok(records));
            let mut reopened = Store::open(store.into_disk(), 0).expect("reopen");
            assert_eq!(reopened.stats().records, records + 1);
            assert_eq!(reopened.latest("after").expect("read").expect("present").value, b"x");
        }
    }

    #[test]
    fn a_corrupted_byte_ends_the_log_at_that_record() {
        let store = filled(20);
        let mut disk = store.into_disk();
        let sector_of_10 = Store::open(disk.clone(), 0).expect("reopen").sectors[10] as usize;
        disk.bytes[sector_of_10 * SECTOR_SIZE + HEADER_LEN] ^= 0x40;
        let store = Store::open(disk, 0).expect("recover");
        assert_eq!(store.stats().records, 10);
        assert!(store.recovered_torn());
    }

    #[test]
    fn refusals_change_nothing() {
        let mut store = Store::open(MemDisk::new(16), 1).expect("open");
        assert_eq!(store.append("bad key", b""), Err(AppendError::BadKey));
        assert_eq!(store.append("", b""), Err(AppendError::BadKey));
        assert_eq!(store.append("k", &vec![0; MAX_VALUE_LEN + 1]), Err(AppendError::TooLarge));
        // 8 record sectors: the ninth one-sector record does not fit.
        for seq in 0..8 {
            assert_eq!(store.append("k", b"v"), Ok(seq));
        }
        assert_eq!(store.append("k", b"v"), Err(AppendError::Full));
        let store = Store::open(store.into_disk(), 0).expect("reopen");
        assert_eq!((store.stats().records, store.stats().next_seq), (8, 8));
    }

    #[test]
    fn a_failed_write_is_not_acknowledged_and_its_number_is_reused() {
        let mut store = filled(3);
        store.disk.fail_writes = true;
        assert_eq!(store.append("k", b"v"), Err(AppendError::Disk));
        store.disk.fail_writes = false;
        assert_eq!(store.append("k", b"v"), Ok(3));
    }

    #[test]
    fn foreign_disks_are_left_alone() {
        let mut disk = MemDisk::new(64);
        disk.bytes[0..4].copy_from_slice(b"\x7fELF");
        assert_eq!(Store::open(disk.clone(), 1).err(), Some(OpenError::Foreign));
        assert_eq!(&disk.bytes[0..4], b"\x7fELF");
        assert_eq!(Store::open(MemDisk::new(8), 1).err(), Some(OpenError::TooSmall { sectors: 8 }));
    }

    #[test]
    fn records_behind_a_damaged_one_never_come_back() {
        // Damage record 3 (one sector, like every record here), append a new record 3 in its
        // place: the old record 4 after it must not be taken for the new record's successor.
        let mut store = Store::open(MemDisk::new(64), 5).expect("open");
        for seq in 0..8 {
            assert_eq!(store.append("k", &[seq as u8]), Ok(seq));
        }
        let mut disk = store.into_disk();
        let third = (FIRST_RECORD_SECTOR as usize + 3) * SECTOR_SIZE;
        disk.bytes[third + 5] ^= 1;
        let mut store = Store::open(disk, 0).expect("recover");
        assert_eq!(store.stats().records, 3);
        assert_eq!(store.append("k", b"new"), Ok(3));
        let mut store = Store::open(store.into_disk(), 0).expect("reopen");
        assert_eq!(store.stats().records, 4);
        assert_eq!(store.latest("k").expect("read").expect("present").value, b"new");
    }

    #[test]
    fn records_of_another_format_of_the_same_disk_are_not_recovered() {
        let store = filled(5);
        let mut disk = store.into_disk();
        // Reformat: a new superblock with another volume id over the old records.
        disk.bytes[..SECTOR_SIZE].copy_from_slice(&Superblock { volume_id: 43 }.encode());
        let store = Store::open(disk, 0).expect("open");
        assert_eq!(store.stats().records, 0);
    }
}
