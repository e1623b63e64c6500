//! The rack core: the rack's state and every operation on it, whoever asks.
//!
//! The HTTP API ([`crate::daemon::api`]), the peer layer ([`crate::peer`]), the reconciler
//! ([`crate::reconcile`]) and background replication ([`crate::replication`]) all act through
//! [`Rack`]; none of them imports another. Operations return [`RackError`]s in the rack's own
//! terms, which each caller turns into what it speaks (an HTTP status, a log line).
//!
//! Every operation that talks to hosts follows the reconciler's pattern: read under the store
//! lock, release it, act (ask agents, which may be slow or gone), then write back with a
//! compare-and-swap on exactly what was read, re-reading if another writer got there first. So
//! a slow or frozen agent delays the operation that needs it, never `ps` or `host ls`.
//!
//! | module | operations |
//! |---|---|
//! | [`hosts`] | join, add, drain, remove; the hosts' view; placement candidates |
//! | [`images`] | push, find, remove; an image's bytes; assembling one from the chunk store |
//! | [`deployments`] | plan and deploy (also for a takeover, with a volume seed) |
//! | [`instances`] | list, stop/start/restart, remove, logs, stats; fencing deployments |
//! | [`image_store`] | the content-addressed image store the rack replicates |
//! | `trust` | the trusted keys: list, add, remove, live |
//! | [`scale`] | deployments by id or name; scaling one |
//! | [`place`] | placement as one call: which host each new replica goes to (on the `placement` engine) |

pub mod deployments;
mod error;
pub mod gates;
pub mod hosts;
pub mod image_store;
pub mod images;
pub mod instances;
pub mod place;
mod power;
pub mod scale;
mod trust;

use std::{
    collections::HashMap,
    sync::{Arc, Condvar, Mutex, MutexGuard, RwLock},
    time::Duration,
};

use rack_api::{Deployment, Image, Instance};

pub use self::error::{ErrorKind, RackError, Result};
use crate::{
    agent::HostAgent,
    datadir::DataDir,
    store::{InstanceRecord, StateStore, etcd::Election},
};

/// The rack: its state (the store), the agents that run its hosts, and its image store.
pub struct Rack {
    store: Mutex<Box<dyn StateStore>>,
    agents: RwLock<HashMap<String, Arc<dyn HostAgent>>>,
    pub dir: DataDir,
    pub trusted: crate::trust::Trust,
    /// The admin token: the manager's own; per-agent credentials are derived from it
    /// ([`crate::credentials`]) and it never leaves the manager.
    pub token: String,
    /// Join tokens minted here (`host join-token`), one-use.
    pub join_tokens: crate::credentials::JoinTokens,
    /// Scoped tokens minted here (`token create`).
    pub api_tokens: crate::api_tokens::ApiTokens,
    /// The hosts' power models and the rack's power budget.
    pub power: crate::power::PowerBook,
    /// The URL agents can fetch images from: the API's, unless it listens on every interface
    /// (0.0.0.0), where agents use the URL they joined with.
    pub image_source: Option<String>,
    /// The rack's scheduler election (etcd store only): only the leader places and reconciles.
    pub election: Option<Election>,
    /// The content-addressed image store and its replication (crate `replica`).
    pub replication: Arc<image_store::Replication>,
    wake: (Mutex<bool>, Condvar),
    /// On-demand instances' gates, as their hosts last reported them.
    pub gates: gates::GateReports,
}

impl std::fmt::Debug for Rack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rack").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// What a [`Rack`] is made of; see its fields.
pub struct RackParts {
    pub store: Box<dyn StateStore>,
    pub dir: DataDir,
    pub trusted: crate::trust::Trust,
    pub token: String,
    pub image_source: Option<String>,
    pub election: Option<Election>,
    pub replication: Arc<image_store::Replication>,
}

impl std::fmt::Debug for RackParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RackParts").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Rack {
    pub fn new(parts: RackParts) -> Rack {
        Rack {
            store: Mutex::new(parts.store),
            agents: RwLock::new(HashMap::new()),
            join_tokens: crate::credentials::JoinTokens::new(parts.dir.join_tokens_file()),
            api_tokens: crate::api_tokens::ApiTokens::new(parts.dir.api_tokens_file()),
            power: crate::power::PowerBook::open(parts.dir.root().join("power.json")),
            dir: parts.dir,
            trusted: parts.trusted,
            token: parts.token,
            image_source: parts.image_source,
            election: parts.election,
            replication: parts.replication,
            wake: (Mutex::new(false), Condvar::new()),
            gates: gates::GateReports::default(),
        }
    }

    /// The store, locked. Hold it only to read or write: never while an agent is asked anything.
    pub fn store(&self) -> MutexGuard<'_, Box<dyn StateStore>> {
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn agent(&self, host: &str) -> Option<Arc<dyn HostAgent>> {
        self.agents.read().unwrap_or_else(|p| p.into_inner()).get(host).cloned()
    }

    pub fn add_agent(&self, host: &str, agent: Arc<dyn HostAgent>) {
        self.agents.write().unwrap_or_else(|p| p.into_inner()).insert(host.to_owned(), agent);
    }

    pub fn remove_agent(&self, host: &str) {
        self.agents.write().unwrap_or_else(|p| p.into_inner()).remove(host);
    }

    /// Whether this manager places and reconciles: always with the embedded store, only while
    /// elected with etcd.
    pub fn is_scheduler(&self) -> bool {
        self.election.as_ref().is_none_or(Election::is_leader)
    }

    /// Refuses placement on a standby manager (etcd store), naming the rack's scheduler.
    pub fn require_scheduler(&self) -> Result<()> {
        let Some(election) = self.election.as_ref().filter(|_| !self.is_scheduler()) else { return Ok(()) };
        let leader = election.leader();
        Err(RackError::unavailable(
            "not_scheduler",
            match &leader {
                Some(url) => format!("this manager is a standby: the rack's scheduler is {url}"),
                None => "this manager is a standby and the rack has no scheduler right now".to_owned(),
            },
            match leader {
                Some(url) => format!("send placements to the scheduler (--manager {url})"),
                None => "retry in a few seconds: a standby takes over when the scheduler's lease expires".to_owned(),
            },
        ))
    }

    /// Asks the reconciler for a pass now rather than at its next tick.
    pub fn wake(&self) {
        let (flag, condvar) = &self.wake;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        condvar.notify_one();
    }

    /// Waits until woken or `timeout` passes.
    pub fn sleep(&self, timeout: Duration) {
        let (flag, condvar) = &self.wake;
        let guard = flag.lock().unwrap_or_else(|p| p.into_inner());
        let (mut guard, _) =
            condvar.wait_timeout_while(guard, timeout, |woken| !*woken).unwrap_or_else(|p| p.into_inner());
        *guard = false;
    }

    /// The agent of `host`, or the error that says it has none connected.
    fn connected_agent(&self, host: &str) -> Result<Arc<dyn HostAgent>> {
        self.agent(host).ok_or_else(|| {
            RackError::host_unreachable(format!("host {host} has no agent connected"), "start its agent again")
        })
    }
}

/// The API's view of an instance.
/// Its image's architecture and platform come from `images` (by id).
pub fn instance_view(
    record: &InstanceRecord,
    deployments: &HashMap<String, Deployment>,
    images: &HashMap<String, Image>,
) -> Instance {
    let deployment = deployments.get(&record.deployment);
    let image = deployment.and_then(|d| images.get(&d.image_id));
    Instance {
        id: record.id.clone(),
        deployment: record.deployment.clone(),
        image_name: deployment.map(|d| d.image_name.clone()).unwrap_or_default(),
        image_id: deployment.map(|d| d.image_id.clone()).unwrap_or_default(),
        host: record.host.clone(),
        desired: record.desired,
        state: record.state,
        pid: record.pid,
        restarts: record.restarts,
        exit_status: record.exit_status,
        ports: record.ports.clone(),
        memory_mib: record.memory_mib,
        created_ms: record.created_ms,
        started_ms: record.started_ms,
        message: record.message.clone(),
        arch: image.map(|i| i.arch.clone()).unwrap_or_default(),
        platform: image.map(|i| i.platform.clone()).unwrap_or_default(),
        gate: None,
    }
}

pub fn deployments_by_id(store: &dyn StateStore) -> crate::store::Result<HashMap<String, Deployment>> {
    Ok(store.deployments()?.into_iter().map(|d| (d.id.clone(), d)).collect())
}

pub fn images_by_id(store: &dyn StateStore) -> crate::store::Result<HashMap<String, Image>> {
    Ok(store.images()?.into_iter().map(|i| (i.id.clone(), i)).collect())
}
