//! Where images and volumes replicate to and from: a peer rack or the cloud.
//!
//! A [`Remote`] is a dumb, content-addressed store seen from one rack: it holds image metas
//! (manifest, index and signature: the `.mast` file without its chunk data), chunks by BLAKE3 id,
//! and volume snapshots. It checks nothing it is given and promises nothing about what it returns:
//! the [`Replicator`](crate::Replicator) verifies every meta's signature against the rack's
//! trusted keys and every chunk's hash before storing or using it. A remote that *receives*
//! pushes on behalf of a rack (a peer's server side) should hand them to
//! [`StoreRemote`](crate::StoreRemote), which does verify, so a peer never accepts an image whose
//! signature is not from a key it trusts.
//!
//! Every method blocks: the rack manager runs on threads, and a remote that speaks an async
//! protocol owns its runtime (see [`S3Remote`](crate::S3Remote)). Methods may be called from many
//! threads at once.

use std::fmt;

use images::artifact::ImageId;

use crate::{ChunkId, VolumeSnapshot};

/// A peer rack or the cloud, as a store of image metas, chunks and volume snapshots.
///
/// Image metas and chunks are content addressed and never change once written: writing the same
/// id twice must succeed and leave one copy. Volume snapshots are per volume name and sequence
/// number, and also immutable once written.
pub trait Remote: Send + Sync + fmt::Debug {
    /// A short name for messages and `replicate status`: `s3://bucket/racks/a`, `peer rack-b`.
    fn name(&self) -> String;

    /// The ids of every image whose meta the remote holds (its chunks may be missing).
    fn list_images(&self) -> Result<Vec<ImageId>, RemoteError>;

    /// The meta of image `id`: the `.mast` file's bytes up to its first chunk (preamble and
    /// header). [`RemoteError::NotFound`] when the remote has no such image.
    fn get_image_meta(&self, id: &ImageId) -> Result<Vec<u8>, RemoteError>;

    /// Stores the meta of image `id`. A receiving rack refuses (with
    /// [`RemoteError::Untrusted`]) a meta not signed by a key it trusts, and stores nothing.
    fn put_image_meta(&self, id: &ImageId, meta: &[u8]) -> Result<(), RemoteError>;

    /// For each id in `ids`, in order, whether the remote holds that chunk. One call for many
    /// chunks: remotes answer it in one round trip (or a few), not one per chunk.
    fn has_chunks(&self, ids: &[ChunkId]) -> Result<Vec<bool>, RemoteError>;

    /// The bytes of chunk `id`. [`RemoteError::NotFound`] when the remote does not hold it. The
    /// bytes are *not* trusted: the caller checks them against `id`.
    fn get_chunk(&self, id: &ChunkId) -> Result<Vec<u8>, RemoteError>;

    /// Stores chunk `id`. A receiving rack refuses (with [`RemoteError::Corrupt`]) bytes whose
    /// hash is not `id`.
    fn put_chunk(&self, id: &ChunkId, bytes: &[u8]) -> Result<(), RemoteError>;

    /// The names of the volumes the remote holds snapshots of.
    fn list_volumes(&self) -> Result<Vec<String>, RemoteError>;

    /// The sequence numbers of volume `volume`'s snapshots, ascending (empty when none).
    fn list_volume_snapshots(&self, volume: &str) -> Result<Vec<u64>, RemoteError>;

    /// Snapshot `seq` of volume `volume`. [`RemoteError::NotFound`] when there is none.
    fn get_volume_snapshot(&self, volume: &str, seq: u64) -> Result<VolumeSnapshot, RemoteError>;

    /// Stores a volume snapshot. Its chunks are pushed first, so a snapshot a remote lists is
    /// always restorable from it.
    fn put_volume_snapshot(&self, snapshot: &VolumeSnapshot) -> Result<(), RemoteError>;

    /// Whether this remote takes pushes (image and volume snapshots). A peer rack does not:
    /// racks pull from each other, so volume snapshots skip it.
    fn accepts_pushes(&self) -> bool {
        true
    }

    /// The bytes of several chunks, one result per id, in order. The default asks for each in
    /// turn; a remote with a batch call overrides it.
    fn get_chunks(&self, ids: &[ChunkId]) -> Vec<Result<Vec<u8>, RemoteError>> {
        ids.iter().map(|id| self.get_chunk(id)).collect()
    }
}

/// Why a remote call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    /// The remote does not hold what was asked for.
    #[error("not found: {0}")]
    NotFound(String),
    /// The remote refused our credentials (S3 keys, peer certificate).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// An image meta was refused: not signed by a trusted key, or the signature does not match.
    #[error("untrusted image: {0}")]
    Untrusted(String),
    /// Bytes do not match their hash, or a meta or snapshot does not decode.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// The remote could not be reached or the transfer broke off; worth retrying later.
    #[error("transport: {0}")]
    Transport(String),
    /// Local storage failed (disk full, permissions) while handling the call.
    #[error("storage: {0}")]
    Storage(String),
}

impl RemoteError {
    /// Whether trying again (later, or at another remote) may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, RemoteError::Transport(_) | RemoteError::Corrupt(_) | RemoteError::NotFound(_))
    }
}
