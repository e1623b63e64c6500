//! Rack-to-rack peering and failover.
//!
//! Each rack has an identity ([`identity`]): a key and a self-signed certificate, pinned by peers
//! through its SHA-256 fingerprint. Racks talk over mutual TLS ([`tls`]) on a listener of their
//! own (`serve --peer-listen`), separate from the rack API: the peer protocol ([`server`],
//! [`wire`]) serves images (headers and chunks), volume snapshots and heartbeats, and only to
//! configured peers. [`sync`] sends heartbeats and pulls peers' images (only the chunks this rack
//! lacks; every image header is signature-checked before a chunk is fetched, and the assembled
//! image goes through the same verified push as `image push`). [`failover`] watches leases and
//! takes over a down peer's deployments that name this rack; a rack that comes back learns of the
//! takeover from the heartbeat reply and stops its own copies, so nothing runs twice.
//!
//! A pinned peer is authenticated, not trusted with everything ([`policy`]): it may fence only
//! this rack's deployments whose failover plan names it, have this rack run only images signed by
//! a key trusted for it, within this rack's takeover limits, and every name it sends is checked
//! before it is used. A peer is down only when unreachable both ways (see [`Node::peer_is_alive`]).
//!
//! ```text
//! <data-dir>/peer/name, identity.key (0600), identity.crt   this rack's identity
//! <data-dir>/peer/address           the peer URL, written once the listener is up
//! <data-dir>/peer/peers.json        configured peers: name, URL, pinned fingerprint, image keys
//! <data-dir>/peer/plans.json        this rack's deployments → the racks they fail over to
//! <data-dir>/peer/takeovers.json    deployments this rack took over from down peers (or refused to)
//! <data-dir>/peer/replicas/<rack>/<deployment>.img   a peer's latest volume snapshot (and .json: when)
//! <data-dir>/peer/partitioned       test hook: while it exists, no peer traffic in or out
//! <data-dir>/volumes/<deployment>.img   a deployment's volume (what snapshots copy)
//! ```

pub mod failover;
pub mod identity;
mod local;
pub mod policy;
pub mod remote;
pub mod server;
pub mod sync;
pub mod tls;
pub mod wire;

use std::{
    collections::HashMap,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, RwLock},
    time::Duration,
};

use anyhow::Context;
use rack_api::peers::{PeerEntry, Takeover};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use self::{
    identity::{Fingerprint, Identity},
    tls::TrustedPeers,
    wire::PeerClient,
};
use crate::{datadir::DataDir, rack::Rack};

/// Peering options of `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct PeerArgs {
    /// Address of the peer listener (mutual TLS, for other racks). Without it the rack has no peers.
    #[arg(long, value_name = "ADDR")]
    pub peer_listen: Option<SocketAddr>,
    /// This rack's name, fixed at its first start [default: rack]: `serve --rack` (alias
    /// `--rack-name`), which also names the rack's state in etcd.
    #[arg(skip)]
    pub rack_name: Option<String>,
    /// How often to send each peer a heartbeat, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub heartbeat_ms: u64,
    /// A peer whose heartbeat is this old is down and its deployments fail over, in milliseconds.
    #[arg(long, default_value_t = 3000, value_name = "MS")]
    pub lease_ms: u64,
    /// Test hook: damage the first N chunks this rack serves to peers, as a bad link would.
    #[arg(long, hide = true, default_value_t = 0)]
    pub test_corrupt_chunks: u64,
    #[command(flatten)]
    pub takeover: policy::TakeoverPolicy,
}

/// The peer directory inside a data directory.
pub fn peer_dir(data: &DataDir) -> PathBuf {
    data.root().join("peer")
}

/// What a rack tells each peer in every heartbeat: it is alive, and these of its deployments
/// fail over to that peer (possibly among others).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    pub rack: String,
    pub sent_ms: u64,
    pub plans: Vec<PlanSpec>,
}

/// A deployment as a peer needs it to start it in the owner's place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSpec {
    pub deployment: String,
    pub image_id: String,
    pub image_name: String,
    pub replicas: u32,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub args: Vec<String>,
    pub restart: rack_api::RestartWhen,
    /// The racks it may fail over to, in order of preference.
    pub failover_to: Vec<String>,
    /// Whether the deployment has a volume to replicate (see [`Node::volume_path`]).
    pub has_volume: bool,
}

/// The answer to a heartbeat: which of the sender's deployments this rack has taken over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub rack: String,
    pub takeovers: Vec<TakeoverNotice>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TakeoverNotice {
    pub deployment: String,
    pub epoch: u64,
    pub at_ms: u64,
}

/// What this rack knows of a peer at run time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PeerRuntime {
    /// When this rack last received the peer's heartbeat (local clock, ms since the epoch).
    pub last_heartbeat_ms: Option<u64>,
    /// When this rack's last heartbeat to the peer was answered.
    pub last_reply_ms: Option<u64>,
    pub last_error: Option<String>,
    /// The peer's deployments that may fail over to this rack.
    pub plans: Vec<PlanSpec>,
    pub images_replicated: u64,
    pub chunks_fetched: u64,
    pub chunks_reused: u64,
    pub bytes_fetched: u64,
    pub corrupt_chunks: u64,
    pub refused_images: u64,
    /// Latest volume snapshot per deployment: when it was taken on the peer.
    pub snapshots: HashMap<String, u64>,
    /// Volume bytes fetched: only the 64 KiB chunks that changed since the last snapshot.
    #[serde(default)]
    pub volume_bytes_fetched: u64,
}

/// The latest snapshot of a volume this rack served, with its chunks: a peer fetches the chunks
/// it lacks right after listing the snapshot, and the file may have changed by then.
#[derive(Debug)]
pub struct ServedVolume {
    pub snapshot: replica::VolumeSnapshot,
    pub chunks: HashMap<replica::ChunkId, Vec<u8>>,
}

/// The peering half of a running manager.
pub struct Node {
    pub identity: Identity,
    pub dir: PathBuf,
    pub data: DataDir,
    pub url: String,
    pub heartbeat: Duration,
    pub lease: Duration,
    pub rack: Arc<Rack>,
    trusted: TrustedPeers,
    peers: Mutex<Vec<PeerEntry>>,
    runtime: Mutex<HashMap<String, PeerRuntime>>,
    plans: Mutex<HashMap<String, Vec<String>>>,
    takeovers: Mutex<Vec<Takeover>>,
    /// Serialises image fetches, so two sync passes do not fetch the same image twice.
    fetching: Mutex<()>,
    /// The peers whose remote is registered with the rack's replicator, with the URL and
    /// fingerprint it was made for.
    registered_remotes: Mutex<HashMap<String, String>>,
    pub corrupt_budget: std::sync::atomic::AtomicU64,
    /// What a peer's plan may ask of this rack (`serve --takeover-*`).
    pub policy: policy::TakeoverPolicy,
    /// Takeover notices from peers that this rack ignored (the deployment does not fail over to
    /// that peer): logged once each, not at every heartbeat.
    ignored_notices: Mutex<std::collections::HashSet<(String, String)>>,
    pub served_volumes: Mutex<HashMap<String, Arc<ServedVolume>>>,
    pub volume_seq: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("name", &self.identity.name).field("url", &self.url).finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Node {
    pub fn peers(&self) -> Vec<PeerEntry> {
        lock(&self.peers).clone()
    }

    pub fn runtime(&self) -> MutexGuard<'_, HashMap<String, PeerRuntime>> {
        lock(&self.runtime)
    }

    pub fn plans(&self) -> HashMap<String, Vec<String>> {
        lock(&self.plans).clone()
    }

    pub fn takeovers(&self) -> MutexGuard<'_, Vec<Takeover>> {
        lock(&self.takeovers)
    }

    pub fn save_takeovers(&self, takeovers: &[Takeover]) -> anyhow::Result<()> {
        save_json(&self.dir.join("takeovers.json"), &takeovers)
    }

    /// The peer whose certificate has this fingerprint.
    pub fn peer_named_by(&self, fingerprint: &Fingerprint) -> Option<String> {
        self.trusted.read().unwrap_or_else(|p| p.into_inner()).get(fingerprint).cloned()
    }

    pub fn client(&self, peer: &PeerEntry, timeout: Duration) -> anyhow::Result<PeerClient> {
        let pinned = identity::parse_fingerprint(&peer.fingerprint).map_err(anyhow::Error::msg)?;
        PeerClient::new(&self.identity, &peer.url, pinned, timeout)
    }

    /// Test hook: while `<data-dir>/peer/partitioned` exists, this rack neither sends nor
    /// answers peer traffic, as if the network between racks were cut.
    pub fn partitioned(&self) -> bool {
        self.dir.join("partitioned").exists()
    }

    pub fn add_peer(&self, entry: PeerEntry) -> anyhow::Result<()> {
        identity::validate_name(&entry.name).map_err(anyhow::Error::msg)?;
        let mut image_keys = Vec::new();
        for key in &entry.image_keys {
            let parsed: images::keys::PublicKey = key.parse().map_err(|_| {
                anyhow::anyhow!(
                    "{key:?} is not an image signing key: give its 64 hex digits (`cargo xtask keygen` prints it)"
                )
            })?;
            let hex = parsed.to_string();
            if !image_keys.contains(&hex) {
                image_keys.push(hex);
            }
        }
        anyhow::ensure!(entry.name != self.identity.name, "{:?} is this rack's own name", entry.name);
        let fingerprint = identity::parse_fingerprint(&entry.fingerprint).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            fingerprint != self.identity.fingerprint(),
            "that fingerprint is this rack's own certificate's"
        );
        anyhow::ensure!(
            entry.url.starts_with("https://") && entry.url.len() > "https://".len(),
            "{:?} is not a peer URL: give https://HOST:PORT (the other rack's `rack-manager identity`)",
            entry.url
        );
        let mut peers = lock(&self.peers);
        if let Some(other) = peers
            .iter()
            .find(|p| p.name != entry.name && identity::parse_fingerprint(&p.fingerprint) == Ok(fingerprint))
        {
            anyhow::bail!("peer {:?} already has that fingerprint", other.name);
        }
        let mut next = peers.clone();
        next.retain(|p| p.name != entry.name);
        next.push(PeerEntry { fingerprint: hex::encode(fingerprint), image_keys, ..entry });
        next.sort_by(|a, b| a.name.cmp(&b.name));
        save_json(&self.dir.join("peers.json"), &next)?;
        *peers = next;
        self.refresh_trust(&peers);
        Ok(())
    }

    /// Returns whether the peer was configured.
    pub fn remove_peer(&self, name: &str) -> anyhow::Result<bool> {
        let mut peers = lock(&self.peers);
        let mut next = peers.clone();
        next.retain(|p| p.name != name);
        if next.len() == peers.len() {
            return Ok(false);
        }
        save_json(&self.dir.join("peers.json"), &next)?;
        *peers = next;
        self.refresh_trust(&peers);
        lock(&self.runtime).remove(name);
        Ok(true)
    }

    fn refresh_trust(&self, peers: &[PeerEntry]) {
        let map = peers
            .iter()
            .filter_map(|p| Some((identity::parse_fingerprint(&p.fingerprint).ok()?, p.name.clone())))
            .collect();
        *self.trusted.write().unwrap_or_else(|p| p.into_inner()) = map;
    }

    pub fn set_plan(&self, deployment: &str, peers: Vec<String>) -> anyhow::Result<()> {
        let mut plans = lock(&self.plans);
        let mut next = plans.clone();
        if peers.is_empty() {
            next.remove(deployment);
        } else {
            next.insert(deployment.to_owned(), peers);
        }
        save_json(&self.dir.join("plans.json"), &next)?;
        *plans = next;
        Ok(())
    }

    /// Whether `peer`'s heartbeat is current at `now_ms`.
    pub fn peer_is_up(&self, peer: &str, now_ms: u64) -> bool {
        lock(&self.runtime)
            .get(peer)
            .and_then(|r| r.last_heartbeat_ms)
            .is_some_and(|t| now_ms.saturating_sub(t) < self.lease.as_millis() as u64)
    }

    /// Whether `peer` is alive at `now_ms`: heard from either way within the lease (its heartbeat
    /// arrived, or it answered this rack's). A peer is **down** only when it is not alive: its
    /// heartbeats to this rack stopped **and** this rack's heartbeats to it go unanswered. A flood
    /// against either rack's peer port cuts one direction only, so it cannot make a healthy rack
    /// look down (and have its deployments taken over here, and then fenced there).
    pub fn peer_is_alive(&self, peer: &str, now_ms: u64) -> bool {
        lock(&self.runtime).get(peer).is_some_and(|r| alive(r, now_ms, self.lease.as_millis() as u64))
    }

    /// Whether this rack ignored, and logged, a takeover notice of `peer` for `deployment`
    /// already; records it if not.
    /// Bounded: past 1024 distinct notices, a flood of invented names is no longer logged.
    fn first_ignored_notice(&self, peer: &str, deployment: &str) -> bool {
        let mut ignored = lock(&self.ignored_notices);
        ignored.len() < 1024 && ignored.insert((peer.to_owned(), deployment.to_owned()))
    }

    /// Whether every byte of image `id` is here: its `.mast` file, or all its chunks in the chunk
    /// store. An image learned lazily (its meta only, e.g. from the cloud tier) is not complete.
    pub fn image_complete(&self, id: &str) -> bool {
        if self.data.image(id).exists() {
            return true;
        }
        let parsed = hex::decode(id).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
        parsed.is_some_and(|raw| {
            self.rack
                .replication
                .replicator
                .image_state(&images::artifact::ImageId(raw))
                .is_ok_and(|state| state.is_complete())
        })
    }

    /// The volume of a deployment of this rack that peers replicate: that of its first instance
    /// (by id) whose volume is on the manager's own host (`volumes/<deployment>/<instance>.img`,
    /// where the agent keeps it). None when it has none there: its image declares no volume, no
    /// instance has started yet, or its instances run on other hosts, whose agents keep their
    /// volumes in their own data directories.
    pub fn volume_path(&self, deployment: &str) -> Option<PathBuf> {
        let mut instances: Vec<String> = self
            .rack
            .store()
            .instances()
            .ok()?
            .into_iter()
            .filter(|i| i.deployment == deployment)
            .map(|i| i.id)
            .collect();
        instances.sort();
        instances.into_iter().map(|id| self.data.volume(deployment, &id)).find(|path| path.is_file())
    }

    /// Where this rack keeps its copy of `peer`'s latest snapshot of `deployment`'s volume. Both
    /// names come from the peer: checked again here, so no path ever leaves `peer/replicas/`.
    pub fn snapshot_path(&self, peer: &str, deployment: &str) -> anyhow::Result<PathBuf> {
        policy::check_name("rack", peer).map_err(anyhow::Error::msg)?;
        policy::check_name("deployment", deployment).map_err(anyhow::Error::msg)?;
        Ok(self.dir.join("replicas").join(peer).join(format!("{deployment}.img")))
    }
}

/// See [`Node::peer_is_alive`].
pub fn alive(state: &PeerRuntime, now_ms: u64, lease_ms: u64) -> bool {
    let fresh = |t: Option<u64>| t.is_some_and(|t| now_ms.saturating_sub(t) < lease_ms);
    fresh(state.last_heartbeat_ms) || fresh(state.last_reply_ms)
}

/// Starts peering: identity, the peer listener, and the heartbeat, replication and failover
/// loops. Before it returns, it asks every reachable peer which of this rack's deployments it
/// took over while this rack was away, and stops those here, so the reconciler that starts next
/// never runs a duplicate.
pub fn start(rack: &Arc<Rack>, args: &PeerArgs) -> anyhow::Result<Option<Arc<Node>>> {
    let Some(listen) = args.peer_listen else {
        return Ok(None);
    };
    anyhow::ensure!(
        args.heartbeat_ms > 0 && args.lease_ms > args.heartbeat_ms,
        "--lease-ms must exceed --heartbeat-ms"
    );
    let dir = peer_dir(&rack.dir);
    let identity = Identity::load_or_create(&dir, args.rack_name.as_deref())?;
    let peers: Vec<PeerEntry> = load_json(&dir.join("peers.json"))?.unwrap_or_default();
    let plans = load_json(&dir.join("plans.json"))?.unwrap_or_default();
    let takeovers = load_json(&dir.join("takeovers.json"))?.unwrap_or_default();
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen for peers on {listen} (pick another --peer-listen)"))?;
    let address = listener.local_addr().context("the peer listener's address")?;
    let node = Arc::new(Node {
        url: format!("https://{address}"),
        identity,
        data: rack.dir.clone(),
        dir: dir.clone(),
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        lease: Duration::from_millis(args.lease_ms),
        rack: rack.clone(),
        trusted: Arc::new(RwLock::new(HashMap::new())),
        peers: Mutex::new(peers.clone()),
        runtime: Mutex::new(HashMap::new()),
        plans: Mutex::new(plans),
        takeovers: Mutex::new(takeovers),
        fetching: Mutex::new(()),
        registered_remotes: Mutex::new(HashMap::new()),
        corrupt_budget: std::sync::atomic::AtomicU64::new(args.test_corrupt_chunks),
        policy: args.takeover.clone(),
        ignored_notices: Mutex::new(std::collections::HashSet::new()),
        served_volumes: Mutex::new(HashMap::new()),
        volume_seq: std::sync::atomic::AtomicU64::new(0),
    });
    node.refresh_trust(&peers);
    let config = tls::server_config(&node.identity, node.trusted.clone())?;
    server::spawn(node.clone(), listener, config);
    sync::fence_at_start(&node);
    sync::spawn(node.clone());
    failover::spawn(node.clone());
    let aside = dir.join(".address.tmp");
    fs::write(&aside, format!("{}\n", node.url))
        .and_then(|()| fs::rename(&aside, dir.join("address")))
        .context("writing the peer address")?;
    tracing::info!(
        "rack {} serves peers on {} (certificate fingerprint {})",
        node.identity.name,
        node.url,
        hex::encode(node.identity.fingerprint())
    );
    Ok(Some(node))
}

pub fn load_json<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{} is not valid JSON: fix or delete it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `value` as JSON atomically: a crash leaves the old file or the new one.
pub fn save_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).context("encoding JSON")?;
    write_atomically(path, &bytes)
}

pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let aside = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&aside)?;
        std::io::Write::write_all(&mut file, bytes)?;
        file.sync_all()?;
        fs::rename(&aside, path)
    })();
    result.with_context(|| format!("writing {}", path.display()))
}
