//! Volume snapshots: an appliance's state volume as a list of fixed-size chunks.
//!
//! A volume is a plain file that grows and changes in place. A snapshot reads it in fixed
//! [`VOLUME_CHUNK`]-byte chunks (the last one shorter) and names each by its BLAKE3 hash, so the
//! next snapshot moves only the chunks whose bytes changed. Fixed-size chunks fit volumes better
//! than content-defined ones: writes change bytes in place rather than inserting them, so chunk
//! boundaries never need to move.

use std::{
    fs,
    io::{self, Read},
    path::Path,
};

use serde::{Deserialize, Serialize};

use crate::ChunkId;

/// The size of a volume chunk: 64 KiB.
pub const VOLUME_CHUNK: u32 = 64 << 10;

/// The format version written at the start of an encoded snapshot.
const SNAPSHOT_FORMAT: u32 = 1;

/// A volume as it was at one moment: small enough to replicate eagerly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSnapshot {
    /// The volume's name, unique within a rack (letters, digits, `-`, `_`, `.`).
    pub volume: String,
    /// Increases by one with each snapshot of this volume.
    pub seq: u64,
    /// When the volume was read, in milliseconds since the Unix epoch.
    pub captured_ms: u64,
    /// The volume's length in bytes.
    pub size: u64,
    /// Bytes per chunk; every chunk but the last is this long.
    pub chunk_size: u32,
    /// The chunks, in order.
    pub chunks: Vec<ChunkId>,
}

#[derive(Serialize, Deserialize)]
struct Encoded {
    format: u32,
    snapshot: VolumeSnapshot,
}

/// Why a snapshot could not be taken, decoded or restored.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{0:?} is not a volume name: use 1-64 letters, digits, '-', '_' or '.', not starting with '.'")]
    BadName(String),
    #[error("reading the volume {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("the snapshot does not decode: {0}")]
    Corrupt(String),
}

/// Checks that `name` can be a file and object-key component.
pub fn check_volume_name(name: &str) -> Result<(), VolumeError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(VolumeError::BadName(name.to_owned())) }
}

impl VolumeSnapshot {
    /// Reads the volume file at `path` and returns its snapshot, with each chunk's bytes (so the
    /// caller can store the new ones without reading the file twice).
    pub fn capture(
        volume: &str,
        path: &Path,
        seq: u64,
        captured_ms: u64,
    ) -> Result<(VolumeSnapshot, Vec<Vec<u8>>), VolumeError> {
        check_volume_name(volume)?;
        let shown = || path.display().to_string();
        let mut file = fs::File::open(path).map_err(|source| VolumeError::Read { path: shown(), source })?;
        let mut chunks = Vec::new();
        let mut ids = Vec::new();
        let mut size = 0u64;
        loop {
            let mut chunk = Vec::with_capacity(VOLUME_CHUNK as usize);
            (&mut file)
                .take(u64::from(VOLUME_CHUNK))
                .read_to_end(&mut chunk)
                .map_err(|source| VolumeError::Read { path: shown(), source })?;
            if chunk.is_empty() {
                break;
            }
            size += chunk.len() as u64;
            ids.push(ChunkId::of(&chunk));
            let short = chunk.len() < VOLUME_CHUNK as usize;
            chunks.push(chunk);
            if short {
                break;
            }
        }
        let snapshot =
            VolumeSnapshot { volume: volume.to_owned(), seq, captured_ms, size, chunk_size: VOLUME_CHUNK, chunks: ids };
        Ok((snapshot, chunks))
    }

    /// The length of chunk `index`.
    pub fn chunk_len(&self, index: usize) -> u64 {
        let start = index as u64 * u64::from(self.chunk_size);
        self.size.saturating_sub(start).min(u64::from(self.chunk_size))
    }

    /// Indexes of the chunks of `self` that `older` does not have at the same place: what changed
    /// since `older` (every chunk when there is no older snapshot).
    pub fn changed_since(&self, older: Option<&VolumeSnapshot>) -> Vec<usize> {
        (0..self.chunks.len()).filter(|&i| older.and_then(|o| o.chunks.get(i)) != Some(&self.chunks[i])).collect()
    }

    /// The snapshot as bytes, for storing and sending.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(&Encoded { format: SNAPSHOT_FORMAT, snapshot: self.clone() })
            .expect("serialising to memory cannot fail")
    }

    /// A snapshot from [`encode`](Self::encode)'s bytes, checked for consistency.
    pub fn decode(bytes: &[u8]) -> Result<VolumeSnapshot, VolumeError> {
        let encoded: Encoded = postcard::from_bytes(bytes).map_err(|e| VolumeError::Corrupt(e.to_string()))?;
        if encoded.format != SNAPSHOT_FORMAT {
            return Err(VolumeError::Corrupt(format!("unknown snapshot format {}", encoded.format)));
        }
        let snapshot = encoded.snapshot;
        check_volume_name(&snapshot.volume).map_err(|e| VolumeError::Corrupt(e.to_string()))?;
        let expected =
            if snapshot.chunk_size == 0 { u64::MAX } else { snapshot.size.div_ceil(u64::from(snapshot.chunk_size)) };
        if snapshot.chunk_size == 0 || expected != snapshot.chunks.len() as u64 {
            return Err(VolumeError::Corrupt(format!(
                "{} bytes in {}-byte chunks cannot be {} chunks",
                snapshot.size,
                snapshot.chunk_size,
                snapshot.chunks.len()
            )));
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn a_write_in_place_and_an_append_change_only_their_chunks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("vol");
        let chunk = VOLUME_CHUNK as usize;
        fs::write(&path, pseudo_random(10 * chunk + 100, 1)).expect("write");
        let (first, bytes) = VolumeSnapshot::capture("db", &path, 1, 1000).expect("capture");
        assert_eq!((first.chunks.len(), first.size), (11, 10 * chunk as u64 + 100));
        assert_eq!(bytes[10].len(), 100);
        assert_eq!(first.changed_since(None).len(), 11, "everything is new the first time");

        let mut file = fs::OpenOptions::new().write(true).open(&path).expect("open");
        file.seek(SeekFrom::Start(3 * chunk as u64 + 17)).expect("seek");
        file.write_all(b"changed").expect("write");
        file.seek(SeekFrom::End(0)).expect("seek");
        file.write_all(&pseudo_random(chunk, 2)).expect("append");
        drop(file);

        let (second, _) = VolumeSnapshot::capture("db", &path, 2, 2000).expect("capture");
        // Chunk 3 was written; chunk 10 grew from 100 bytes to a full chunk; chunk 11 is new.
        assert_eq!(second.changed_since(Some(&first)), [3, 10, 11]);
        assert_eq!(second.chunk_len(11), 100);
        assert!(second.changed_since(Some(&second)).is_empty());
    }

    #[test]
    fn snapshots_round_trip_and_inconsistent_ones_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("vol");
        fs::write(&path, pseudo_random(200_000, 3)).expect("write");
        let (snapshot, _) = VolumeSnapshot::capture("state", &path, 7, 5).expect("capture");
        assert_eq!(VolumeSnapshot::decode(&snapshot.encode()).expect("decodes"), snapshot);
        let mut bad = snapshot.clone();
        bad.chunks.pop();
        assert!(VolumeSnapshot::decode(&bad.encode()).is_err());
        assert!(VolumeSnapshot::decode(b"garbage").is_err());
    }

    #[test]
    fn an_empty_volume_has_no_chunks_and_bad_names_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("vol");
        fs::write(&path, b"").expect("write");
        let (snapshot, _) = VolumeSnapshot::capture("empty", &path, 1, 0).expect("capture");
        assert_eq!((snapshot.size, snapshot.chunks.len()), (0, 0));
        for name in ["", "../x", "a/b", ".hidden", &"x".repeat(65)] {
            assert!(VolumeSnapshot::capture(name, &path, 1, 0).is_err(), "{name:?} accepted");
        }
    }
}
