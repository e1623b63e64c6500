//! Fetching chunks from the remotes: each at most once however many threads want it, and each
//! stored only once its bytes match its hash.

use std::{
    collections::HashSet,
    sync::{Arc, Condvar, Mutex, atomic::Ordering},
};

use super::{FETCH_BATCH, Links, ReplicateError, Transfer, Wanted};
use crate::{ChunkId, Remote, RemoteError};

/// Fetches chunks into the store. Threads that want the same chunk at the same time share one
/// fetch: the first claims it, the others wait for it (and claim it themselves if that fetch
/// failed).
#[derive(Debug)]
pub(super) struct ChunkFetcher {
    links: Arc<Links>,
    /// Chunks being fetched right now, and a condition their waiters sleep on.
    in_flight: Mutex<HashSet<ChunkId>>,
    fetched: Condvar,
}

impl ChunkFetcher {
    pub(super) fn new(links: Arc<Links>) -> ChunkFetcher {
        ChunkFetcher { links, in_flight: Mutex::new(HashSet::new()), fetched: Condvar::new() }
    }

    /// Fetches `wanted` chunks (those not stored yet) from the remotes, each at most once even
    /// when other threads want the same chunks at the same time. `what` names the whole (an
    /// image) in errors.
    pub(super) fn fetch(&self, wanted: &[Wanted], what: &str) -> Result<Transfer, ReplicateError> {
        let mut total = Transfer::default();
        let mut pending: Vec<Wanted> = wanted.to_vec();
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
            pending = theirs.into_iter().filter(|(c, _)| !self.links.store.has(c)).collect();
        }
        Ok(total)
    }

    /// Splits `wanted` into chunks this thread now fetches (marked in flight) and chunks another
    /// thread is fetching. Chunks stored meanwhile are dropped.
    fn claim(&self, wanted: &[Wanted]) -> (Vec<Wanted>, Vec<Wanted>) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        for &(id, len) in wanted {
            if self.links.store.has(&id) {
                continue;
            }
            if in_flight.insert(id) { mine.push((id, len)) } else { theirs.push((id, len)) }
        }
        (mine, theirs)
    }

    fn release(&self, mine: &[Wanted]) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        for (id, _) in mine {
            in_flight.remove(id);
        }
        self.fetched.notify_all();
    }

    fn wait_for(&self, theirs: &[Wanted]) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        while theirs.iter().any(|(id, _)| in_flight.contains(id)) {
            in_flight = self.fetched.wait(in_flight).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Fetches chunks this thread has claimed: batch by batch, remote by remote, each verified.
    /// A chunk no remote has a good copy of does not stop the others; a broken connection does
    /// (the next call resumes where this one stopped).
    fn fetch_claimed(&self, chunks: &[Wanted], what: &str) -> Result<Transfer, ReplicateError> {
        let counters = &self.links.counters;
        let mut total = Transfer::default();
        let remotes = self.links.remotes();
        let (mut unavailable, mut last) = (0usize, String::from("no remote is configured"));
        for batch in chunks.chunks(FETCH_BATCH) {
            let mut missing: Vec<ChunkId> = batch.iter().map(|(c, _)| *c).collect();
            let mut broken = false;
            'attempts: for _ in 0..self.links.config.attempts.max(1) {
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
                                self.links.store.put(id, &bytes)?;
                                total.chunks += 1;
                                total.bytes += bytes.len() as u64;
                                counters.chunks_fetched.fetch_add(1, Ordering::Relaxed);
                                counters.bytes_fetched.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                            }
                            Ok(_) => {
                                counters.corrupt_chunks.fetch_add(1, Ordering::Relaxed);
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

    /// One chunk from `remote` alone, verified and counted, but not stored (a volume restore
    /// writes it into the volume file instead).
    pub(super) fn fetch_verified(&self, remote: &dyn Remote, id: &ChunkId) -> Result<Vec<u8>, ReplicateError> {
        let counters = &self.links.counters;
        let mut last = String::new();
        for _ in 0..self.links.config.attempts.max(1) {
            match remote.get_chunk(id) {
                Ok(bytes) if id.matches(&bytes) => {
                    counters.chunks_fetched.fetch_add(1, Ordering::Relaxed);
                    counters.bytes_fetched.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    return Ok(bytes);
                }
                Ok(_) => {
                    counters.corrupt_chunks.fetch_add(1, Ordering::Relaxed);
                    last = format!("{} sent corrupt bytes for chunk {id}", remote.name());
                }
                Err(e) => last = format!("{}: {e}", remote.name()),
            }
        }
        Err(ReplicateError::Incomplete { what: format!("chunk {id}"), missing: 1, remotes: 1, last })
    }
}
