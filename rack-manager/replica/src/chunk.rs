//! The name of a chunk: the BLAKE3 hash of its bytes.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A chunk's BLAKE3 hash. Image chunks (content-defined, 1-16 KiB) and volume chunks (fixed
/// 64 KiB) share one namespace: equal bytes are one chunk, stored and moved once.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> ChunkId {
        ChunkId(*blake3::hash(bytes).as_bytes())
    }

    /// Whether `bytes` are this chunk's bytes.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        // blake3::Hash compares in constant time; speed is all that matters here, but it is free.
        blake3::hash(bytes) == blake3::Hash::from(self.0)
    }

    /// Lowercase hex, 64 digits: the chunk's file and object name.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first two hex digits: chunks are sharded into 256 directories (or key prefixes) by them.
    pub fn shard(&self) -> String {
        hex::encode(&self.0[..1])
    }
}

impl From<images::artifact::ChunkRef> for ChunkId {
    fn from(chunk: images::artifact::ChunkRef) -> ChunkId {
        ChunkId(chunk.hash)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.hex()[..12])
    }
}

/// Text that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a chunk id (64 hex digits)")]
pub struct BadChunkId(pub String);

impl FromStr for ChunkId {
    type Err = BadChunkId;

    fn from_str(s: &str) -> Result<ChunkId, BadChunkId> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| BadChunkId(s.to_owned()))?;
        Ok(ChunkId(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_bytes_and_round_trip_through_hex() {
        let id = ChunkId::of(b"chunk");
        assert!(id.matches(b"chunk") && !id.matches(b"chunK"));
        assert_eq!(id.hex().parse::<ChunkId>(), Ok(id));
        assert_eq!(id.shard(), id.hex()[..2]);
        assert!("xyz".parse::<ChunkId>().is_err());
    }
}
