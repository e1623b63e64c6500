//! A rack's content-addressed store on disk: chunks, image metas and volume snapshots.
//!
//! ```text
//! <root>/chunks/<aa>/<64 hex>          one file per chunk, named by its BLAKE3 hash, sharded by its first byte
//! <root>/images/<image id>.meta        image metas (preamble + signed header of the .mast file)
//! <root>/volumes/<name>/<seq>.snap     volume snapshots
//! <root>/tmp/                          files being written; emptied when the store opens
//! ```
//!
//! Every file is written whole in `tmp/` and renamed (chunks: hard-linked) into place, so a crash
//! or an interrupted transfer never leaves a torn file under its final name: at worst a stray file
//! in `tmp/`, which the next open removes, and the chunk is simply still missing. Nothing is fsynced per chunk
//! (that would cost a disk flush per 4 KiB); instead every read checks the bytes against their
//! hash, and a chunk damaged on disk (by power loss or anything else) is removed and reported as
//! [`StoreError::Corrupt`], so the replicator fetches it again.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use images::artifact::ImageId;

use crate::{ChunkId, VolumeSnapshot, volume::check_volume_name};

/// The largest chunk the store accepts: far above image (16 KiB) and volume (64 KiB) chunks.
pub const MAX_CHUNK: usize = 4 << 20;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} is not in the store")]
    NotFound(String),
    #[error("{0}")]
    Corrupt(String),
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: String, source: io::Error },
}

impl From<StoreError> for crate::RemoteError {
    fn from(e: StoreError) -> crate::RemoteError {
        match e {
            StoreError::NotFound(what) => crate::RemoteError::NotFound(what),
            StoreError::Corrupt(what) => crate::RemoteError::Corrupt(what),
            io @ StoreError::Io { .. } => crate::RemoteError::Storage(io.to_string()),
        }
    }
}

type Result<T> = std::result::Result<T, StoreError>;

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.display().to_string();
    move |source| StoreError::Io { action, path, source }
}

/// The chunks, image metas and volume snapshots of one rack, in one directory.
#[derive(Debug)]
pub struct ChunkStore {
    root: PathBuf,
    /// Bytes of chunk data stored, counted at open and kept current.
    chunk_bytes: AtomicU64,
    chunk_count: AtomicU64,
    /// Makes temporary file names unique within the process.
    writes: AtomicU64,
}

impl ChunkStore {
    /// Opens (creating it if needed) the store at `root`, and removes what interrupted writes left.
    pub fn open(root: &Path) -> Result<ChunkStore> {
        for dir in ["chunks", "images", "volumes", "tmp"] {
            let dir = root.join(dir);
            fs::create_dir_all(&dir).map_err(io_error("creating", &dir))?;
        }
        let tmp = root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(io_error("listing", &tmp))? {
            let path = entry.map_err(io_error("listing", &tmp))?.path();
            fs::remove_file(&path).map_err(io_error("removing the interrupted write", &path))?;
        }
        let (mut bytes, mut count) = (0, 0);
        let chunks = root.join("chunks");
        for shard in fs::read_dir(&chunks).map_err(io_error("listing", &chunks))? {
            let shard = shard.map_err(io_error("listing", &chunks))?.path();
            for chunk in fs::read_dir(&shard).map_err(io_error("listing", &shard))? {
                let meta = chunk.and_then(|c| c.metadata()).map_err(io_error("listing", &shard))?;
                bytes += meta.len();
                count += 1;
            }
        }
        Ok(ChunkStore {
            root: root.to_owned(),
            chunk_bytes: AtomicU64::new(bytes),
            chunk_count: AtomicU64::new(count),
            writes: AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        self.root.join("chunks").join(id.shard()).join(id.hex())
    }

    fn meta_path(&self, id: &ImageId) -> PathBuf {
        self.root.join("images").join(format!("{id}.meta"))
    }

    fn volume_dir(&self, volume: &str) -> PathBuf {
        self.root.join("volumes").join(volume)
    }

    /// Writes `bytes` to a new temporary file and returns its path.
    fn write_aside(&self, path: &Path, bytes: &[u8]) -> Result<PathBuf> {
        let n = self.writes.fetch_add(1, Ordering::Relaxed);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let aside = self.root.join("tmp").join(format!("{name}.{}.{n}", std::process::id()));
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
        }
        fs::write(&aside, bytes).map_err(io_error("writing", &aside))?;
        Ok(aside)
    }

    /// Writes `bytes` to `path` through a temporary file, so `path` is whole or absent.
    fn write_whole(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let aside = self.write_aside(path, bytes)?;
        fs::rename(&aside, path).map_err(|e| {
            let _ = fs::remove_file(&aside);
            io_error("renaming into place", path)(e)
        })
    }

    /// Like [`write_whole`](Self::write_whole) for a file that never changes once written: links
    /// it into place unless it is there already. Returns whether this call created it, so two
    /// threads storing the same chunk count it once.
    fn write_new(&self, path: &Path, bytes: &[u8]) -> Result<bool> {
        let aside = self.write_aside(path, bytes)?;
        let linked = fs::hard_link(&aside, path);
        let _ = fs::remove_file(&aside);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_error("linking into place", path)(e)),
        }
    }

    /// Whether chunk `id` is stored (its bytes are checked when read).
    pub fn has(&self, id: &ChunkId) -> bool {
        self.chunk_path(id).is_file()
    }

    /// [`has`](Self::has) for each id, in order.
    pub fn has_many(&self, ids: &[ChunkId]) -> Vec<bool> {
        ids.iter().map(|id| self.has(id)).collect()
    }

    /// The bytes of chunk `id`, checked against its hash. A damaged chunk is removed (so it is
    /// fetched again) and reported as [`StoreError::Corrupt`].
    pub fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let path = self.chunk_path(id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound(format!("chunk {id}"))),
            Err(e) => return Err(io_error("reading", &path)(e)),
        };
        if !id.matches(&bytes) {
            self.remove(id);
            return Err(StoreError::Corrupt(format!("the stored chunk {id} was damaged on disk and has been removed")));
        }
        Ok(bytes)
    }

    /// Stores chunk `id` after checking `bytes` against it. Returns whether it was new.
    pub fn put(&self, id: &ChunkId, bytes: &[u8]) -> Result<bool> {
        if bytes.len() > MAX_CHUNK {
            return Err(StoreError::Corrupt(format!(
                "chunk {id} is {} bytes, over the {MAX_CHUNK}-byte limit",
                bytes.len()
            )));
        }
        if !id.matches(bytes) {
            return Err(StoreError::Corrupt(format!("the bytes offered as chunk {id} hash to {}", ChunkId::of(bytes))));
        }
        if self.has(id) || !self.write_new(&self.chunk_path(id), bytes)? {
            return Ok(false);
        }
        self.chunk_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.chunk_count.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Removes chunk `id`, if stored.
    pub fn remove(&self, id: &ChunkId) {
        let path = self.chunk_path(id);
        if let Ok(meta) = fs::metadata(&path)
            && fs::remove_file(&path).is_ok()
        {
            self.chunk_bytes.fetch_sub(meta.len(), Ordering::Relaxed);
            self.chunk_count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Bytes of chunk data stored.
    pub fn chunk_bytes(&self) -> u64 {
        self.chunk_bytes.load(Ordering::Relaxed)
    }

    /// Chunks stored.
    pub fn chunk_count(&self) -> u64 {
        self.chunk_count.load(Ordering::Relaxed)
    }

    /// Stores an image meta. The caller has verified it ([`crate::meta::verify_meta`]).
    pub fn put_image_meta(&self, id: &ImageId, meta: &[u8]) -> Result<()> {
        self.write_whole(&self.meta_path(id), meta)
    }

    /// The stored meta of image `id`.
    pub fn image_meta(&self, id: &ImageId) -> Result<Vec<u8>> {
        let path = self.meta_path(id);
        fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(format!("image {id}")),
            _ => io_error("reading", &path)(e),
        })
    }

    /// When image `id`'s meta was stored here, in ms since the Unix epoch.
    pub fn image_meta_stored_ms(&self, id: &ImageId) -> Option<u64> {
        let modified = fs::metadata(self.meta_path(id)).and_then(|m| m.modified()).ok()?;
        modified.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_millis() as u64)
    }

    pub fn has_image_meta(&self, id: &ImageId) -> bool {
        self.meta_path(id).is_file()
    }

    /// Forgets image `id`'s meta (its chunks stay: other images may share them).
    pub fn remove_image_meta(&self, id: &ImageId) {
        let _ = fs::remove_file(self.meta_path(id));
    }

    /// The ids of every stored image meta.
    pub fn image_ids(&self) -> Result<Vec<ImageId>> {
        let dir = self.root.join("images");
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error("listing", &dir))? {
            let name = entry.map_err(io_error("listing", &dir))?.file_name();
            let Some(hex_id) = name.to_str().and_then(|n| n.strip_suffix(".meta")) else { continue };
            let mut id = [0u8; 32];
            if hex::decode_to_slice(hex_id, &mut id).is_ok() {
                ids.push(ImageId(id));
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Stores a volume snapshot (its chunks first, by the caller).
    pub fn put_volume_snapshot(&self, snapshot: &VolumeSnapshot) -> Result<()> {
        check_volume_name(&snapshot.volume).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let path = self.volume_dir(&snapshot.volume).join(format!("{}.snap", snapshot.seq));
        self.write_whole(&path, &snapshot.encode())
    }

    /// Snapshot `seq` of `volume`.
    pub fn volume_snapshot(&self, volume: &str, seq: u64) -> Result<VolumeSnapshot> {
        check_volume_name(volume).map_err(|e| StoreError::NotFound(e.to_string()))?;
        let path = self.volume_dir(volume).join(format!("{seq}.snap"));
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::NotFound(format!("snapshot {seq} of volume {volume}")),
            _ => io_error("reading", &path)(e),
        })?;
        VolumeSnapshot::decode(&bytes).map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))
    }

    /// The sequence numbers of `volume`'s stored snapshots, ascending.
    pub fn volume_snapshots(&self, volume: &str) -> Result<Vec<u64>> {
        if check_volume_name(volume).is_err() {
            return Ok(Vec::new());
        }
        let dir = self.volume_dir(volume);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("listing", &dir)(e)),
        };
        let mut seqs = Vec::new();
        for entry in entries {
            let name = entry.map_err(io_error("listing", &dir))?.file_name();
            if let Some(seq) = name.to_str().and_then(|n| n.strip_suffix(".snap")).and_then(|n| n.parse().ok()) {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// The names of the volumes with stored snapshots.
    pub fn volumes(&self) -> Result<Vec<String>> {
        let dir = self.root.join("volumes");
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error("listing", &dir))? {
            let name = entry.map_err(io_error("listing", &dir))?.file_name();
            if let Some(name) = name.to_str().filter(|n| check_volume_name(n).is_ok()) {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_verified_on_the_way_in_and_out() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ChunkStore::open(dir.path()).expect("opens");
        let id = ChunkId::of(b"hello chunk");
        assert!(matches!(store.put(&id, b"other bytes"), Err(StoreError::Corrupt(_))));
        assert!(!store.has(&id), "refused bytes are not stored");
        assert!(store.put(&id, b"hello chunk").expect("stored"));
        assert!(!store.put(&id, b"hello chunk").expect("again"), "stored once");
        assert_eq!((store.chunk_bytes(), store.chunk_count()), (11, 1));
        assert_eq!(store.get(&id).expect("reads"), b"hello chunk");

        // Damage on disk is caught on read, and the chunk is gone so that it is fetched again.
        fs::write(store.chunk_path(&id), b"hellO chunk").expect("damage");
        assert!(matches!(store.get(&id), Err(StoreError::Corrupt(_))));
        assert!(!store.has(&id));
        assert_eq!(store.chunk_bytes(), 0);
    }

    #[test]
    fn an_interrupted_write_leaves_no_chunk_and_is_cleaned_up_on_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ChunkStore::open(dir.path()).expect("opens");
        let kept = ChunkId::of(b"kept");
        store.put(&kept, b"kept").expect("stored");
        let torn = ChunkId::of(b"the whole chunk");
        // What a crash mid-write leaves: half a chunk in tmp/, nothing under the final name.
        let leftover = dir.path().join("tmp").join(format!("{}.999.0", torn.hex()));
        fs::write(&leftover, b"the who").expect("write");
        drop(store);

        let store = ChunkStore::open(dir.path()).expect("reopens");
        assert!(!leftover.exists(), "the interrupted write was removed");
        assert!(!store.has(&torn), "no torn chunk appears");
        assert!(store.has(&kept));
        assert_eq!((store.chunk_bytes(), store.chunk_count()), (4, 1), "sizes counted again at open");
    }

    #[test]
    fn a_chunk_stored_by_many_threads_at_once_is_counted_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ChunkStore::open(dir.path()).expect("opens");
        let id = ChunkId::of(b"shared");
        let created: usize = std::thread::scope(|scope| {
            let writers: Vec<_> = (0..8).map(|_| scope.spawn(|| store.put(&id, b"shared"))).collect();
            writers.into_iter().map(|w| usize::from(w.join().expect("no panic").expect("stored"))).sum()
        });
        assert_eq!((created, store.chunk_count(), store.chunk_bytes()), (1, 1, 6));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).expect("tmp").count(), 0, "no temporary file left");
    }

    #[test]
    fn metas_and_snapshots_are_listed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ChunkStore::open(dir.path()).expect("opens");
        let id = ImageId([7; 32]);
        store.put_image_meta(&id, b"meta").expect("stored");
        assert_eq!(store.image_ids().expect("lists"), [id]);
        assert_eq!(store.image_meta(&id).expect("reads"), b"meta");
        assert!(matches!(store.image_meta(&ImageId([8; 32])), Err(StoreError::NotFound(_))));
        let snapshot =
            VolumeSnapshot { volume: "db".into(), seq: 3, captured_ms: 1, size: 0, chunk_size: 65536, chunks: vec![] };
        store.put_volume_snapshot(&snapshot).expect("stored");
        store.put_volume_snapshot(&VolumeSnapshot { seq: 12, ..snapshot.clone() }).expect("stored");
        assert_eq!(store.volumes().expect("lists"), ["db"]);
        assert_eq!(store.volume_snapshots("db").expect("lists"), [3, 12], "numeric order");
        assert_eq!(store.volume_snapshot("db", 3).expect("reads"), snapshot);
        assert!(store.volume_snapshots("../etc").expect("no error").is_empty());
    }
}
