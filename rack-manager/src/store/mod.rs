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

    fn instances(&self) -> Result<Vec<InstanceRecord>>;
    fn instance(&self, id: &str) -> Result<Option<InstanceRecord>>;
    /// Writes every record in one transaction.
    fn update_instances(&mut self, instances: &[InstanceRecord]) -> Result<()>;
    /// Removes an instance, and its deployment when it was the last one; returns whether it existed.
    fn remove_instance(&mut self, id: &str) -> Result<bool>;

    /// The next value of a named counter, starting at 1; never repeats, even across restarts.
    fn next_sequence(&mut self, name: &str) -> Result<u64>;

    /// Compare-and-swap, per pair: writes `new` only if the stored record still equals
    /// `expected`, all pairs in one round trip; returns which were written. This is how a
    /// decision made on a read (a placement, a started run) is claimed: two schedulers can never
    /// both act on the same read.
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
