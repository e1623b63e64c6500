//! [`Replicator`]: moves image metas, chunks and volume snapshots between a rack's
//! [`ChunkStore`] and its [`Remote`]s.
//!
//! Metas move eagerly ([`Replicator::pull_metas`]); chunks lazily ([`Replicator::ensure_local`] when
//! an image is about to boot, [`Replicator::trickle_tick`] in the background under a bandwidth cap).
//! Every chunk is checked against its hash before it is stored; a bad one is counted, dropped and
//! asked for again (from the next remote). A chunk that several threads need at once is fetched
//! by one of them while the others wait for it, so nothing is fetched twice.

use std::{
    collections::{HashMap, HashSet},
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use images::{
    artifact::{ImageId, VerifiedHeader, VerifyError},
    keys::TrustedKeys,
};

use crate::{
    ChunkId, ChunkStore, Remote, RemoteError, StoreError, TokenBucket, VolumeSnapshot, local::check_meta, meta,
    volume::VolumeError,
};

/// How many chunks one request to a remote asks for: large enough to keep a remote busy, small
/// enough that an interrupted transfer loses little and memory stays bounded.
const FETCH_BATCH: usize = 64;

/// Chunk fetches that may fail in one trickle tick before it gives up until the next.
const MAX_TRICKLE_FAILURES: usize = 8;

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

/// A volume this rack owns and snapshots to its remotes.
#[derive(Debug, Clone)]
struct LocalVolume {
    path: PathBuf,
}

/// Moves images and volumes between a [`ChunkStore`] and its [`Remote`]s. Shared between
/// threads behind an `Arc`.
#[derive(Debug)]
pub struct Replicator {
    store: Arc<ChunkStore>,
    trusted: RwLock<TrustedKeys>,
    remotes: RwLock<Vec<Arc<dyn Remote>>>,
    config: ReplicatorConfig,
    /// Chunks being fetched right now, and a condition their waiters sleep on.
    in_flight: Mutex<HashSet<ChunkId>>,
    fetched: Condvar,
    bucket: Mutex<TokenBucket>,
    counters: Counters,
    volumes: Mutex<HashMap<String, LocalVolume>>,
    /// Why the last snapshot of each volume failed, until one succeeds.
    volume_errors: Mutex<HashMap<String, String>>,
}

/// Chunks of an image a verified header lists, with lengths, in stored order.
fn chunk_list(header: &VerifiedHeader) -> Vec<(ChunkId, u64)> {
    meta::chunks_of(header)
}

impl Replicator {
    pub fn new(store: Arc<ChunkStore>, trusted: TrustedKeys, config: ReplicatorConfig) -> Replicator {
        let now = Instant::now();
        let bucket = match config.trickle_rate {
            // Room for at least the largest image chunk, or it could never fit.
            Some(rate) => TokenBucket::new(rate, rate.max(u64::from(images::artifact::CHUNK_MAX)), now),
            None => TokenBucket::unlimited(now),
        };
        Replicator {
            store,
            trusted: RwLock::new(trusted),
            remotes: RwLock::new(Vec::new()),
            config,
            in_flight: Mutex::new(HashSet::new()),
            fetched: Condvar::new(),
            bucket: Mutex::new(bucket),
            counters: Counters::default(),
            volumes: Mutex::new(HashMap::new()),
            volume_errors: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Arc<ChunkStore> {
        &self.store
    }

    pub fn config(&self) -> &ReplicatorConfig {
        &self.config
    }

    /// Adds a remote to fetch from and push to. Remotes are asked in the order they were added.
    pub fn add_remote(&self, remote: Arc<dyn Remote>) {
        self.remotes.write().unwrap_or_else(|p| p.into_inner()).push(remote);
    }

    /// Removes the remotes called `name`; returns how many there were.
    pub fn remove_remote(&self, name: &str) -> usize {
        let mut remotes = self.remotes.write().unwrap_or_else(|p| p.into_inner());
        let before = remotes.len();
        remotes.retain(|r| r.name() != name);
        before - remotes.len()
    }

    pub fn remotes(&self) -> Vec<Arc<dyn Remote>> {
        self.remotes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the keys whose images this rack accepts.
    pub fn set_trusted(&self, trusted: TrustedKeys) {
        *self.trusted.write().unwrap_or_else(|p| p.into_inner()) = trusted;
    }

    pub fn trusted(&self) -> TrustedKeys {
        self.trusted.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
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
        let split = meta::split(bytes, &self.trusted())?;
        for (id, chunk) in &split.chunks {
            // Verified by `split`; a store failure here is the disk's, reported as such.
            self.store.put(id, chunk).map_err(|e| VerifyError::BadIndex(format!("storing chunk {id}: {e}")))?;
        }
        self.store
            .put_image_meta(&split.header.id, split.meta)
            .map_err(|e| VerifyError::BadIndex(format!("storing the image meta: {e}")))?;
        Ok(split.header)
    }

    /// The verified header of a locally stored image meta.
    pub fn local_header(&self, id: &ImageId) -> Result<VerifiedHeader, ReplicateError> {
        let bytes = self.store.image_meta(id)?;
        check_meta(id, &bytes, &self.trusted()).map_err(|e| ReplicateError::Refused(e.to_string()))
    }

    /// Verifies `meta` as image `id` and stores it. A meta not signed by a trusted key is
    /// refused and not stored.
    pub fn accept_meta(&self, id: &ImageId, meta: &[u8]) -> Result<VerifiedHeader, RemoteError> {
        let header = match check_meta(id, meta, &self.trusted()) {
            Ok(header) => header,
            Err(e) => {
                if matches!(e, RemoteError::Untrusted(_)) {
                    self.counters.refused_images.fetch_add(1, Ordering::Relaxed);
                }
                return Err(e);
            }
        };
        self.store.put_image_meta(id, meta)?;
        Ok(header)
    }

    /// Fetches the metas of every image a remote holds that this rack lacks (the eager half of
    /// replication). Refused metas are reported and not stored.
    pub fn pull_metas(&self) -> PullReport {
        self.pull_metas_from(&self.remotes())
    }

    /// [`Replicator::pull_metas`] from `remotes` only (a caller that pulls from some remotes on
    /// its own schedule).
    pub fn pull_metas_from(&self, remotes: &[Arc<dyn Remote>]) -> PullReport {
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
                if self.store.has_image_meta(&id) || !seen.insert(id) {
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

    /// This rack's verified meta of image `id`, fetched from the first remote that has a good
    /// one if it is not stored here.
    pub fn image_header(&self, id: &ImageId) -> Result<VerifiedHeader, ReplicateError> {
        if self.store.has_image_meta(id) {
            return self.local_header(id);
        }
        let mut last = None;
        for remote in self.remotes() {
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

    /// How much of image `id` is stored here.
    pub fn image_state(&self, id: &ImageId) -> Result<ImageState, ReplicateError> {
        let header = self.local_header(id)?;
        Ok(self.state_of(&header))
    }

    fn state_of(&self, header: &VerifiedHeader) -> ImageState {
        let chunks = chunk_list(header);
        let ids: Vec<ChunkId> = chunks.iter().map(|(id, _)| *id).collect();
        let have = self.store.has_many(&ids);
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

    /// Every image whose meta is stored here, with how much of it is local.
    pub fn images(&self) -> Result<Vec<ImageState>, ReplicateError> {
        let mut states = Vec::new();
        for id in self.store.image_ids()? {
            if let Ok(header) = self.local_header(&id) {
                states.push(self.state_of(&header));
            }
        }
        Ok(states)
    }

    /// Makes image `id` complete here: fetches its meta if needed, then every chunk it lacks
    /// (verified), from the remotes in order. Returns what it fetched.
    pub fn ensure_local(&self, id: &ImageId) -> Result<Transfer, ReplicateError> {
        let header = self.image_header(id)?;
        let missing: Vec<(ChunkId, u64)> =
            chunk_list(&header).into_iter().filter(|(c, _)| !self.store.has(c)).collect();
        self.fetch_chunks(&missing, &format!("image {}", id.short()))
    }

    /// The whole `.mast` file of image `id`, made complete first. The caller verifies it again
    /// before booting it (`images::artifact::verify`), like any image file.
    pub fn assemble(&self, id: &ImageId) -> Result<Vec<u8>, ReplicateError> {
        self.ensure_local(id)?;
        let meta_bytes = self.store.image_meta(id)?;
        let header = self.local_header(id)?;
        let mut chunks = Vec::new();
        for (chunk, _) in chunk_list(&header) {
            chunks.push(match self.store.get(&chunk) {
                Ok(bytes) => bytes,
                // Damaged on disk since it was fetched: the store dropped it; fetch it again.
                Err(StoreError::Corrupt(_) | StoreError::NotFound(_)) => {
                    let len = chunk_list(&header).iter().find(|(c, _)| *c == chunk).map_or(0, |(_, l)| *l);
                    self.fetch_chunks(&[(chunk, len)], &format!("image {}", id.short()))?;
                    self.store.get(&chunk)?
                }
                Err(e) => return Err(e.into()),
            });
        }
        Ok(meta::assemble(&meta_bytes, chunks.iter().map(Vec::as_slice)))
    }

    /// Pushes image `id` to `remote`: the chunks it lacks (asked in one batch), then the meta,
    /// so a remote that lists an image can always serve all of it.
    pub fn push_image(&self, id: &ImageId, remote: &dyn Remote) -> Result<Transfer, ReplicateError> {
        self.push_image_at(id, remote, false)
    }

    /// [`push_image`](Self::push_image) in the background: under the bandwidth cap (shared with
    /// the trickle), sleeping until the cap allows each chunk.
    pub fn push_image_capped(&self, id: &ImageId, remote: &dyn Remote) -> Result<Transfer, ReplicateError> {
        self.push_image_at(id, remote, true)
    }

    fn push_image_at(&self, id: &ImageId, remote: &dyn Remote, capped: bool) -> Result<Transfer, ReplicateError> {
        let header = self.local_header(id)?;
        let chunks = chunk_list(&header);
        let sent = self.push_chunks(remote, chunks.iter().map(|(c, _)| *c).collect(), capped, |c| self.store.get(c))?;
        remote.put_image_meta(id, &self.store.image_meta(id)?)?;
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

    /// Pushes image `id`'s meta alone: the remote learns of the image and fetches chunks lazily.
    pub fn push_meta(&self, id: &ImageId, remote: &dyn Remote) -> Result<(), ReplicateError> {
        self.local_header(id)?;
        remote.put_image_meta(id, &self.store.image_meta(id)?)?;
        Ok(())
    }

    fn push_chunks(
        &self,
        remote: &dyn Remote,
        ids: Vec<ChunkId>,
        capped: bool,
        read: impl Fn(&ChunkId) -> Result<Vec<u8>, StoreError>,
    ) -> Result<Transfer, ReplicateError> {
        let mut sent = Transfer::default();
        for batch in ids.chunks(FETCH_BATCH * 4) {
            let held = remote.has_chunks(batch)?;
            for (id, _) in batch.iter().zip(held).filter(|(_, held)| !held) {
                let bytes = read(id)?;
                if capped {
                    self.wait_for_budget(bytes.len() as u64);
                }
                remote.put_chunk(id, &bytes)?;
                sent.chunks += 1;
                sent.bytes += bytes.len() as u64;
                self.counters.chunks_pushed.fetch_add(1, Ordering::Relaxed);
                self.counters.bytes_pushed.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
        }
        Ok(sent)
    }

    /// Fetches `wanted` chunks (those not stored yet), each at most once even when other threads
    /// want the same chunks at the same time.
    fn fetch_chunks(&self, wanted: &[(ChunkId, u64)], what: &str) -> Result<Transfer, ReplicateError> {
        let mut total = Transfer::default();
        let mut pending: Vec<(ChunkId, u64)> = wanted.to_vec();
        // Each round fetches what no other thread is fetching, then waits for the rest; a chunk
        // another thread failed to fetch comes back to this thread in the next round.
        while !pending.is_empty() {
            let (mine, theirs) = self.claim(&pending);
            let result = self.fetch_claimed(&mine, what);
            self.release(&mine);
            total.chunks += result.as_ref().map_or(0, |t| t.chunks);
            total.bytes += result.as_ref().map_or(0, |t| t.bytes);
            result?;
            self.wait_for(&theirs);
            pending = theirs.into_iter().filter(|(c, _)| !self.store.has(c)).collect();
        }
        Ok(total)
    }

    /// Splits `wanted` into chunks this thread now fetches (marked in flight) and chunks another
    /// thread is fetching. Chunks stored meanwhile are dropped.
    fn claim(&self, wanted: &[Wanted]) -> (Vec<Wanted>, Vec<Wanted>) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        for &(id, len) in wanted {
            if self.store.has(&id) {
                continue;
            }
            if in_flight.insert(id) { mine.push((id, len)) } else { theirs.push((id, len)) }
        }
        (mine, theirs)
    }

    fn release(&self, mine: &[(ChunkId, u64)]) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        for (id, _) in mine {
            in_flight.remove(id);
        }
        self.fetched.notify_all();
    }

    fn wait_for(&self, theirs: &[(ChunkId, u64)]) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        while theirs.iter().any(|(id, _)| in_flight.contains(id)) {
            in_flight = self.fetched.wait(in_flight).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Fetches chunks this thread has claimed: batch by batch, remote by remote, each verified.
    /// A chunk no remote has a good copy of does not stop the others; a broken connection does
    /// (the next call resumes where this one stopped).
    fn fetch_claimed(&self, chunks: &[(ChunkId, u64)], what: &str) -> Result<Transfer, ReplicateError> {
        let mut total = Transfer::default();
        let remotes = self.remotes();
        let (mut unavailable, mut last) = (0usize, String::from("no remote is configured"));
        for batch in chunks.chunks(FETCH_BATCH) {
            let mut missing: Vec<ChunkId> = batch.iter().map(|(c, _)| *c).collect();
            let mut broken = false;
            'attempts: for _ in 0..self.config.attempts.max(1) {
                broken = false;
                for remote in &remotes {
                    if missing.is_empty() {
                        break 'attempts;
                    }
                    let results = remote.get_chunks(&missing);
                    let mut still = Vec::new();
                    for (id, result) in missing.iter().zip(results) {
                        match result {
                            Ok(bytes) if id.matches(&bytes) => {
                                self.store.put(id, &bytes)?;
                                total.chunks += 1;
                                total.bytes += bytes.len() as u64;
                                self.counters.chunks_fetched.fetch_add(1, Ordering::Relaxed);
                                self.counters.bytes_fetched.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                            }
                            Ok(_) => {
                                self.counters.corrupt_chunks.fetch_add(1, Ordering::Relaxed);
                                last = format!("{} sent corrupt bytes for chunk {id}", remote.name());
                                still.push(*id);
                            }
                            Err(e) => {
                                broken |= matches!(e, RemoteError::Transport(_) | RemoteError::Unauthorized(_));
                                last = format!("{}: {e}", remote.name());
                                still.push(*id);
                            }
                        }
                    }
                    missing = still;
                }
            }
            unavailable += missing.len();
            if broken && !missing.is_empty() {
                // Every remote failed as a whole: the rest of the chunks would fail the same way.
                let rest = chunks.len() - total.chunks as usize - unavailable;
                unavailable += rest;
                break;
            }
        }
        if unavailable > 0 {
            return Err(ReplicateError::Incomplete {
                what: what.to_owned(),
                missing: unavailable,
                remotes: remotes.len(),
                last,
            });
        }
        Ok(total)
    }

    /// One step of the background trickle: fetches missing chunks of known images while the
    /// bandwidth cap allows, and stops at the first chunk the cap's budget cannot cover. `now`
    /// is passed in so tests can drive the cap with their own clock.
    pub fn trickle_tick(&self, now: Instant) -> Result<Transfer, ReplicateError> {
        let mut total = Transfer::default();
        let (mut failed, mut failures) = (None, 0);
        'images: for state in self.images()? {
            if state.is_complete() {
                continue;
            }
            let header = self.local_header(&state.id)?;
            for (chunk, len) in chunk_list(&header) {
                if self.store.has(&chunk) {
                    continue;
                }
                if !self.bucket.lock().unwrap_or_else(|p| p.into_inner()).try_take(len, now) {
                    return Ok(total);
                }
                match self.fetch_chunks(&[(chunk, len)], &format!("image {}", state.id.short())) {
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

    // ---- volumes ----

    /// Registers a volume this rack owns: `snapshot_all_volumes` (which the rack manager calls
    /// periodically) snapshots it to every remote.
    pub fn register_volume(&self, name: &str, path: &Path) -> Result<(), ReplicateError> {
        crate::volume::check_volume_name(name)?;
        self.volumes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), LocalVolume { path: path.to_owned() });
        Ok(())
    }

    /// The registered volumes: name and file.
    pub fn registered_volumes(&self) -> Vec<(String, PathBuf)> {
        let volumes = self.volumes.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = volumes.iter().map(|(n, v)| (n.clone(), v.path.clone())).collect();
        list.sort();
        list
    }

    /// Snapshots every registered volume; returns the ones that failed, with why.
    pub fn snapshot_all_volumes(&self) -> Vec<(String, ReplicateError)> {
        let mut failed = Vec::new();
        for (name, path) in self.registered_volumes() {
            let result = self.snapshot_volume(&name, &path, crate::now_ms());
            let mut errors = self.volume_errors.lock().unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(_) => {
                    errors.remove(&name);
                }
                Err(e) => {
                    errors.insert(name.clone(), e.to_string());
                    failed.push((name, e));
                }
            }
        }
        failed
    }

    /// Why the last background snapshot of `volume` failed, if it did.
    pub fn volume_error(&self, volume: &str) -> Option<String> {
        self.volume_errors.lock().unwrap_or_else(|p| p.into_inner()).get(volume).cloned()
    }

    /// The newest snapshot of `volume` that every remote accepted.
    pub fn last_snapshot(&self, volume: &str) -> Result<Option<VolumeSnapshot>, ReplicateError> {
        match self.store.volume_snapshots(volume)?.last() {
            Some(&seq) => Ok(Some(self.store.volume_snapshot(volume, seq)?)),
            None => Ok(None),
        }
    }

    /// Takes a snapshot of the volume file at `path` and pushes it to every remote: only chunks
    /// that changed since the last snapshot, and of those only the ones a remote lacks. The
    /// snapshot is recorded here once every remote has it.
    pub fn snapshot_volume(&self, volume: &str, path: &Path, now_ms: u64) -> Result<VolumePush, ReplicateError> {
        let previous = self.last_snapshot(volume)?;
        let seq = previous.as_ref().map_or(1, |p| p.seq + 1);
        let (snapshot, bytes) = VolumeSnapshot::capture(volume, path, seq, now_ms)?;
        let changed = snapshot.changed_since(previous.as_ref());
        let by_id: HashMap<ChunkId, &[u8]> =
            changed.iter().map(|&i| (snapshot.chunks[i], bytes[i].as_slice())).collect();
        let mut ids: Vec<ChunkId> = changed.iter().map(|&i| snapshot.chunks[i]).collect();
        ids.sort();
        ids.dedup();
        let mut sent = Transfer::default();
        for remote in self.remotes().into_iter().filter(|r| r.accepts_pushes()) {
            let pushed = self.push_chunks(&*remote, ids.clone(), false, |id| {
                by_id.get(id).map(|b| b.to_vec()).ok_or_else(|| StoreError::NotFound(format!("chunk {id}")))
            })?;
            remote.put_volume_snapshot(&snapshot)?;
            sent.chunks += pushed.chunks;
            sent.bytes += pushed.bytes;
        }
        self.store.put_volume_snapshot(&snapshot)?;
        Ok(VolumePush { snapshot, changed_chunks: changed.len(), sent })
    }

    /// Bytes of the volume file at `path` that changed since the last snapshot every remote has.
    pub fn volume_bytes_behind(&self, volume: &str, path: &Path) -> Result<u64, ReplicateError> {
        let previous = self.last_snapshot(volume)?;
        let (now, _) = VolumeSnapshot::capture(volume, path, 0, 0)?;
        Ok(now.changed_since(previous.as_ref()).iter().map(|&i| now.chunk_len(i)).sum())
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
        let seq = match seq {
            Some(seq) => seq,
            None => *remote
                .list_volume_snapshots(volume)?
                .last()
                .ok_or_else(|| RemoteError::NotFound(format!("no snapshot of volume {volume} at {}", remote.name())))?,
        };
        let snapshot = remote.get_volume_snapshot(volume, seq)?;
        let io = |action, path: &Path| {
            let path = path.display().to_string();
            move |source| ReplicateError::Io { action, path, source }
        };
        let mut existing = fs::File::open(path).ok();
        let aside = path.with_extension(format!("restore.{}.tmp", std::process::id()));
        let mut out = fs::File::create(&aside).map_err(io("creating", &aside))?;
        let mut fetched = Transfer::default();
        let result = (|| {
            for (index, id) in snapshot.chunks.iter().enumerate() {
                let len = snapshot.chunk_len(index) as usize;
                let mut have = Vec::with_capacity(len);
                if let Some(file) = existing.as_mut() {
                    file.take(len as u64).read_to_end(&mut have).map_err(io("reading", path))?;
                }
                if have.len() != len || !id.matches(&have) {
                    have = self.fetch_verified(remote, id)?;
                    fetched.chunks += 1;
                    fetched.bytes += have.len() as u64;
                }
                out.write_all(&have).map_err(io("writing", &aside))?;
            }
            out.sync_all().map_err(io("writing", &aside))?;
            fs::rename(&aside, path).map_err(io("renaming into place", path))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&aside);
        }
        result.map(|()| (snapshot, fetched))
    }

    /// One chunk from `remote` (then the other remotes), verified; counted in the stats.
    fn fetch_verified(&self, remote: &dyn Remote, id: &ChunkId) -> Result<Vec<u8>, ReplicateError> {
        let mut last = String::new();
        for _ in 0..self.config.attempts.max(1) {
            match remote.get_chunk(id) {
                Ok(bytes) if id.matches(&bytes) => {
                    self.counters.chunks_fetched.fetch_add(1, Ordering::Relaxed);
                    self.counters.bytes_fetched.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    return Ok(bytes);
                }
                Ok(_) => {
                    self.counters.corrupt_chunks.fetch_add(1, Ordering::Relaxed);
                    last = format!("{} sent corrupt bytes for chunk {id}", remote.name());
                }
                Err(e) => last = format!("{}: {e}", remote.name()),
            }
        }
        Err(ReplicateError::Incomplete { what: format!("chunk {id}"), missing: 1, remotes: 1, last })
    }
}
