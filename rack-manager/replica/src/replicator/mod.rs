//! [`Replicator`]: moves image metas, chunks and volume snapshots between a rack's
//! [`ChunkStore`] and its [`Remote`]s.
//!
//! Metas move eagerly ([`Replicator::pull_metas`]); chunks lazily ([`Replicator::ensure_local`] when
//! an image is about to boot, [`Replicator::trickle_tick`] in the background under a bandwidth cap).
//! Every chunk is checked against its hash before it is stored; a bad one is counted, dropped and
//! asked for again (from the next remote). A chunk that several threads need at once is fetched
//! by one of them while the others wait for it, so nothing is fetched twice.
//!
//! Layers, each owning its own state:
//! - `fetcher`: [`ChunkFetcher`](fetcher::ChunkFetcher) claims the chunks no other thread is
//!   fetching, waits for the others, and stores only chunks whose bytes match their hash;
//! - `image_replication`: image metas (verified against the trusted keys), completing an image, pushes
//!   (capped or not) and the background trickle with its token bucket;
//! - `volume_replication`: the volumes this rack owns, their snapshots to every remote and restores;
//! - this module: the [`Replicator`] façade the rack manager holds, and what every layer shares
//!   (the store, the remotes, the trusted keys, the counters).

mod fetcher;
mod image_replication;
mod volume_replication;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use images::{
    artifact::{ImageId, VerifiedHeader, VerifyError},
    keys::TrustedKeys,
};

use crate::{ChunkId, ChunkStore, Remote, RemoteError, StoreError, VolumeSnapshot, volume::VolumeError};

/// How many chunks one request to a remote asks for: large enough to keep a remote busy, small
/// enough that an interrupted transfer loses little and memory stays bounded.
const FETCH_BATCH: usize = 64;

/// A chunk to fetch, and its length.
type Wanted = (ChunkId, u64);

/// How a [`Replicator`] behaves.
#[derive(Debug, Clone)]
pub struct ReplicatorConfig {
    /// The background trickle's cap in bytes per second; `None` for no cap. Fetches an image
    /// needs now ([`Replicator::ensure_local`]) are not capped.
    pub trickle_rate: Option<u64>,
    /// How many times each remote is asked for a chunk before the fetch gives up.
    pub attempts: u32,
}

impl Default for ReplicatorConfig {
    fn default() -> Self {
        ReplicatorConfig { trickle_rate: Some(4 << 20), attempts: 3 }
    }
}

/// What a replicator has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub chunks_fetched: u64,
    pub bytes_fetched: u64,
    pub chunks_pushed: u64,
    pub bytes_pushed: u64,
    /// Chunks a remote sent whose bytes did not match their hash (dropped and fetched again).
    pub corrupt_chunks: u64,
    /// Image metas refused because no trusted key signed them.
    pub refused_images: u64,
}

#[derive(Debug, Default)]
struct Counters {
    chunks_fetched: AtomicU64,
    bytes_fetched: AtomicU64,
    chunks_pushed: AtomicU64,
    bytes_pushed: AtomicU64,
    corrupt_chunks: AtomicU64,
    refused_images: AtomicU64,
}

/// How much of an image is here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageState {
    pub id: ImageId,
    pub name: String,
    pub version: String,
    /// Bytes of distinct chunk data the image has.
    pub total_bytes: u64,
    /// Of those, bytes stored here.
    pub local_bytes: u64,
    pub total_chunks: usize,
    pub missing_chunks: usize,
}

impl ImageState {
    pub fn is_complete(&self) -> bool {
        self.missing_chunks == 0
    }
}

/// Why an image or volume could not be replicated.
#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    #[error("image {0} is known to no remote and not stored here")]
    UnknownImage(ImageId),
    #[error("{0}")]
    Refused(String),
    #[error("{missing} chunk(s) of {what} could not be fetched from any remote ({remotes}); last error: {last}")]
    Incomplete { what: String, missing: usize, remotes: usize, last: String },
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: String, source: std::io::Error },
}

/// What pulling metas found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullReport {
    /// Images whose metas are new here.
    pub new: Vec<ImageId>,
    /// Images refused (untrusted signer, bad signature or a corrupt meta), with why.
    pub refused: Vec<(ImageId, String)>,
    /// Remotes that could not be listed, with why.
    pub unreachable: Vec<(String, String)>,
}

/// What a push or fetch moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfer {
    pub chunks: u64,
    pub bytes: u64,
}

/// What a volume snapshot did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePush {
    pub snapshot: VolumeSnapshot,
    /// Chunks that differ from the previous snapshot.
    pub changed_chunks: usize,
    /// What was sent to each remote (chunks a remote already held are not sent).
    pub sent: Transfer,
}

/// What every layer of the replicator shares: the store, where to replicate, whom to trust.
#[derive(Debug)]
struct Links {
    store: Arc<ChunkStore>,
    trusted: RwLock<TrustedKeys>,
    remotes: RwLock<Vec<Arc<dyn Remote>>>,
    config: ReplicatorConfig,
    counters: Counters,
}

impl Links {
    fn remotes(&self) -> Vec<Arc<dyn Remote>> {
        self.remotes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn trusted(&self) -> TrustedKeys {
        self.trusted.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Pushes the chunks of `ids` that `remote` lacks (asked in batches), calling `pace` with each
    /// chunk's size before it is sent (the capped pushes sleep there).
    fn push_chunks(
        &self,
        remote: &dyn Remote,
        ids: Vec<ChunkId>,
        pace: impl Fn(u64),
        read: impl Fn(&ChunkId) -> Result<Vec<u8>, StoreError>,
    ) -> Result<Transfer, ReplicateError> {
        let mut sent = Transfer::default();
        for batch in ids.chunks(FETCH_BATCH * 4) {
            let held = remote.has_chunks(batch)?;
            for (id, _) in batch.iter().zip(held).filter(|(_, held)| !held) {
                let bytes = read(id)?;
                pace(bytes.len() as u64);
                remote.put_chunk(id, &bytes)?;
                sent.chunks += 1;
                sent.bytes += bytes.len() as u64;
                self.counters.chunks_pushed.fetch_add(1, Ordering::Relaxed);
                self.counters.bytes_pushed.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
        }
        Ok(sent)
    }
}

/// Moves images and volumes between a [`ChunkStore`] and its [`Remote`]s. Shared between
/// threads behind an `Arc`.
#[derive(Debug)]
pub struct Replicator {
    links: Arc<Links>,
    images: image_replication::ImageReplication,
    volumes: volume_replication::VolumeReplication,
}

impl Replicator {
    /// A replicator over `store` that accepts images signed by `trusted`, with no remotes yet.
    pub fn new(store: Arc<ChunkStore>, trusted: TrustedKeys, config: ReplicatorConfig) -> Replicator {
        let links = Arc::new(Links {
            store,
            trusted: RwLock::new(trusted),
            remotes: RwLock::new(Vec::new()),
            config,
            counters: Counters::default(),
        });
        let fetcher = Arc::new(fetcher::ChunkFetcher::new(links.clone()));
        Replicator {
            images: image_replication::ImageReplication::new(links.clone(), fetcher.clone(), Instant::now()),
            volumes: volume_replication::VolumeReplication::new(links.clone(), fetcher),
            links,
        }
    }

    /// The store this replicator fills and serves from.
    pub fn store(&self) -> &Arc<ChunkStore> {
        &self.links.store
    }

    /// How this replicator behaves.
    pub fn config(&self) -> &ReplicatorConfig {
        &self.links.config
    }

    /// Adds a remote to fetch from and push to. Remotes are asked in the order they were added.
    pub fn add_remote(&self, remote: Arc<dyn Remote>) {
        self.links.remotes.write().unwrap_or_else(|p| p.into_inner()).push(remote);
    }

    /// Removes the remotes called `name`; returns how many there were.
    pub fn remove_remote(&self, name: &str) -> usize {
        let mut remotes = self.links.remotes.write().unwrap_or_else(|p| p.into_inner());
        let before = remotes.len();
        remotes.retain(|r| r.name() != name);
        before - remotes.len()
    }

    /// The remotes, in the order they are asked.
    pub fn remotes(&self) -> Vec<Arc<dyn Remote>> {
        self.links.remotes()
    }

    /// Replaces the keys whose images this rack accepts.
    pub fn set_trusted(&self, trusted: TrustedKeys) {
        *self.links.trusted.write().unwrap_or_else(|p| p.into_inner()) = trusted;
    }

    /// The keys whose images this rack accepts.
    pub fn trusted(&self) -> TrustedKeys {
        self.links.trusted()
    }

    /// What this replicator has moved since it started.
    pub fn stats(&self) -> Stats {
        let c = &self.links.counters;
        Stats {
            chunks_fetched: c.chunks_fetched.load(Ordering::Relaxed),
            bytes_fetched: c.bytes_fetched.load(Ordering::Relaxed),
            chunks_pushed: c.chunks_pushed.load(Ordering::Relaxed),
            bytes_pushed: c.bytes_pushed.load(Ordering::Relaxed),
            corrupt_chunks: c.corrupt_chunks.load(Ordering::Relaxed),
            refused_images: c.refused_images.load(Ordering::Relaxed),
        }
    }

    // ---- images ----

    /// Verifies a whole `.mast` file and stores its meta and chunks (an image pushed to this rack).
    pub fn import_image(&self, bytes: &[u8]) -> Result<VerifiedHeader, VerifyError> {
        self.images.import(bytes)
    }

    /// The verified header of a locally stored image meta.
    pub fn local_header(&self, id: &ImageId) -> Result<VerifiedHeader, ReplicateError> {
        self.images.local_header(id)
    }

    /// Verifies `meta` as image `id` and stores it. A meta not signed by a trusted key is
    /// refused and not stored.
    pub fn accept_meta(&self, id: &ImageId, meta: &[u8]) -> Result<VerifiedHeader, RemoteError> {
        self.images.accept_meta(id, meta)
    }

    /// Fetches the metas of every image a remote holds that this rack lacks (the eager half of
    /// replication). Refused metas are reported and not stored.
    pub fn pull_metas(&self) -> PullReport {
        self.images.pull_metas_from(&self.links.remotes())
    }

    /// [`Replicator::pull_metas`] from `remotes` only (a caller that pulls from some remotes on
    /// its own schedule).
    pub fn pull_metas_from(&self, remotes: &[Arc<dyn Remote>]) -> PullReport {
        self.images.pull_metas_from(remotes)
    }

    /// This rack's verified meta of image `id`, fetched from the first remote that has a good
    /// one if it is not stored here.
    pub fn image_header(&self, id: &ImageId) -> Result<VerifiedHeader, ReplicateError> {
        self.images.header(id)
    }

    /// How much of image `id` is stored here.
    pub fn image_state(&self, id: &ImageId) -> Result<ImageState, ReplicateError> {
        self.images.state(id)
    }

    /// Every image whose meta is stored here, with how much of it is local.
    pub fn images(&self) -> Result<Vec<ImageState>, ReplicateError> {
        self.images.all()
    }

    /// Makes image `id` complete here: fetches its meta if needed, then every chunk it lacks
    /// (verified), from the remotes in order. Returns what it fetched.
    pub fn ensure_local(&self, id: &ImageId) -> Result<Transfer, ReplicateError> {
        self.images.ensure_local(id)
    }

    /// The whole `.mast` file of image `id`, made complete first. The caller verifies it again
    /// before booting it (`images::artifact::verify`), like any image file.
    pub fn assemble(&self, id: &ImageId) -> Result<Vec<u8>, ReplicateError> {
        self.images.assemble(id)
    }

    /// Pushes image `id` to `remote`: the chunks it lacks (asked in one batch), then the meta,
    /// so a remote that lists an image can always serve all of it.
    pub fn push_image(&self, id: &ImageId, remote: &dyn Remote) -> Result<Transfer, ReplicateError> {
        self.images.push(id, remote, false)
    }

    /// [`push_image`](Self::push_image) in the background: under the bandwidth cap (shared with
    /// the trickle), sleeping until the cap allows each chunk.
    pub fn push_image_capped(&self, id: &ImageId, remote: &dyn Remote) -> Result<Transfer, ReplicateError> {
        self.images.push(id, remote, true)
    }

    /// Pushes image `id`'s meta alone: the remote learns of the image and fetches chunks lazily.
    pub fn push_meta(&self, id: &ImageId, remote: &dyn Remote) -> Result<(), ReplicateError> {
        self.images.push_meta(id, remote)
    }

    /// One step of the background trickle: fetches missing chunks of known images while the
    /// bandwidth cap allows, and stops at the first chunk the cap's budget cannot cover. `now`
    /// is passed in so tests can drive the cap with their own clock.
    pub fn trickle_tick(&self, now: Instant) -> Result<Transfer, ReplicateError> {
        self.images.trickle_tick(now)
    }

    // ---- volumes ----

    /// Registers a volume this rack owns: `snapshot_all_volumes` (which the rack manager calls
    /// periodically) snapshots it to every remote.
    pub fn register_volume(&self, name: &str, path: &Path) -> Result<(), ReplicateError> {
        self.volumes.register(name, path)
    }

    /// The registered volumes: name and file.
    pub fn registered_volumes(&self) -> Vec<(String, PathBuf)> {
        self.volumes.registered()
    }

    /// Snapshots every registered volume; returns the ones that failed, with why.
    pub fn snapshot_all_volumes(&self) -> Vec<(String, ReplicateError)> {
        self.volumes.snapshot_all()
    }

    /// Why the last background snapshot of `volume` failed, if it did.
    pub fn volume_error(&self, volume: &str) -> Option<String> {
        self.volumes.error(volume)
    }

    /// The newest snapshot of `volume` that every remote accepted.
    pub fn last_snapshot(&self, volume: &str) -> Result<Option<VolumeSnapshot>, ReplicateError> {
        self.volumes.last_snapshot(volume)
    }

    /// Takes a snapshot of the volume file at `path` and pushes it to every remote: only chunks
    /// that changed since the last snapshot, and of those only the ones a remote lacks. The
    /// snapshot is recorded here once every remote has it.
    pub fn snapshot_volume(&self, volume: &str, path: &Path, now_ms: u64) -> Result<VolumePush, ReplicateError> {
        self.volumes.snapshot(volume, path, now_ms)
    }

    /// Bytes of the volume file at `path` that changed since the last snapshot every remote has.
    pub fn volume_bytes_behind(&self, volume: &str, path: &Path) -> Result<u64, ReplicateError> {
        self.volumes.bytes_behind(volume, path)
    }

    /// Restores `volume` from `remote` into the file at `path`: the snapshot `seq`, or the newest.
    /// Chunks the file already has at the same place are kept; only the others are fetched, each
    /// verified. The file is rebuilt aside and renamed into place, so an interrupted restore
    /// leaves the old file.
    pub fn restore_volume(
        &self,
        remote: &dyn Remote,
        volume: &str,
        seq: Option<u64>,
        path: &Path,
    ) -> Result<(VolumeSnapshot, Transfer), ReplicateError> {
        self.volumes.restore(remote, volume, seq, path)
    }
}
