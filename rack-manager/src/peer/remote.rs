//! [`PeerRemote`]: another rack, seen through the `replica` crate's [`Remote`] trait, over the
//! mutual-TLS peer link. Peers pull: a rack serves its images and chunks to its configured peers
//! and accepts no pushes, so the `put_*` methods answer [`RemoteError::Unauthorized`]. What is
//! fetched is checked by the caller (signature on the meta, hash on every chunk), as the trait's
//! contract says.
//!
//! Volumes are named after the deployment they belong to, and shared only with the racks the
//! deployment fails over to. Listing a volume's snapshots takes a new one on the serving rack;
//! `list_volumes` lists nothing (a rack learns its peers' volumes from their failover plans).

use images::artifact::ImageId;
use rack_api::peers::PeerImage;
use replica::{ChunkId, Remote, RemoteError, VolumeSnapshot};

use super::wire::{CallError, PeerClient};

/// The most chunks asked for in one request (the server's limit).
pub const CHUNK_BATCH: usize = 1024;

/// What one answer of chunks held: good chunks and their bytes, and chunks whose bytes did not
/// match their hash (the replicator asks for those again).
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkTally {
    pub chunks: u64,
    pub bytes: u64,
    pub corrupt: u64,
}

/// Called with the tally of every chunk answer (the rack's per-peer counters).
pub type TallySink = std::sync::Arc<dyn Fn(ChunkTally) + Send + Sync>;

#[derive(Clone)]
pub struct PeerRemote {
    peer: String,
    client: PeerClient,
    tally: Option<TallySink>,
}

impl std::fmt::Debug for PeerRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerRemote").field("peer", &self.peer).finish_non_exhaustive()
    }
}

impl PeerRemote {
    pub fn new(peer: &str, client: PeerClient) -> PeerRemote {
        PeerRemote { peer: peer.to_owned(), client, tally: None }
    }

    /// This remote, reporting what each chunk answer held to `sink`.
    pub fn with_tally(mut self, sink: TallySink) -> PeerRemote {
        self.tally = Some(sink);
        self
    }

    fn call(&self, method: &str, path: &str, body: &[u8]) -> Result<Vec<u8>, RemoteError> {
        self.client.call(method, path, body).map(|r| r.body).map_err(|e| remote_error(&self.peer, e))
    }
}

fn remote_error(peer: &str, error: CallError) -> RemoteError {
    let text = format!("peer {peer}: {error}");
    match error {
        CallError::Handshake { .. } => RemoteError::Unauthorized(text),
        CallError::Status { status: 404, .. } => RemoteError::NotFound(text),
        CallError::Status { status: 401 | 403, .. } => RemoteError::Unauthorized(text),
        CallError::Status { status: 400 | 422, .. } => RemoteError::Corrupt(text),
        CallError::Connect { .. } | CallError::Io { .. } | CallError::Status { .. } => RemoteError::Transport(text),
    }
}

fn corrupt(peer: &str, what: impl std::fmt::Display) -> RemoteError {
    RemoteError::Corrupt(format!("peer {peer}: {what}"))
}

/// Splits a chunk batch answer: each chunk is a u32 LE length and that many bytes.
pub fn split_frames(body: &[u8], count: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut frames = Vec::with_capacity(count);
    let mut rest = body;
    for _ in 0..count {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or("the answer ends inside a length")?;
        let len = u32::from_le_bytes(*len) as usize;
        let bytes = tail.get(..len).ok_or("the answer ends inside a chunk")?;
        frames.push(bytes.to_vec());
        rest = &tail[len..];
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last chunk", rest.len()));
    }
    Ok(frames)
}

impl Remote for PeerRemote {
    fn name(&self) -> String {
        format!("peer {}", self.peer)
    }

    fn list_images(&self) -> Result<Vec<ImageId>, RemoteError> {
        let body = self.call("GET", "/peer/v1/images", &[])?;
        let images: Vec<PeerImage> = serde_json::from_slice(&body).map_err(|e| corrupt(&self.peer, e))?;
        images
            .iter()
            .map(|i| {
                let bytes: [u8; 32] = hex::decode(&i.id)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| corrupt(&self.peer, format!("{:?} is not an image id", i.id)))?;
                Ok(ImageId(bytes))
            })
            .collect()
    }

    fn get_image_meta(&self, id: &ImageId) -> Result<Vec<u8>, RemoteError> {
        self.call("GET", &format!("/peer/v1/images/{id}/header"), &[])
    }

    fn put_image_meta(&self, _id: &ImageId, _meta: &[u8]) -> Result<(), RemoteError> {
        Err(RemoteError::Unauthorized(format!(
            "peer {}: racks pull from each other; a peer accepts no pushes",
            self.peer
        )))
    }

    fn has_chunks(&self, ids: &[ChunkId]) -> Result<Vec<bool>, RemoteError> {
        let mut answers = Vec::with_capacity(ids.len());
        for batch in ids.chunks(CHUNK_BATCH) {
            let hashes: Vec<String> = batch.iter().map(ChunkId::hex).collect();
            let body = serde_json::to_vec(&hashes).map_err(|e| corrupt(&self.peer, e))?;
            let reply = self.call("POST", "/peer/v1/chunks/has", &body)?;
            let found: Vec<bool> = serde_json::from_slice(&reply).map_err(|e| corrupt(&self.peer, e))?;
            if found.len() != batch.len() {
                return Err(corrupt(&self.peer, "the answer to has-chunks has the wrong length"));
            }
            answers.extend(found);
        }
        Ok(answers)
    }

    fn get_chunk(&self, id: &ChunkId) -> Result<Vec<u8>, RemoteError> {
        self.get_chunks(std::slice::from_ref(id)).pop().unwrap_or_else(|| Err(corrupt(&self.peer, "no answer")))
    }

    fn put_chunk(&self, _id: &ChunkId, _bytes: &[u8]) -> Result<(), RemoteError> {
        Err(RemoteError::Unauthorized(format!(
            "peer {}: racks pull from each other; a peer accepts no pushes",
            self.peer
        )))
    }

    fn list_volumes(&self) -> Result<Vec<String>, RemoteError> {
        Ok(Vec::new())
    }

    fn list_volume_snapshots(&self, volume: &str) -> Result<Vec<u64>, RemoteError> {
        let body = self.call("GET", &format!("/peer/v1/volumes/{volume}/snapshots"), &[])?;
        serde_json::from_slice(&body).map_err(|e| corrupt(&self.peer, e))
    }

    fn get_volume_snapshot(&self, volume: &str, seq: u64) -> Result<VolumeSnapshot, RemoteError> {
        let body = self.call("GET", &format!("/peer/v1/volumes/{volume}/snapshots/{seq}"), &[])?;
        let snapshot = VolumeSnapshot::decode(&body).map_err(|e| corrupt(&self.peer, e))?;
        if snapshot.volume != volume || snapshot.seq != seq {
            return Err(corrupt(
                &self.peer,
                format!("asked for {volume} {seq}, got {} {}", snapshot.volume, snapshot.seq),
            ));
        }
        Ok(snapshot)
    }

    fn accepts_pushes(&self) -> bool {
        false
    }

    fn put_volume_snapshot(&self, _snapshot: &VolumeSnapshot) -> Result<(), RemoteError> {
        Err(RemoteError::Unauthorized(format!(
            "peer {}: racks pull from each other; a peer accepts no pushes",
            self.peer
        )))
    }

    /// One request per [`CHUNK_BATCH`] chunks. The bytes are returned as received: the caller
    /// checks each against its id.
    fn get_chunks(&self, ids: &[ChunkId]) -> Vec<Result<Vec<u8>, RemoteError>> {
        let mut out = Vec::with_capacity(ids.len());
        for batch in ids.chunks(CHUNK_BATCH) {
            let hashes: Vec<String> = batch.iter().map(ChunkId::hex).collect();
            let answer = serde_json::to_vec(&hashes)
                .map_err(|e| corrupt(&self.peer, e))
                .and_then(|body| self.call("POST", "/peer/v1/chunks", &body))
                .and_then(|reply| split_frames(&reply, batch.len()).map_err(|e| corrupt(&self.peer, e)));
            match answer {
                Ok(frames) => {
                    if let Some(sink) = &self.tally {
                        let mut tally = ChunkTally::default();
                        for (id, bytes) in batch.iter().zip(&frames) {
                            if id.matches(bytes) {
                                tally.chunks += 1;
                                tally.bytes += bytes.len() as u64;
                            } else {
                                tally.corrupt += 1;
                            }
                        }
                        sink(tally);
                    }
                    out.extend(frames.into_iter().map(Ok));
                }
                Err(error) => out.extend(batch.iter().map(|_| Err(error.clone()))),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_frames_split_exactly_or_not_at_all() {
        let mut body = Vec::new();
        for chunk in [&b"abc"[..], b"", b"defgh"] {
            body.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            body.extend_from_slice(chunk);
        }
        assert_eq!(split_frames(&body, 3), Ok(vec![b"abc".to_vec(), Vec::new(), b"defgh".to_vec()]));
        assert!(split_frames(&body, 2).is_err(), "bytes left over");
        assert!(split_frames(&body[..body.len() - 1], 3).is_err(), "cut short");
        assert!(split_frames(&body, 4).is_err(), "a missing frame");
    }
}
