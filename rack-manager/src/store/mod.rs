//! The manager's state: hosts, images, deployments (desired state) and instances (observed state).
//!
//! [`StateStore`] is the only way the rest of the manager reads or writes state, so a replicated
//! backend for a cluster of managers can replace [`sqlite::SqliteStore`] (the embedded default)
//! without touching the API or the reconciler. Every write that changes more than one row is one
//! transaction: a `kill -9` at any point leaves either the old state or the new one.
//!
//! Image bytes are not in the store: the verified `.mast` files live in the data directory under
//! their image id (see [`crate::datadir::DataDir`]); the store keeps their metadata.
//!
//! [`etcd::EtcdStore`] keeps a rack's state on etcd instead, for racks managed by more than one
//! machine: liveness by leases, claims by compare-and-swap, a change feed by watches, and one
//! elected scheduler per rack (see `docs/rack-state.md`).

#[cfg(test)]
mod contract;
pub mod etcd;
pub mod sqlite;

use rack_api::{Deployment, Desired, HostState, Image, InstanceState, PortForward, agent::RunRef};
use serde::{Deserialize, Serialize};

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state database failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the state database holds a value this version cannot read ({what}): {detail}")]
    Corrupt { what: String, detail: String },
    #[error("etcd failed: {0}")]
    Etcd(String),
    #[error("{0}")]
    Unreachable(String),
    /// etcd's access control or TLS refused this process, or its settings for them are wrong:
    /// the message says what to do.
    #[error("{0}")]
    Access(String),
    #[error("{0}")]
    Conflict(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A host as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub name: String,
    /// The agent's URL; `None` for the manager's built-in agent.
    pub address: Option<String>,
    pub launcher: String,
    pub arches: Vec<String>,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub state: HostState,
    /// The manager's seal on (name, address), written by its join path only: see
    /// [`HostRecord::is_joined`]. `None` for built-in hosts and records nobody joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_seal: Option<String>,
}

/// The key that seals host records: derived from the rack's API token, which every manager of the
/// rack holds and the store never sees. Whoever can write the store (anyone who reaches an etcd
/// without auth) cannot compute a seal, so the hosts it adds are never contacted: the manager's
/// requests, and the credentials they carry, go only to agents that joined through a manager.
#[derive(Clone)]
pub struct JoinKey([u8; 32]);

impl std::fmt::Debug for JoinKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinKey(..)")
    }
}

impl JoinKey {
    pub fn from_token(token: &str) -> JoinKey {
        JoinKey(blake3::derive_key("mast rack-manager 2026 host record join seal", token.as_bytes()))
    }

    /// The seal of `fields`, the first naming what is sealed: each field length-prefixed, so no
    /// two lists hash the same input.
    fn mac(&self, fields: &[&str]) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        for field in fields {
            hasher.update(&(field.len() as u64).to_le_bytes());
            hasher.update(field.as_bytes());
        }
        hasher.finalize()
    }

    fn seal(&self, name: &str, address: &str) -> blake3::Hash {
        self.mac(&["host", name, address])
    }

    /// `url` with the seal of a scheduler's API URL appended (`URL SEAL`): what an elected
    /// manager publishes, so that a standby names only a scheduler a manager elected.
    pub fn seal_scheduler(&self, url: &str) -> String {
        format!("{url} {}", self.mac(&["scheduler", url]).to_hex())
    }

    /// The URL of a value made by [`JoinKey::seal_scheduler`] under this key; `None` for any other.
    pub fn open_scheduler<'a>(&self, value: &'a str) -> Option<&'a str> {
        let (url, seal) = value.split_once(' ')?;
        blake3::Hash::from_hex(seal).is_ok_and(|seal| seal == self.mac(&["scheduler", url])).then_some(url)
    }
}

impl HostRecord {
    /// The record with this manager's seal on its name and address: only the join path calls
    /// this, after the agent proved it holds the rack's credential.
    pub fn sealed(self, key: &JoinKey) -> HostRecord {
        let join_seal = self.address.as_deref().map(|address| key.seal(&self.name, address).to_hex().to_string());
        HostRecord { join_seal, ..self }
    }

    /// Whether this remote host joined through a manager of this rack: its seal matches its name
    /// and address under `key`. The manager contacts no other address from the store.
    pub fn is_joined(&self, key: &JoinKey) -> bool {
        let (Some(address), Some(seal)) = (&self.address, &self.join_seal) else { return false };
        // `Hash`'s equality is constant-time.
        blake3::Hash::from_hex(seal).is_ok_and(|seal| seal == key.seal(&self.name, address))
    }
}

/// An instance as the store keeps it: the API's view plus what supervision needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub id: String,
    pub deployment: String,
    pub host: String,
    pub desired: Desired,
    pub state: InstanceState,
    pub pid: Option<u32>,
    /// The process's start time (clock ticks since boot), so a reused pid is never adopted.
    pub start_ticks: Option<u64>,
    /// Where the current run's console output starts in the log file.
    pub log_offset: u64,
    /// Restarts since creation.
    pub restarts: u32,
    /// Consecutive failed runs: the exponent of the backoff and what `max_restarts` limits.
    pub failures: u32,
    pub exit_status: Option<i32>,
    pub ports: Vec<PortForward>,
    pub memory_mib: u32,
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    /// When a backed-off instance may be started again.
    pub next_start_ms: Option<u64>,
    pub message: Option<String>,
}

impl InstanceRecord {
    /// A new instance of `deployment` on `host`, meant to run but not started yet.
    pub fn pending(id: String, deployment: String, host: String, memory_mib: u32, created_ms: u64) -> InstanceRecord {
        InstanceRecord {
            id,
            deployment,
            host,
            desired: Desired::Running,
            state: InstanceState::Pending,
            pid: None,
            start_ticks: None,
            log_offset: 0,
            restarts: 0,
            failures: 0,
            exit_status: None,
            ports: Vec::new(),
            memory_mib,
            created_ms,
            started_ms: None,
            next_start_ms: None,
            message: None,
        }
    }

    /// The run this record names, as agents are asked about it: by pid and start time, so a
    /// reused pid is never taken for it.
    pub fn run_ref(&self) -> RunRef {
        RunRef { instance: self.id.clone(), pid: self.pid, start_ticks: self.start_ticks, log_offset: self.log_offset }
    }
}

/// State behind the manager. Implementations make each call atomic.
pub trait StateStore: Send {
    fn upsert_host(&mut self, host: &HostRecord) -> Result<()>;
    fn hosts(&self) -> Result<Vec<HostRecord>>;
    /// Returns whether the host existed.
    fn set_host_state(&mut self, name: &str, state: HostState) -> Result<bool>;
    fn remove_host(&mut self, name: &str) -> Result<bool>;

    fn put_image(&mut self, image: &Image) -> Result<()>;
    fn images(&self) -> Result<Vec<Image>>;
    fn remove_image(&mut self, id: &str) -> Result<bool>;

    /// Records a deployment and its instances together.
    fn create_deployment(&mut self, deployment: &Deployment, instances: &[InstanceRecord]) -> Result<()>;
    fn deployments(&self) -> Result<Vec<Deployment>>;
    /// Adds new instances to the existing deployment `deployment` (`scale` up), all or none;
    /// a conflict if the deployment is gone or an instance id exists.
    fn add_instances(&mut self, deployment: &str, instances: &[InstanceRecord]) -> Result<()>;

    fn instances(&self) -> Result<Vec<InstanceRecord>>;
    fn instance(&self, id: &str) -> Result<Option<InstanceRecord>>;
    /// Removes an instance, and its deployment when it was the last one; returns whether it existed.
    fn remove_instance(&mut self, id: &str) -> Result<bool>;

    /// The next value of a named counter, starting at 1; never repeats, even across restarts.
    fn next_sequence(&mut self, name: &str) -> Result<u64>;

    /// Compare-and-swap, per pair: writes `new` only if the stored record still equals
    /// `expected`, all pairs in one round trip; returns which were written. This is how a
    /// decision made on a read (a placement, a started run) is claimed: two schedulers can never
    /// both act on the same read. It is the only way an existing instance is changed: the rack
    /// core and the reconciler read, act without the store, then swap.
    fn swap_instances(&mut self, swaps: &[(InstanceRecord, InstanceRecord)]) -> Result<Vec<bool>>;

    /// Keeps host `name` marked alive for as long as this process holds the store open (etcd: a
    /// key on this process's lease, gone when it stops renewing it). Nothing to do where the
    /// store lives and dies with the one process that uses it (SQLite).
    fn hold_liveness(&mut self, _name: &str) -> Result<()> {
        Ok(())
    }

    /// A feed of changes made by anyone, to wake the reconciler; `None` where this process makes
    /// every change itself (SQLite).
    fn changes(&self) -> Result<Option<std::sync::mpsc::Receiver<Change>>> {
        Ok(None)
    }
}

/// One change to the store, from its change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `key` (relative to the rack, e.g. `instances/hello-1`) was written at `revision`.
    Put { key: String, revision: i64 },
    /// `key` was deleted (or its lease expired) at `revision`.
    Delete { key: String, revision: i64 },
    /// The feed lost history (etcd compacted it while disconnected): re-read everything.
    Resync,
}

/// Creation order, and `hello-2` before `hello-10` among instances created together.
pub fn sort_instances(instances: &mut [InstanceRecord]) {
    instances.sort_by_cached_key(|i| {
        let number = i.id.rsplit('-').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(u64::MAX);
        (i.created_ms, number, i.id.clone())
    });
}
