//! `kvlog`: an append-only log and key-value store, durable on a block device. This library is
//! the log (on-disk format, recovery, index); the appliance binary (`src/main.rs`) serves it over
//! HTTP from a virtio-blk volume.
//!
//! # Durability guarantee
//! An append is acknowledged (HTTP 201) only after its record has been written **and** the
//! device flushed. At any moment the volume holds every acknowledged record followed by at most
//! one record that was being written. Any copy of the volume taken at any moment (a crash, a
//! `kill -9` of the VM, a snapshot of the volume file taken while the VM writes, provided the copy
//! is prefix-consistent) recovers to "every record acknowledged before the copy, in order, and
//! possibly the one in flight". Damage inside the log costs only the damaged records (see
//! Recovery).
//!
//! # On-disk format (version 1)
//! All integers little-endian; the volume is a sequence of 512-byte sectors.
//!
//! | sectors | content |
//! | --- | --- |
//! | 0 | superblock: magic `MASTKVLG` (8 bytes), format version `u32` = 1, first record sector `u32` = 8, volume id `u64`, CRC-32 of the preceding 24 bytes `u32`, zeros |
//! | 1..8 | reserved (zeros) |
//! | 8.. | records, back to back, each starting on a sector boundary |
//!
//! A record is a 40-byte header, the key, the value, then zeros up to the next sector boundary:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..4 | magic `KVLR` |
//! | 4..12 | sequence number `u64`: 0 for the first record, then consecutive |
//! | 12..20 | the volume id from the superblock |
//! | 20..22 | key length `u16`, 1..=[`MAX_KEY_LEN`] |
//! | 22..24 | reserved, zero |
//! | 24..28 | value length `u32`, 0..=[`MAX_VALUE_LEN`] |
//! | 28..32 | the previous record's CRC (0 for record 0): the records form a chain |
//! | 32..36 | CRC-32 of bytes 0..32, the key and the value |
//! | 36..40 | reserved, zero |
//!
//! Records are only ever appended: a sector that holds an acknowledged record is never written
//! again (the superblock is written once, when an all-zero volume is formatted).
//!
//! # Recovery
//! At start the log is read from sector 8 on, record by record along the chain. At a record that
//! is missing or invalid (wrong magic, a sequence number other than the next one, another volume's
//! id, a previous-record CRC that is not the last record's, impossible lengths, running past the
//! end of the volume, or a CRC mismatch), recovery never discards a valid record behind it:
//! - **bounded damage**: the damaged record's header is this log's next one, and the record its
//!   length points at is the next record, chained to the damaged record's CRC. The damaged record
//!   is lost ([`Store::lost`]; reading it is an error) and recovery goes on behind it.
//! - **the end**: no valid record of this volume with a later sequence number lies behind it
//!   before 130 blank sectors in a row (more than the largest record, 129 sectors) or the end of
//!   the volume. The log ends there (a torn or never-finished write, or a truncated copy); the
//!   next append goes there.
//! - **unbounded damage**: a valid record lies behind damage recovery cannot bound. Everything
//!   before the damage is readable and appends are refused ([`AppendError::Damaged`]) until an
//!   operator reopens with [`Recovery::Resync`] (the appliance argument `recover=resync`), which
//!   counts the records between as lost and goes on from the valid one.
//!
//! [`Store::damage_report`] says which records were lost. The volume id keeps a record left over
//! from an earlier format of the same disk from being taken for one of this log's; the chain of
//! CRCs does the same for records that lay behind a damaged one once a new record has replaced it
//! (which only an older kvlog did: it appended over the first damaged record).
//!
//! # Limits (memory is bounded)
//! The index lives in RAM: 4 bytes per record (its sector; at most [`MAX_RECORDS`] records) and,
//! per distinct key, the key and its latest sequence number (at most [`MAX_KEYS`] keys of at most
//! [`MAX_KEY_LEN`] bytes). About 8 MiB of records index and 4 MiB of keys at the limits. Past a
//! limit, or when the volume is full, appends are refused ([`AppendError::Full`]) and everything
//! stored stays readable. Volumes up to 2 TiB (sector numbers are `u32`).
//!
//! # Not supported
//! - Deleting or compacting: the log only grows.
//! - Protection against deliberately crafted values that mimic records after a torn write: the
//!   CRC and volume id catch accidents, not an adversary who knows the volume id.
#![cfg_attr(target_os = "none", no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod crc32;
pub mod format;
pub mod store;

pub use format::{MAX_KEY_LEN, MAX_VALUE_LEN, SECTOR_SIZE, valid_key};
pub use store::{
    AppendError, Disk, DiskError, MAX_KEYS, MAX_RECORDS, OpenError, Record, Recovery, Stats, Store, UnboundedDamage,
};
