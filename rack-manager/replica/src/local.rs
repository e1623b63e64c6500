//! [`StoreRemote`]: a rack's own [`ChunkStore`] seen as a [`Remote`].
//!
//! Two uses: the server side of peer replication (a peer's HTTPS handlers call these methods, so
//! what one rack pushes is verified by the receiving rack before it is stored), and tests, where
//! one rack's store stands in for a peer.

use std::sync::{Arc, RwLock};

use images::{artifact::ImageId, keys::TrustedKeys};

use crate::{ChunkId, ChunkStore, Remote, RemoteError, VolumeSnapshot, meta};

/// A [`ChunkStore`] as a [`Remote`]: serves what the store holds and verifies what it is given.
#[derive(Debug)]
pub struct StoreRemote {
    name: String,
    store: Arc<ChunkStore>,
    trusted: RwLock<TrustedKeys>,
}

impl StoreRemote {
    /// The store `store`, accepting image metas signed by one of `trusted`.
    pub fn new(name: &str, store: Arc<ChunkStore>, trusted: TrustedKeys) -> StoreRemote {
        StoreRemote { name: name.to_owned(), store, trusted: RwLock::new(trusted) }
    }

    pub fn store(&self) -> &Arc<ChunkStore> {
        &self.store
    }

    /// Replaces the trusted keys (when the rack's trust set changes).
    pub fn set_trusted(&self, trusted: TrustedKeys) {
        *self.trusted.write().unwrap_or_else(|p| p.into_inner()) = trusted;
    }
}

/// Verifies `meta` as image `id` against `trusted`, mapping refusals to [`RemoteError`].
pub(crate) fn check_meta(
    id: &ImageId,
    meta: &[u8],
    trusted: &TrustedKeys,
) -> Result<images::artifact::VerifiedHeader, RemoteError> {
    use images::artifact::VerifyError;
    let header = meta::verify_meta(meta, trusted).map_err(|e| match e {
        VerifyError::UntrustedKey { .. } | VerifyError::BadSignature => {
            RemoteError::Untrusted(format!("image {id}: {e}"))
        }
        other => RemoteError::Corrupt(format!("the meta of image {id}: {other}")),
    })?;
    if header.id != *id {
        return Err(RemoteError::Corrupt(format!("the meta offered as image {id} is image {}", header.id)));
    }
    Ok(header)
}

impl Remote for StoreRemote {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn list_images(&self) -> Result<Vec<ImageId>, RemoteError> {
        Ok(self.store.image_ids()?)
    }

    fn get_image_meta(&self, id: &ImageId) -> Result<Vec<u8>, RemoteError> {
        Ok(self.store.image_meta(id)?)
    }

    fn put_image_meta(&self, id: &ImageId, meta: &[u8]) -> Result<(), RemoteError> {
        check_meta(id, meta, &self.trusted.read().unwrap_or_else(|p| p.into_inner()))?;
        Ok(self.store.put_image_meta(id, meta)?)
    }

    fn has_chunks(&self, ids: &[ChunkId]) -> Result<Vec<bool>, RemoteError> {
        Ok(self.store.has_many(ids))
    }

    fn get_chunk(&self, id: &ChunkId) -> Result<Vec<u8>, RemoteError> {
        Ok(self.store.get(id)?)
    }

    fn put_chunk(&self, id: &ChunkId, bytes: &[u8]) -> Result<(), RemoteError> {
        self.store.put(id, bytes)?;
        Ok(())
    }

    fn list_volumes(&self) -> Result<Vec<String>, RemoteError> {
        Ok(self.store.volumes()?)
    }

    fn list_volume_snapshots(&self, volume: &str) -> Result<Vec<u64>, RemoteError> {
        Ok(self.store.volume_snapshots(volume)?)
    }

    fn get_volume_snapshot(&self, volume: &str, seq: u64) -> Result<VolumeSnapshot, RemoteError> {
        Ok(self.store.volume_snapshot(volume, seq)?)
    }

    fn put_volume_snapshot(&self, snapshot: &VolumeSnapshot) -> Result<(), RemoteError> {
        // A snapshot that names chunks the store lacks could not be restored: refuse it.
        let missing = snapshot.chunks.iter().filter(|id| !self.store.has(id)).count();
        if missing > 0 {
            return Err(RemoteError::NotFound(format!(
                "{missing} chunk(s) of snapshot {} of volume {}: push the chunks first",
                snapshot.seq, snapshot.volume
            )));
        }
        Ok(self.store.put_volume_snapshot(snapshot)?)
    }
}
