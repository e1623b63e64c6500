//! Peering and failover (`/v1/identity`, `/v1/peers`, `/v1/failover/...`): the rack's identity,
//! the peers it trusts, and which deployments fail over where (`rack-manager identity`,
//! `peer add|ls|rm|probe`, `failover plan|status|release`).
//!
//! These routes answer 409 `conflict` on a rack started without `serve --peer-listen`.

use serde::{Deserialize, Serialize};

/// `GET /v1/identity` (and `rack-manager identity`, read from the data directory): what another
/// rack needs to add this one as a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityView {
    /// The rack's name, fixed at its first start.
    pub name: String,
    /// Its peer URL (`https://HOST:PORT`), once its peer listener is up.
    pub peer_url: Option<String>,
    /// SHA-256 of its certificate, 64 hex digits: what peers pin.
    pub fingerprint: String,
}

/// A peer to trust (`POST /v1/peers`), as the rack keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// The peer's name, as its `rack-manager identity` prints it.
    pub name: String,
    /// The peer's `--peer-listen` address: `https://HOST:PORT`.
    pub url: String,
    /// SHA-256 of the peer's certificate, hex.
    pub fingerprint: String,
    /// The image signing keys (Ed25519 public keys, hex) whose images this rack runs when it takes
    /// over the peer's deployments. None: this rack takes nothing over from the peer.
    #[serde(default)]
    pub image_keys: Vec<String>,
}

/// A configured peer and how the link to it is doing (`GET /v1/peers`; `POST /v1/peers` answers
/// the one added).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    pub name: String,
    pub url: String,
    pub fingerprint: String,
    /// The keys whose images this rack runs when it takes over the peer's deployments.
    #[serde(default)]
    pub image_keys: Vec<String>,
    /// When this rack last received the peer's heartbeat (ms since the Unix epoch).
    pub last_heartbeat_ms: Option<u64>,
    /// Whether that heartbeat is within the lease.
    pub up: bool,
    /// Whether this rack's last heartbeat to the peer was answered.
    pub reachable: bool,
    pub last_error: Option<String>,
    pub images_replicated: u64,
    pub chunks_fetched: u64,
    pub chunks_reused: u64,
    pub bytes_fetched: u64,
    pub corrupt_chunks: u64,
    /// Images of the peer's that were refused (bad signature, untrusted key).
    pub refused_images: u64,
    /// Bytes of volume snapshots fetched from the peer (changed chunks only).
    pub volume_bytes_fetched: u64,
}

/// An image a peer holds: an entry of the peer protocol's image list, which `peer probe` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerImage {
    pub id: String,
    pub name: String,
}

/// `POST /v1/failover/plans`: the racks a deployment fails over to, in order of preference (the
/// answer echoes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPlanRequest {
    pub deployment: String,
    /// Peer names; each must be a configured peer.
    pub failover_to: Vec<String>,
}

/// `GET /v1/failover/plan`: this rack's plans, its peers' plans that name it, and its policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanView {
    pub outgoing: Vec<OutgoingPlan>,
    pub incoming: Vec<IncomingPlan>,
    /// This rack's limits on what a peer's plan may start here.
    #[serde(default)]
    pub policy: Option<TakeoverLimits>,
    #[serde(default)]
    pub trust: Vec<PeerTrust>,
}

/// One of this rack's deployments and the racks it fails over to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingPlan {
    pub deployment: String,
    pub image_name: String,
    pub failover_to: Vec<String>,
}

/// A peer's deployment that may fail over to this rack: what the peer asks, and whether this
/// rack's policy would grant it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingPlan {
    pub peer: String,
    pub deployment: String,
    pub image_name: String,
    #[serde(default)]
    pub image_id: String,
    /// The key that signed the image, when this rack holds it.
    #[serde(default)]
    pub signer: Option<String>,
    #[serde(default)]
    pub replicas: u32,
    #[serde(default)]
    pub memory_mib: u32,
    #[serde(default)]
    pub vcpus: u32,
    #[serde(default)]
    pub args: Vec<String>,
    pub failover_to: Vec<String>,
    pub peer_up: bool,
    /// Whether this rack is the one to take it over if the peer went down now (first alive rack
    /// in its list), policy aside.
    pub would_take_over: bool,
    /// Whether this rack's policy allows it now; if not, why.
    #[serde(default)]
    pub allowed: bool,
    #[serde(default)]
    pub refused_because: Option<String>,
    /// Whether the image is here in full.
    pub image_complete: bool,
    pub has_volume: bool,
    /// When the newest volume snapshot was taken on the peer (ms since the Unix epoch).
    pub snapshot_taken_ms: Option<u64>,
    /// How old the newest snapshot is now.
    pub volume_lag_ms: Option<u64>,
}

/// A configured peer and the image keys trusted for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTrust {
    pub peer: String,
    pub image_keys: Vec<String>,
}

/// The limits `serve --takeover-*` put on what a down peer's plan may start on this rack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeoverLimits {
    /// The most replicas of one peer's deployment this rack takes over.
    pub takeover_max_replicas: u32,
    /// The most instances this rack runs for one peer, over all it took over from it.
    pub takeover_max_instances: u32,
    /// The most guest memory per instance of a taken-over deployment, in MiB.
    pub takeover_max_memory_mib: u32,
    /// The most vCPUs per instance of a taken-over deployment.
    pub takeover_max_vcpus: u32,
    /// Whether boot arguments other than the image manifest's are accepted.
    pub takeover_custom_args: bool,
}

/// A deployment this rack took over from a down peer (`GET /v1/failover/status` lists them;
/// `POST /v1/failover/release/{peer}/{deployment}` answers the one handed back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Takeover {
    pub peer: String,
    /// The deployment's id on the peer.
    pub deployment: String,
    pub image_id: String,
    pub image_name: String,
    /// The replicas the plan asked for (counted against `serve --takeover-max-instances`).
    #[serde(default)]
    pub replicas: u32,
    /// Increases with every takeover this rack makes (0: refused, nothing was started).
    pub epoch: u64,
    /// The deployment this rack created to run it.
    pub local_deployment: Option<String>,
    /// When this rack last heard from the peer, and when its lease expired.
    pub peer_last_heartbeat_ms: u64,
    pub lease_expired_ms: u64,
    /// When the first local instance was running.
    pub serving_ms: Option<u64>,
    /// `serving_ms - lease_expired_ms`.
    pub recovery_ms: Option<u64>,
    /// When the volume snapshot used was taken on the peer, and the data-loss window:
    /// `peer_last_heartbeat_ms - snapshot_taken_ms`.
    pub snapshot_taken_ms: Option<u64>,
    pub lag_ms: Option<u64>,
    /// A bound on the data actually lost: the lag plus one heartbeat interval, since the peer
    /// may have lived (and acknowledged writes) until its next heartbeat was due.
    #[serde(default)]
    pub loss_window_ms: Option<u64>,
    pub volume_path: Option<String>,
    /// `starting`, `running`, `failed`, or `refused` (by this rack's policy; see `message`).
    pub state: String,
    pub message: Option<String>,
}
