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
    /// Recovery found valid records behind damage it could not bound ([`Store::unbounded_damage`]):
    /// appending would bury them, so nothing is appended until an operator reopens the log with
    /// [`Recovery::Resync`] (or attaches another volume).
    Damaged,
}

/// What recovery does when it finds valid records behind damage it cannot prove bounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recovery {
    /// Keep everything readable and refuse appends ([`AppendError::Damaged`]) until an operator
    /// decides.
    #[default]
    Refuse,
    /// The operator's decision: count the unreadable records as lost and go on from the valid
    /// record behind them.
    Resync,
}

impl Recovery {
    /// The appliance argument that chooses [`Recovery::Resync`].
    pub const RESYNC_ARG: &'static str = "recover=resync";

    /// [`Recovery::Resync`] if `args` hold [`Self::RESYNC_ARG`], else [`Recovery::Refuse`].
    pub fn from_args<S: AsRef<str>>(args: &[S]) -> Recovery {
        if args.iter().any(|arg| arg.as_ref() == Self::RESYNC_ARG) { Recovery::Resync } else { Recovery::Refuse }
    }
}

/// Damage recovery found but could not bound: records from `first_lost` on did not read back,
/// and a valid record of this log, `resumes_at`, lies behind them at `sector`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnboundedDamage {
    pub first_lost: u64,
    pub resumes_at: u64,
    pub sector: u64,
}

/// The first sector of a record that did not read back, in [`Store`]'s index (sector 0 is the
/// superblock, so no record starts there).
const LOST: u32 = 0;
/// A run of this many blank sectors ends the search for records behind damage: every record
/// starts with a non-blank header sector and spans at most 129 sectors, so no record of the log
/// lies behind such a run (a longer zeroed span inside the log reads as its end).
const BLANK_RUN_ENDS_LOG: u64 = 130;

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
    /// The sequence number of the damaged record the log ended at, if its header was readable.
    torn_seq: Option<u64>,
    /// Records recovery skipped: damaged ones it resynchronised past.
    lost: Vec<core::ops::Range<u64>>,
    /// Damage recovery could not bound, with valid records behind it: appends are refused.
    unbounded: Option<UnboundedDamage>,
}

impl<D: Disk> Store<D> {
    /// Opens the log on `disk`: formats a blank volume (with `volume_id`, which should differ
    /// between volumes), or recovers an existing one ([`Recovery::Refuse`]: see [`Store::open_with`]).
    pub fn open(disk: D, volume_id: u64) -> Result<Store<D>, OpenError> {
        Store::open_with(disk, volume_id, Recovery::Refuse)
    }

    /// Opens the log on `disk` as [`Store::open`] does, recovering every valid record: the chain
    /// from the start, past each damaged record whose extent its successor proves (the damaged
    /// record's header gives its length, and the record there names the damaged one's CRC as its
    /// predecessor's), and, with [`Recovery::Resync`], past damage it cannot bound. Skipped
    /// records are listed by [`Store::lost`]. Where valid records lie behind damage it cannot
    /// bound and `recovery` is [`Recovery::Refuse`], everything before the damage is readable and
    /// appends are refused ([`Store::unbounded_damage`]).
    pub fn open_with(mut disk: D, volume_id: u64, recovery: Recovery) -> Result<Store<D>, OpenError> {
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
            torn_seq: None,
            lost: Vec::new(),
            unbounded: None,
        };
        store.recover(capacity, recovery)?;
        Ok(store)
    }

    /// Reads records from the start; at the first missing or invalid one, decides whether the log
    /// ends there (nothing valid behind it) or goes on past it (see [`Store::open_with`]).
    fn recover(&mut self, capacity: u64, recovery: Recovery) -> Result<(), OpenError> {
        loop {
            if !self.recover_chain(capacity)? {
                return Ok(());
            }
            let seq = self.sectors.len() as u64;
            let damaged = self.read_record(self.end, capacity)?.map(|(header, _)| header);
            // Bounded: the damaged record's header is this log's next one, and the record its
            // length points at is the next one's, chained to the damaged record's CRC.
            if let Some(header) = damaged.filter(|h| self.is_next(h, seq, self.last_crc)) {
                let successor = self.end + header.sectors();
                if let Some(next) = self.read_valid_record(successor, capacity)?
                    && self.is_next(&next, seq + 1, header.crc)
                {
                    self.skip(seq..seq + 1, header.crc, successor);
                    continue;
                }
            }
            let Some((sector, resumes)) = self.find_record_after(seq, capacity)? else {
                // Nothing valid behind: the log ends here (a torn write at a crash, a truncated
                // copy, or a damaged last record).
                self.recovered_torn = self.sector_is_used(self.end)?;
                self.torn_seq = damaged.filter(|h| self.is_next(h, seq, self.last_crc)).map(|_| seq);
                return Ok(());
            };
            match recovery {
                Recovery::Resync => self.skip(seq..resumes.seq, resumes.prev_crc, sector),
                Recovery::Refuse => {
                    self.unbounded = Some(UnboundedDamage { first_lost: seq, resumes_at: resumes.seq, sector });
                    return Ok(());
                }
            }
        }
    }

    /// Whether `header` is this log's record number `seq`, following a record with CRC `prev_crc`.
    fn is_next(&self, header: &Header, seq: u64, prev_crc: u32) -> bool {
        header.seq == seq && header.volume_id == self.volume_id && header.prev_crc == prev_crc
    }

    /// Counts `lost` as records that did not read back, and goes on at `sector`, whose record
    /// follows one with CRC `prev_crc`.
    fn skip(&mut self, lost: core::ops::Range<u64>, prev_crc: u32, sector: u64) {
        let count = (lost.end - lost.start) as usize;
        self.sectors.extend(core::iter::repeat_n(LOST, count.min(MAX_RECORDS - self.sectors.len())));
        self.lost.push(lost);
        self.last_crc = prev_crc;
        self.end = sector;
    }

    /// The record at `sector` if its header decodes and it fits the volume, with whether its CRC
    /// and key check out.
    fn read_record(&mut self, sector: u64, capacity: u64) -> Result<Option<(Header, bool)>, OpenError> {
        if sector >= capacity {
            return Ok(None);
        }
        let mut first = [0; SECTOR_SIZE];
        self.disk.read(sector, &mut first).map_err(|_| OpenError::Disk)?;
        let Some(header) = Header::decode(&first) else { return Ok(None) };
        if sector + header.sectors() > capacity {
            return Ok(None);
        }
        let mut record = vec![0; header.sectors() as usize * SECTOR_SIZE];
        record[..SECTOR_SIZE].copy_from_slice(&first);
        if header.sectors() > 1 {
            self.disk.read(sector + 1, &mut record[SECTOR_SIZE..]).map_err(|_| OpenError::Disk)?;
        }
        let valid = check(&header, &record).is_some_and(|(key, _)| core::str::from_utf8(key).is_ok_and(valid_key));
        Ok(Some((header, valid)))
    }

    /// The header of the record at `sector` if the record is whole and valid (any sequence number).
    fn read_valid_record(&mut self, sector: u64, capacity: u64) -> Result<Option<Header>, OpenError> {
        Ok(self.read_record(sector, capacity)?.filter(|&(_, valid)| valid).map(|(header, _)| header))
    }

    fn sector_is_used(&mut self, sector: u64) -> Result<bool, OpenError> {
        let mut bytes = [0; SECTOR_SIZE];
        self.disk.read(sector, &mut bytes).map_err(|_| OpenError::Disk)?;
        Ok(bytes.iter().any(|&b| b != 0))
    }

    /// The first valid record of this volume with a sequence number above `seq`, searching from
    /// the sector after the damage at `end` until [`BLANK_RUN_ENDS_LOG`] blank sectors in a row or
    /// the end of the volume.
    fn find_record_after(&mut self, seq: u64, capacity: u64) -> Result<Option<(u64, Header)>, OpenError> {
        let mut sector = self.end + 1;
        let mut blank_run = 0;
        let mut window = vec![0; SCAN_SECTORS as usize * SECTOR_SIZE];
        while sector < capacity && blank_run < BLANK_RUN_ENDS_LOG {
            let count = SCAN_SECTORS.min(capacity - sector);
            let window = &mut window[..count as usize * SECTOR_SIZE];
            self.disk.read(sector, window).map_err(|_| OpenError::Disk)?;
            for (index, bytes) in window.chunks(SECTOR_SIZE).enumerate() {
                let at = sector + index as u64;
                if bytes.iter().all(|&b| b == 0) {
                    blank_run += 1;
                    if blank_run >= BLANK_RUN_ENDS_LOG {
                        return Ok(None);
                    }
                    continue;
                }
                blank_run = 0;
                let candidate = Header::decode(bytes)
                    .filter(|h| h.volume_id == self.volume_id && h.seq > seq && h.seq - seq < MAX_RECORDS as u64);
                if candidate.is_some()
                    && let Some(header) = self.read_valid_record(at, capacity)?
                {
                    return Ok(Some((at, header)));
                }
            }
            sector += count;
        }
        Ok(None)
    }

    /// Indexes records from `end` on while each is this log's next, whole and valid. Returns
    /// whether it stopped at a sector that does not hold that record (rather than at a limit).
    fn recover_chain(&mut self, capacity: u64) -> Result<bool, OpenError> {
        let mut window: Vec<u8> = Vec::new();
        let mut window_start = self.end;
        loop {
            if self.end >= capacity || self.sectors.len() >= MAX_RECORDS {
                return Ok(false);
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
            let Some(header) = window.get(offset..).and_then(Header::decode) else { return Ok(true) };
            let sectors = header.sectors();
            if !self.is_next(&header, self.sectors.len() as u64, self.last_crc) || self.end + sectors > capacity {
                return Ok(true);
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
            let Some((key, _value)) = check(&header, record) else { return Ok(true) };
            let Some(key) = core::str::from_utf8(key).ok().filter(|k| valid_key(k)) else { return Ok(true) };
            if !self.latest.contains_key(key) && self.latest.len() >= MAX_KEYS {
                // Written by a build with a larger limit; stop rather than lose track of a key.
                return Ok(false);
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
        if self.unbounded.is_some() {
            return Err(AppendError::Damaged);
        }
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
        if sector == LOST {
            // Recovery skipped it as damaged (see `lost`).
            return Err(DiskError);
        }
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

    /// The sequence number of the damaged record the log ended at, if its header was readable
    /// (a write in flight at a crash, never acknowledged, or a damaged last record).
    pub fn torn_seq(&self) -> Option<u64> {
        self.torn_seq
    }

    /// The records recovery skipped because they did not read back, as ranges of sequence
    /// numbers; reading one is an error. A key whose latest record was lost reads as its previous
    /// value.
    pub fn lost(&self) -> &[core::ops::Range<u64>] {
        &self.lost
    }

    /// Damage recovery could not bound, with valid records behind it; while there is some,
    /// appends are refused ([`AppendError::Damaged`]).
    pub fn unbounded_damage(&self) -> Option<UnboundedDamage> {
        self.unbounded
    }

    /// What recovery lost or refused, in words for the boot line: `None` for a clean log.
    pub fn damage_report(&self) -> Option<alloc::string::String> {
        use core::fmt::Write;
        let mut report = alloc::string::String::new();
        for lost in &self.lost {
            let _ = match lost.end - lost.start {
                1 => write!(report, "; record {} did not read back and was skipped", lost.start),
                _ => write!(report, "; records {} to {} did not read back and were skipped", lost.start, lost.end - 1),
            };
        }
        if let Some(damage) = self.unbounded {
            let _ = write!(
                report,
                "; records from {} on do not read back, and valid records resume at {} (sector {}): appends \
                 are refused; restart with {} to count {} to {} as lost and go on",
                damage.first_lost,
                damage.resumes_at,
                damage.sector,
                Recovery::RESYNC_ARG,
                damage.first_lost,
                damage.resumes_at - 1,
            );
        } else if self.recovered_torn {
            let _ = match self.torn_seq {
                Some(seq) => write!(report, "; the log ended at record {seq}, torn or damaged, which was dropped"),
                None => write!(report, "; the log ended at a torn or damaged record, which was dropped"),
            };
        }
        (!report.is_empty()).then_some(report)
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

    /// The sequence numbers recovery reports lost.
    fn lost(store: &Store<MemDisk>) -> Vec<u64> {
        store.lost().iter().cloned().flatten().collect()
    }

    /// Where each record starts, from a clean reopen.
    fn starts(disk: &MemDisk) -> Vec<usize> {
        let store = Store::open(disk.clone(), 0).expect("reopen");
        store.sectors.iter().map(|&sector| sector as usize * SECTOR_SIZE).collect()
    }

    /// Checks that the store holds `records` records, and that the first `filled` of them read back
    /// as `filled()` wrote them, but for the `lost` ones, which read as lost.
    fn check_all_but(store: &mut Store<MemDisk>, records: u64, lost: &[u64]) {
        check_first(store, records, records, lost);
    }

    fn check_first(store: &mut Store<MemDisk>, records: u64, filled: u64, lost: &[u64]) {
        assert_eq!(store.stats().records, records);
        for seq in 0..filled {
            let read = store.read(seq);
            if lost.contains(&seq) {
                assert_eq!(read, Err(DiskError), "record {seq} is lost and says so");
            } else {
                assert_eq!(read.expect("read").expect("present").value, value(seq), "record {seq}");
            }
        }
    }

    #[test]
    fn a_damaged_record_in_the_middle_is_skipped_and_named_when_its_successor_bounds_it() {
        let mut disk = filled(20).into_disk();
        let start = starts(&disk)[10];
        disk.bytes[start + HEADER_LEN] ^= 0x40; // the key's first byte: the header still reads
        let mut store = Store::open(disk, 0).expect("recover");
        assert_eq!(lost(&store), (10..11).collect::<Vec<u64>>());
        assert_eq!(store.unbounded_damage(), None);
        assert!(!store.recovered_torn());
        check_all_but(&mut store, 20, &[10]);
        // The log goes on after the last valid record, and the loss stays on record.
        assert_eq!(store.append("k", b"after"), Ok(20));
        let mut store = Store::open(store.into_disk(), 0).expect("reopen");
        assert_eq!(lost(&store), (10..11).collect::<Vec<u64>>());
        check_first(&mut store, 21, 20, &[10]);
        assert_eq!(store.read(20).expect("read").expect("present").value, b"after");
    }

    #[test]
    fn a_damaged_first_record_is_skipped_and_named() {
        let mut disk = filled(6).into_disk();
        let at = starts(&disk)[0];
        disk.bytes[at + HEADER_LEN + 1] ^= 1;
        let mut store = Store::open(disk, 0).expect("recover");
        assert_eq!(lost(&store), (0..1).collect::<Vec<u64>>());
        check_all_but(&mut store, 6, &[0]);
        assert_eq!(store.append("k", b"v"), Ok(6));
    }

    #[test]
    fn unbounded_damage_refuses_appends_until_the_operator_resyncs() {
        // Records 5 to 7 wiped (headers and all): their extent cannot be proved, record 8 is behind.
        let disk = filled(12).into_disk();
        let at = starts(&disk);
        let mut damaged = disk.clone();
        damaged.bytes[at[5]..at[8]].fill(0xa5);
        let mut store = Store::open(damaged.clone(), 0).expect("recover");
        assert_eq!(
            store.unbounded_damage(),
            Some(UnboundedDamage { first_lost: 5, resumes_at: 8, sector: (at[8] / SECTOR_SIZE) as u64 })
        );
        check_all_but(&mut store, 5, &[]);
        assert_eq!(store.append("k", b"v"), Err(AppendError::Damaged));
        // Nothing was written: the records behind the damage are still there.
        assert_eq!(store.into_disk().bytes, damaged.bytes);

        let mut store = Store::open_with(damaged, 0, Recovery::Resync).expect("resync");
        assert_eq!(lost(&store), (5..8).collect::<Vec<u64>>());
        assert_eq!(store.unbounded_damage(), None);
        check_all_but(&mut store, 12, &[5, 6, 7]);
        assert_eq!(store.append("k", b"v"), Ok(12));
        // The decision holds for that opening: the next one without it refuses again.
        let mut store = Store::open(store.into_disk(), 0).expect("reopen");
        assert_eq!(store.unbounded_damage().map(|d| d.first_lost), Some(5));
        assert_eq!(store.append("k", b"v"), Err(AppendError::Damaged));
    }

    #[test]
    fn a_damaged_header_in_the_middle_is_unbounded() {
        // The sequence number itself is damaged: the header cannot bound the record.
        let mut disk = filled(8).into_disk();
        let at = starts(&disk)[3];
        disk.bytes[at + 5] ^= 1;
        let store = Store::open(disk.clone(), 0).expect("recover");
        assert_eq!(store.unbounded_damage().map(|d| (d.first_lost, d.resumes_at)), Some((3, 4)));
        let mut store = Store::open_with(disk, 0, Recovery::Resync).expect("resync");
        assert_eq!(lost(&store), (3..4).collect::<Vec<u64>>());
        check_all_but(&mut store, 8, &[3]);
    }

    #[test]
    fn a_damaged_last_record_ends_the_log_and_is_named() {
        let mut disk = filled(20).into_disk();
        let at = starts(&disk)[19];
        disk.bytes[at + HEADER_LEN] ^= 0x40;
        let mut store = Store::open(disk, 0).expect("recover");
        assert!(store.recovered_torn());
        assert_eq!(store.torn_seq(), Some(19));
        assert_eq!((lost(&store), store.unbounded_damage()), (vec![], None));
        check_all_but(&mut store, 19, &[]);
        // As after a crash mid-write: the next append takes its place.
        assert_eq!(store.append("k", b"v"), Ok(19));
    }

    #[test]
    fn recover_resync_is_an_appliance_argument() {
        assert_eq!(Recovery::from_args(&["ip=10.0.0.2/24", "recover=resync"]), Recovery::Resync);
        assert_eq!(Recovery::from_args(&["recover=resyncx"]), Recovery::Refuse);
        assert_eq!(Recovery::from_args::<&str>(&[]), Recovery::Refuse);
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
        // A volume written by a build that appended over a damaged record: record 3 damaged, a new
        // record 3 in its place, the old record 4 behind it. The old 4 does not chain to the new 3.
        let mut store = Store::open(MemDisk::new(64), 5).expect("open");
        for seq in 0..8 {
            assert_eq!(store.append("k", &[seq as u8]), Ok(seq));
        }
        let mut disk = store.into_disk();
        let third = (FIRST_RECORD_SECTOR as usize + 3) * SECTOR_SIZE;
        let new_third =
            encode_record(3, 5, Header::decode(&disk.bytes[third - SECTOR_SIZE..]).expect("2").crc, b"k", b"new");
        disk.bytes[third..third + SECTOR_SIZE].copy_from_slice(&new_third);
        let mut store = Store::open(disk, 0).expect("reopen");
        assert_eq!(store.latest("k").expect("read").expect("present").value, b"new");
        assert_eq!(store.stats().records, 4);
        // The old records look like valid ones behind damage: kept, not appended over, and left
        // to the operator.
        assert_eq!(store.unbounded_damage().map(|d| (d.first_lost, d.resumes_at)), Some((4, 5)));
        assert_eq!(store.append("k", b"x"), Err(AppendError::Damaged));
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
