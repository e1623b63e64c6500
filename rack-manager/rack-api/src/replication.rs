//! `GET /v1/replication`: how far this rack's images and volumes are replicated
//! (`rack-manager replicate status`).

use serde::{Deserialize, Serialize};

/// The whole picture: remotes, images, volumes and what has moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    /// The remotes images are fetched from and pushed to (`s3://bucket/racks/a`, `peer rack-b`).
    pub remotes: Vec<String>,
    /// The background fetch's cap in bytes per second; `None`: no cap.
    pub trickle_rate: Option<u64>,
    pub images: Vec<ImageReplication>,
    pub volumes: Vec<VolumeReplication>,
    pub totals: ReplicationTotals,
}

/// One image: how much of it is on this rack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageReplication {
    pub id: String,
    pub name: String,
    pub version: String,
    /// Bytes of chunk data the image has (each distinct chunk once).
    pub total_bytes: u64,
    /// Of those, bytes stored on this rack.
    pub local_bytes: u64,
    /// Bytes not yet here: fetched when the image is launched, or trickled in the background.
    pub behind_bytes: u64,
    /// Since when the rack has known the image without holding all of it (0 when complete).
    pub lag_ms: u64,
}

/// One volume this rack owns and snapshots to its remotes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeReplication {
    pub name: String,
    /// The volume file's size on this rack.
    pub local_bytes: u64,
    /// Bytes changed since the newest snapshot every remote holds (whole 64 KiB chunks).
    pub behind_bytes: u64,
    /// The newest snapshot every remote holds, if any.
    pub snapshot_seq: Option<u64>,
    /// When that snapshot was taken, ms since the Unix epoch.
    pub snapshot_ms: Option<u64>,
    /// How old the remotes' copy is: now minus `snapshot_ms` (`None`: never replicated).
    pub lag_ms: Option<u64>,
    /// How often a snapshot is taken: the lag stays below about this plus one transfer.
    pub snapshot_every_ms: u64,
    /// Why the last snapshot failed, if it did.
    pub error: Option<String>,
}

/// What has moved since the manager started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationTotals {
    pub chunks_fetched: u64,
    pub bytes_fetched: u64,
    pub chunks_pushed: u64,
    pub bytes_pushed: u64,
    /// Chunks a remote sent whose bytes did not match their hash (dropped, fetched again).
    pub corrupt_chunks: u64,
    /// Image metas refused because no trusted key signed them.
    pub refused_images: u64,
}
