//! Replication of images and volumes between racks and the cloud.
//!
//! Each rack keeps a content-addressed [`ChunkStore`]: image metas (the signed head of a `.mast`
//! file: manifest, chunk index, signature), chunks named by their BLAKE3 hash, and volume
//! snapshots. A peer rack or the cloud is a [`Remote`]. The [`Replicator`] moves things between
//! the store and its remotes:
//!
//! - **Metas eagerly.** They are small; a rack learns every image its remotes hold. A meta not
//!   signed by a key the rack trusts is refused and never stored.
//! - **Chunks lazily.** [`Replicator::ensure_local`] fetches the chunks an image still lacks when
//!   it is about to boot, each verified against its hash before it is stored, and each fetched at
//!   most once however many threads ask. The rest trickle in the background under a bandwidth
//!   cap ([`TokenBucket`]).
//! - **Volumes by changed chunks.** A [`VolumeSnapshot`] lists a volume's fixed-size chunks; a new
//!   snapshot pushes only the chunks that changed, and `replicate status` reports the lag.
//!
//! Remotes: [`S3Remote`] (any S3-compatible object store, through the `object_store` crate),
//! [`StoreRemote`] (a rack's own store, for the serving side of peer replication), and the peer
//! rack's HTTPS client, which lives in the rack manager. See `API.md` for the contract a remote
//! implements and `docs/replication.md` for how it is used.

mod bucket;
mod chunk;
mod local;
pub mod meta;
pub mod moto;
mod remote;
mod replicator;
mod s3;
mod store;
pub mod volume;

pub use bucket::TokenBucket;
pub use chunk::{BadChunkId, ChunkId};
pub use local::StoreRemote;
pub use remote::{Remote, RemoteError};
pub use replicator::{ImageState, Replicator, ReplicatorConfig, Stats};
pub use replicator::{PullReport, ReplicateError, Transfer, VolumePush};
pub use s3::{S3Config, S3Remote};
pub use store::{ChunkStore, StoreError};
pub use volume::{VOLUME_CHUNK, VolumeSnapshot};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
