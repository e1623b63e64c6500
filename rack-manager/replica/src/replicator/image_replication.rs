//! Image replication on top of the chunk fetcher: metas (verified against the trusted keys),
//! completing an image before it boots, pushes, and the background trickle under a bandwidth cap.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use images::artifact::{ImageId, VerifiedHeader, VerifyError};

use super::{ImageState, Links, PullReport, ReplicateError, Transfer, Wanted, fetcher::ChunkFetcher};
use crate::{ChunkId, Remote, RemoteError, StoreError, TokenBucket, local::check_meta, meta};

/// Chunk fetches that may fail in one trickle tick before it gives up until the next.
const MAX_TRICKLE_FAILURES: usize = 8;

/// Chunks of an image a verified header lists, with lengths, in stored order.
fn chunk_list(header: &VerifiedHeader) -> Vec<Wanted> {
    meta::chunks_of(header)
}

/// The image half of a replicator: its own state is the bandwidth cap that the trickle and the
/// capped pushes share.
#[derive(Debug)]
pub(super) struct ImageReplication {
    links: Arc<Links>,
    fetcher: Arc<ChunkFetcher>,
    bucket: Mutex<TokenBucket>,
}

impl ImageReplication {
    pub(super) fn new(links: Arc<Links>, fetcher: Arc<ChunkFetcher>, now: Instant) -> ImageReplication {
        let bucket = match links.config.trickle_rate {
            // Room for at least the largest image chunk, or it could never fit.
            Some(rate) => TokenBucket::new(rate, rate.max(u64::from(images::artifact::CHUNK_MAX)), now),
            None => TokenBucket::unlimited(now),
        };
        ImageReplication { links, fetcher, bucket: Mutex::new(bucket) }
    }

    pub(super) fn import(&self, bytes: &[u8]) -> Result<VerifiedHeader, VerifyError> {
        let store = &self.links.store;
        let split = meta::split(bytes, &self.links.trusted())?;
        for (id, chunk) in &split.chunks {
            // Verified by `split`; a store failure here is the disk's, reported as such.
            store.put(id, chunk).map_err(|e| VerifyError::BadIndex(format!("storing chunk {id}: {e}")))?;
        }
        store
            .put_image_meta(&split.header.id, split.meta)
            .map_err(|e| VerifyError::BadIndex(format!("storing the image meta: {e}")))?;
        Ok(split.header)
    }

    pub(super) fn local_header(&self, id: &ImageId) -> Result<VerifiedHeader, ReplicateError> {
        let bytes = self.links.store.image_meta(id)?;
        check_meta(id, &bytes, &self.links.trusted()).map_err(|e| ReplicateError::Refused(e.to_string()))
    }

    pub(super) fn accept_meta(&self, id: &ImageId, meta: &[u8]) -> Result<VerifiedHeader, RemoteError> {
        let header = match check_meta(id, meta, &self.links.trusted()) {
            Ok(header) => header,
            Err(e) => {
                if matches!(e, RemoteError::Untrusted(_)) {
                    self.links.counters.refused_images.fetch_add(1, Ordering::Relaxed);
                }
                return Err(e);
            }
        };
        self.links.store.put_image_meta(id, meta)?;
        Ok(header)
    }

    pub(super) fn pull_metas_from(&self, remotes: &[Arc<dyn Remote>]) -> PullReport {
        let mut report = PullReport::default();
        let mut seen: HashSet<ImageId> = HashSet::new();
        for remote in remotes {
            let ids = match remote.list_images() {
                Ok(ids) => ids,
                Err(e) => {
                    report.unreachable.push((remote.name(), e.to_string()));
                    continue;
                }
            };
            for id in ids {
                if self.links.store.has_image_meta(&id) || !seen.insert(id) {
                    continue;
                }
                let result = remote.get_image_meta(&id).and_then(|m| self.accept_meta(&id, &m));
                match result {
                    Ok(_) => report.new.push(id),
                    Err(e) => {
                        seen.remove(&id); // another remote may hold a good copy
                        report.refused.push((id, format!("from {}: {e}", remote.name())));
                    }
                }
            }
        }
        report
    }

    pub(super) fn header(&self, id: &ImageId) -> Result<VerifiedHeader, ReplicateError> {
        if self.links.store.has_image_meta(id) {
            return self.local_header(id);
        }
        let mut last = None;
        for remote in self.links.remotes() {
            match remote.get_image_meta(id).and_then(|m| self.accept_meta(id, &m)) {
                Ok(header) => return Ok(header),
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(RemoteError::NotFound(_)) | None => Err(ReplicateError::UnknownImage(*id)),
            Some(e) => Err(ReplicateError::Refused(format!("image {id}: {e}"))),
        }
    }

    pub(super) fn state(&self, id: &ImageId) -> Result<ImageState, ReplicateError> {
        let header = self.local_header(id)?;
        Ok(self.state_of(&header))
    }

    fn state_of(&self, header: &VerifiedHeader) -> ImageState {
        let chunks = chunk_list(header);
        let ids: Vec<ChunkId> = chunks.iter().map(|(id, _)| *id).collect();
        let have = self.links.store.has_many(&ids);
        let total_bytes = chunks.iter().map(|(_, len)| len).sum();
        let local_bytes = chunks.iter().zip(&have).filter(|(_, h)| **h).map(|((_, len), _)| len).sum();
        ImageState {
            id: header.id,
            name: header.body.manifest.name.clone(),
            version: header.body.manifest.version.clone(),
            total_bytes,
            local_bytes,
            total_chunks: chunks.len(),
            missing_chunks: have.iter().filter(|h| !**h).count(),
        }
    }

    pub(super) fn all(&self) -> Result<Vec<ImageState>, ReplicateError> {
        let mut states = Vec::new();
        for id in self.links.store.image_ids()? {
            if let Ok(header) = self.local_header(&id) {
                states.push(self.state_of(&header));
            }
        }
        Ok(states)
    }

    pub(super) fn ensure_local(&self, id: &ImageId) -> Result<Transfer, ReplicateError> {
        let header = self.header(id)?;
        let missing: Vec<Wanted> = chunk_list(&header).into_iter().filter(|(c, _)| !self.links.store.has(c)).collect();
        self.fetcher.fetch(&missing, &format!("image {}", id.short()))
    }

    pub(super) fn assemble(&self, id: &ImageId) -> Result<Vec<u8>, ReplicateError> {
        let store = &self.links.store;
        self.ensure_local(id)?;
        let meta_bytes = store.image_meta(id)?;
        let header = self.local_header(id)?;
        let mut chunks = Vec::new();
        for (chunk, len) in chunk_list(&header) {
            chunks.push(match store.get(&chunk) {
                Ok(bytes) => bytes,
                // Damaged on disk since it was fetched: the store dropped it; fetch it again.
                Err(StoreError::Corrupt(_) | StoreError::NotFound(_)) => {
                    self.fetcher.fetch(&[(chunk, len)], &format!("image {}", id.short()))?;
                    store.get(&chunk)?
                }
                Err(e) => return Err(e.into()),
            });
        }
        Ok(meta::assemble(&meta_bytes, chunks.iter().map(Vec::as_slice)))
    }

    /// Pushes image `id` to `remote`, under the bandwidth cap when `capped`.
    pub(super) fn push(&self, id: &ImageId, remote: &dyn Remote, capped: bool) -> Result<Transfer, ReplicateError> {
        let store = &self.links.store;
        let header = self.local_header(id)?;
        let chunks = chunk_list(&header);
        let ids = chunks.iter().map(|(c, _)| *c).collect();
        let pace = |bytes| {
            if capped {
                self.wait_for_budget(bytes);
            }
        };
        let sent = self.links.push_chunks(remote, ids, pace, |c| store.get(c))?;
        remote.put_image_meta(id, &store.image_meta(id)?)?;
        Ok(sent)
    }

    /// Waits until the bandwidth cap allows `bytes` more.
    fn wait_for_budget(&self, bytes: u64) {
        loop {
            let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if bucket.try_take(bytes, now) {
                return;
            }
            let Some(rate) = bucket.rate() else { return };
            let short = bytes.saturating_sub(bucket.available(now));
            drop(bucket);
            // Sleep about as long as the missing bytes take to earn, in short steps so that the
            // trickle on other threads gets its share too.
            let wait = Duration::from_secs_f64(short as f64 / rate.max(1) as f64);
            std::thread::sleep(wait.clamp(Duration::from_millis(1), Duration::from_millis(100)));
        }
    }

    pub(super) fn push_meta(&self, id: &ImageId, remote: &dyn Remote) -> Result<(), ReplicateError> {
        self.local_header(id)?;
        remote.put_image_meta(id, &self.links.store.image_meta(id)?)?;
        Ok(())
    }

    pub(super) fn trickle_tick(&self, now: Instant) -> Result<Transfer, ReplicateError> {
        let mut total = Transfer::default();
        let (mut failed, mut failures) = (None, 0);
        'images: for state in self.all()? {
            if state.is_complete() {
                continue;
            }
            let header = self.local_header(&state.id)?;
            for (chunk, len) in chunk_list(&header) {
                if self.links.store.has(&chunk) {
                    continue;
                }
                if !self.bucket.lock().unwrap_or_else(|p| p.into_inner()).try_take(len, now) {
                    return Ok(total);
                }
                match self.fetcher.fetch(&[(chunk, len)], &format!("image {}", state.id.short())) {
                    Ok(got) => {
                        total.chunks += got.chunks;
                        total.bytes += got.bytes;
                    }
                    // A chunk no remote can give must not hold up the others; many failures in
                    // one tick mean the remotes are unreachable, and the next tick tries again.
                    Err(e) => {
                        failed = Some(e);
                        failures += 1;
                        if failures >= MAX_TRICKLE_FAILURES {
                            break 'images;
                        }
                    }
                }
            }
        }
        match failed {
            Some(e) if total.chunks == 0 => Err(e),
            _ => Ok(total),
        }
    }
}
