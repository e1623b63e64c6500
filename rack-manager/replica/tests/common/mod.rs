//! Shared by the replica tests: test images, and a remote wrapper that counts, delays, corrupts
//! or breaks off transfers like a real network can.
#![allow(dead_code)] // each test file uses its own part

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use images::{
    Arch,
    artifact::{self, DATA_PART, ImageId, KERNEL_PART},
    keys::{SigningKey, TrustedKeys},
    manifest,
};
use replica::{ChunkId, ChunkStore, Remote, RemoteError, Replicator, ReplicatorConfig, VolumeSnapshot};

pub fn key() -> SigningKey {
    SigningKey::from_seed([11; 32])
}

pub fn trusted() -> TrustedKeys {
    TrustedKeys::new([key().public()])
}

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

/// Text that looks like a web page: words from a small vocabulary.
fn page(index: usize, len: usize) -> Vec<u8> {
    const WORDS: [&str; 12] =
        ["mast", "edge", "rack", "appliance", "<p>", "</p>", "kernel", "chunk", "signed", "peer", "cloud", "\n"];
    let mut state = (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut out = format!("<html><title>page {index}</title><body>\n").into_bytes();
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(WORDS[(state % WORDS.len() as u64) as usize].as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(b"</body></html>\n");
    out
}

/// An httpd-like image: a 256 KiB kernel and a site of 16 pages of 8 KiB. `edited` changes one
/// page, as a new version of a site does.
pub fn httpd_image(version: &str, edited: bool, signer: &SigningKey) -> Vec<u8> {
    let manifest = manifest::parse(
        "httpd.toml",
        &format!("name = \"httpd\"\nversion = \"{version}\"\narches = [\"aarch64\"]\nmemory_mib = 16\n"),
    )
    .expect("valid manifest");
    let kernel = pseudo_random(256 << 10, 42);
    let mut site = Vec::new();
    for index in 0..16 {
        let mut bytes = page(index, 8 << 10);
        if edited && index == 7 {
            let at = bytes.len() - 16;
            bytes.splice(at..at, b"<p>One more paragraph in version two.</p>\n".iter().copied());
        }
        site.extend_from_slice(format!("--- page{index}.html {}\n", bytes.len()).as_bytes());
        site.extend_from_slice(&bytes);
    }
    artifact::build(Arch::Aarch64, &manifest, &[(KERNEL_PART, &kernel), (DATA_PART, &site)], signer)
}

pub fn id_of(image: &[u8]) -> ImageId {
    artifact::read_unverified(image).expect("readable").0
}

/// Bytes of distinct chunks `new` has that `old` does not: what replicating `new` to a holder of
/// `old` must move.
pub fn new_bytes(old: &[u8], new: &[u8]) -> u64 {
    let body = |image: &[u8]| artifact::read_unverified(image).expect("readable").2;
    let (old, new) = (body(old), body(new));
    artifact::stored_bytes(&new) - artifact::shared_bytes(&old, &new)
}

pub fn stored_bytes(image: &[u8]) -> u64 {
    artifact::stored_bytes(&artifact::read_unverified(image).expect("readable").2)
}

/// A rack: a store in a temporary directory and a replicator over it.
pub struct Rack {
    pub dir: tempfile::TempDir,
    pub replicator: Arc<Replicator>,
}

impl Rack {
    pub fn new(config: ReplicatorConfig) -> Rack {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(ChunkStore::open(&dir.path().join("store")).expect("store opens"));
        Rack { replicator: Arc::new(Replicator::new(store, trusted(), config)), dir }
    }

    pub fn unlimited() -> Rack {
        Rack::new(ReplicatorConfig { trickle_rate: None, attempts: 2 })
    }

    pub fn store(&self) -> &ChunkStore {
        self.replicator.store()
    }
}

/// A remote seen through a wire that records what crosses it and can misbehave.
#[derive(Debug)]
pub struct Wire {
    inner: Arc<dyn Remote>,
    /// Every chunk id asked for with `get_chunk`, in order.
    pub fetched: Mutex<Vec<ChunkId>>,
    pub fetched_bytes: AtomicU64,
    /// `get_chunk` calls that succeed before every later one fails (an interrupted transfer).
    fail_after: Option<usize>,
    gets: AtomicUsize,
    /// Chunks whose next answer has one byte flipped.
    corrupt_next: Mutex<HashSet<ChunkId>>,
    delay: Duration,
}

impl Wire {
    pub fn new(inner: Arc<dyn Remote>) -> Wire {
        Wire {
            inner,
            fetched: Mutex::new(Vec::new()),
            fetched_bytes: AtomicU64::new(0),
            fail_after: None,
            gets: AtomicUsize::new(0),
            corrupt_next: Mutex::new(HashSet::new()),
            delay: Duration::ZERO,
        }
    }

    pub fn failing_after(inner: Arc<dyn Remote>, chunks: usize) -> Wire {
        Wire { fail_after: Some(chunks), ..Wire::new(inner) }
    }

    pub fn slow(inner: Arc<dyn Remote>, delay: Duration) -> Wire {
        Wire { delay, ..Wire::new(inner) }
    }

    pub fn corrupt_once(&self, id: ChunkId) {
        self.corrupt_next.lock().expect("lock").insert(id);
    }

    pub fn fetched(&self) -> Vec<ChunkId> {
        self.fetched.lock().expect("lock").clone()
    }
}

impl Remote for Wire {
    fn name(&self) -> String {
        format!("wire to {}", self.inner.name())
    }
    fn list_images(&self) -> Result<Vec<ImageId>, RemoteError> {
        self.inner.list_images()
    }
    fn get_image_meta(&self, id: &ImageId) -> Result<Vec<u8>, RemoteError> {
        self.inner.get_image_meta(id)
    }
    fn put_image_meta(&self, id: &ImageId, meta: &[u8]) -> Result<(), RemoteError> {
        self.inner.put_image_meta(id, meta)
    }
    fn has_chunks(&self, ids: &[ChunkId]) -> Result<Vec<bool>, RemoteError> {
        self.inner.has_chunks(ids)
    }
    fn get_chunk(&self, id: &ChunkId) -> Result<Vec<u8>, RemoteError> {
        let n = self.gets.fetch_add(1, Ordering::SeqCst);
        if self.fail_after.is_some_and(|limit| n >= limit) {
            return Err(RemoteError::Transport("connection reset by peer (test wire)".into()));
        }
        std::thread::sleep(self.delay);
        let mut bytes = self.inner.get_chunk(id)?;
        self.fetched.lock().expect("lock").push(*id);
        self.fetched_bytes.fetch_add(bytes.len() as u64, Ordering::SeqCst);
        if self.corrupt_next.lock().expect("lock").remove(id) {
            bytes[0] ^= 0x40;
        }
        Ok(bytes)
    }
    fn put_chunk(&self, id: &ChunkId, bytes: &[u8]) -> Result<(), RemoteError> {
        self.inner.put_chunk(id, bytes)
    }
    fn list_volumes(&self) -> Result<Vec<String>, RemoteError> {
        self.inner.list_volumes()
    }
    fn list_volume_snapshots(&self, volume: &str) -> Result<Vec<u64>, RemoteError> {
        self.inner.list_volume_snapshots(volume)
    }
    fn get_volume_snapshot(&self, volume: &str, seq: u64) -> Result<VolumeSnapshot, RemoteError> {
        self.inner.get_volume_snapshot(volume, seq)
    }
    fn put_volume_snapshot(&self, snapshot: &VolumeSnapshot) -> Result<(), RemoteError> {
        self.inner.put_volume_snapshot(snapshot)
    }
}

/// Asserts no chunk id appears twice in `fetched`.
pub fn assert_fetched_once(fetched: &[ChunkId]) {
    let mut seen = HashSet::new();
    for id in fetched {
        assert!(seen.insert(id), "chunk {id} was fetched twice");
    }
}
