//! Volume replication on top of the chunk fetcher: the volumes this rack owns, snapshots of their
//! changed chunks to every remote, and restores that fetch only what a file lacks.

use std::{
    collections::HashMap,
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use super::{Links, ReplicateError, Transfer, VolumePush, fetcher::ChunkFetcher};
use crate::{ChunkId, Remote, RemoteError, StoreError, VolumeSnapshot};

/// The volume half of a replicator: its own state is the registered volumes and the last error
/// of each one's background snapshot.
#[derive(Debug)]
pub(super) struct VolumeReplication {
    links: Arc<Links>,
    fetcher: Arc<ChunkFetcher>,
    /// Volumes this rack owns, by name: the file each lives in.
    volumes: Mutex<HashMap<String, PathBuf>>,
    /// Why the last snapshot of each volume failed, until one succeeds.
    errors: Mutex<HashMap<String, String>>,
}

impl VolumeReplication {
    pub(super) fn new(links: Arc<Links>, fetcher: Arc<ChunkFetcher>) -> VolumeReplication {
        VolumeReplication { links, fetcher, volumes: Mutex::default(), errors: Mutex::default() }
    }

    pub(super) fn register(&self, name: &str, path: &Path) -> Result<(), ReplicateError> {
        crate::volume::check_volume_name(name)?;
        self.volumes.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), path.to_owned());
        Ok(())
    }

    pub(super) fn registered(&self) -> Vec<(String, PathBuf)> {
        let volumes = self.volumes.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<_> = volumes.iter().map(|(n, p)| (n.clone(), p.clone())).collect();
        list.sort();
        list
    }

    pub(super) fn snapshot_all(&self) -> Vec<(String, ReplicateError)> {
        let mut failed = Vec::new();
        for (name, path) in self.registered() {
            let result = self.snapshot(&name, &path, crate::now_ms());
            let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
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

    pub(super) fn error(&self, volume: &str) -> Option<String> {
        self.errors.lock().unwrap_or_else(|p| p.into_inner()).get(volume).cloned()
    }

    pub(super) fn last_snapshot(&self, volume: &str) -> Result<Option<VolumeSnapshot>, ReplicateError> {
        let store = &self.links.store;
        match store.volume_snapshots(volume)?.last() {
            Some(&seq) => Ok(Some(store.volume_snapshot(volume, seq)?)),
            None => Ok(None),
        }
    }

    pub(super) fn snapshot(&self, volume: &str, path: &Path, now_ms: u64) -> Result<VolumePush, ReplicateError> {
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
        for remote in self.links.remotes().into_iter().filter(|r| r.accepts_pushes()) {
            // Volume snapshots are not capped: the data they carry is what a failover recovers.
            let pushed = self.links.push_chunks(
                &*remote,
                ids.clone(),
                |_| {},
                |id| by_id.get(id).map(|b| b.to_vec()).ok_or_else(|| StoreError::NotFound(format!("chunk {id}"))),
            )?;
            remote.put_volume_snapshot(&snapshot)?;
            sent.chunks += pushed.chunks;
            sent.bytes += pushed.bytes;
        }
        self.links.store.put_volume_snapshot(&snapshot)?;
        Ok(VolumePush { snapshot, changed_chunks: changed.len(), sent })
    }

    pub(super) fn bytes_behind(&self, volume: &str, path: &Path) -> Result<u64, ReplicateError> {
        let previous = self.last_snapshot(volume)?;
        let (now, _) = VolumeSnapshot::capture(volume, path, 0, 0)?;
        Ok(now.changed_since(previous.as_ref()).iter().map(|&i| now.chunk_len(i)).sum())
    }

    pub(super) fn restore(
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
                    have = self.fetcher.fetch_verified(remote, id)?;
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
}
