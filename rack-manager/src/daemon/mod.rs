//! `rack-manager serve`: the manager daemon. It owns the store, the API and the reconciler, and,
//! unless told otherwise, a built-in agent for its own host, so one command runs a whole
//! single-machine rack.
//!
//! Startup order matters for crash safety: the store is opened and the agents are known before the
//! reconciler runs its first pass, which re-adopts every run that survived the previous daemon
//! (same pid **and** start time) and restarts the others by policy.

pub mod api;
pub mod http;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Condvar, Mutex, MutexGuard, RwLock},
    time::Duration,
};

use anyhow::Context;
use images::keys::{PublicKey, TrustedKeys};
use rack_api::{Deployment, HostState, Image, Instance};

use crate::{
    agent::{HostAgent, LocalAgent, RemoteAgent},
    datadir::DataDir,
    launcher::{
        Launcher,
        qemu::QemuLauncher,
        sim::SimLauncher,
        tender::{self, TenderConfig, TenderLauncher},
    },
    store::{
        HostRecord, InstanceRecord, StateStore,
        etcd::{Election, EtcdSettings, EtcdStore},
        sqlite::SqliteStore,
    },
};

/// Which launcher the built-in agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LauncherKind {
    /// QEMU: real VMs.
    Qemu,
    /// The tender: real VMs under Mast's minimal KVM monitor, one tap each (images built with
    /// `--platform tender`).
    Tender,
    /// Simulated: no VMs; for scale tests and trying placement.
    Sim,
}

/// Where the rack's state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// SQLite in the data directory: one machine manages the rack.
    Sqlite,
    /// etcd: managers on several machines share the rack; one is elected its scheduler.
    Etcd(EtcdSettings),
}

/// How `serve` was asked to run.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub store: StoreChoice,
    pub data_dir: std::path::PathBuf,
    pub listen: SocketAddr,
    pub trust: Vec<PublicKey>,
    pub launcher: LauncherKind,
    pub tender: TenderOptions,
    /// Run no built-in agent: only joined agents host instances.
    pub no_local_agent: bool,
    pub host_name: String,
    pub memory_mib: Option<u64>,
    pub vcpus: Option<u32>,
    /// With the sim launcher: this many simulated hosts instead of one.
    pub sim_hosts: u32,
    pub replication: crate::replication::ReplicationArgs,
    pub peer: crate::peer::PeerArgs,
}

/// The manager's shared state.
pub struct Rack {
    pub store: Mutex<Box<dyn StateStore>>,
    pub agents: RwLock<HashMap<String, Arc<dyn HostAgent>>>,
    pub dir: DataDir,
    pub trusted: TrustedKeys,
    pub token: String,
    /// The URL agents can fetch images from: the API's, unless it listens on every interface
    /// (0.0.0.0), where agents use the URL they joined with.
    pub image_source: Option<String>,
    /// The rack's scheduler election (etcd store only): only the leader places and reconciles.
    pub election: Option<Election>,
    /// The content-addressed image store and its replication (crate `replica`).
    pub replication: Arc<crate::replication::Replication>,
    /// Peering, when `serve --peer-listen` is given; set once at startup.
    pub peer: std::sync::OnceLock<Arc<crate::peer::Node>>,
    wake: (Mutex<bool>, Condvar),
}

impl std::fmt::Debug for Rack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rack").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Rack {
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
}

/// The API's view of an instance.
pub fn instance_view(record: &InstanceRecord, deployments: &HashMap<String, Deployment>) -> Instance {
    let deployment = deployments.get(&record.deployment);
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
    }
}

pub fn deployments_by_id(store: &dyn StateStore) -> crate::store::Result<HashMap<String, Deployment>> {
    Ok(store.deployments()?.into_iter().map(|d| (d.id.clone(), d)).collect())
}

pub fn images_by_id(store: &dyn StateStore) -> crate::store::Result<HashMap<String, Image>> {
    Ok(store.images()?.into_iter().map(|i| (i.id.clone(), i)).collect())
}

/// Memory this machine offers to instances by default: half of it.
fn default_memory_mib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(2 << 20);
    kib / 1024 / 2
}

/// vCPUs this machine offers by default: appliances sleep when idle, so 32 per core.
fn default_vcpus() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1) * 32
}

/// What this host offers, from flags or defaults.
pub fn capacity(memory_mib: Option<u64>, vcpus: Option<u32>) -> (u64, u32) {
    (memory_mib.unwrap_or_else(default_memory_mib), vcpus.unwrap_or_else(default_vcpus))
}

/// What the tender launcher is told on the command line.
#[derive(Debug, Clone, Default)]
pub struct TenderOptions {
    /// The `tender` binary [default: next to rack-manager].
    pub binary: Option<std::path::PathBuf>,
    /// Instances' links are cut from this range [default: [`hostnet::plan::DEFAULT_SUBNET`]].
    pub subnet: Option<hostnet::Subnet>,
}

/// The launcher of `kind` for an agent with its data in `dir`.
pub fn make_launcher(kind: LauncherKind, tender: &TenderOptions, dir: &DataDir) -> anyhow::Result<Arc<dyn Launcher>> {
    Ok(match kind {
        LauncherKind::Qemu => Arc::new(QemuLauncher::detect()),
        LauncherKind::Sim => Arc::new(SimLauncher::default()),
        LauncherKind::Tender => Arc::new(TenderLauncher::new(TenderConfig {
            binary: tender::find_binary(tender.binary.as_deref()).map_err(anyhow::Error::msg)?,
            subnet: tender.subnet.unwrap_or(hostnet::plan::DEFAULT_SUBNET),
            instances_dir: dir.root().join("instances"),
            trusted_keys: dir.trusted_keys_file(),
        })),
    })
}

/// Runs the daemon until it is killed.
pub fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let dir = DataDir::open(&config.data_dir)?;
    let _lock = dir.lock()?;
    let token = dir.token()?;
    let trusted = dir.trusted_keys(&config.trust)?;
    let (store, election): (Box<dyn StateStore>, _) = match &config.store {
        StoreChoice::Sqlite => {
            let store = SqliteStore::open(&dir.state_db())
                .with_context(|| format!("opening the state database {}", dir.state_db().display()))?;
            (Box::new(store), None)
        }
        StoreChoice::Etcd(settings) => {
            let store = EtcdStore::connect(settings)?;
            let election = store.election();
            (Box::new(store), Some(election))
        }
    };
    let server = tiny_http::Server::http(config.listen).map_err(|e| {
        anyhow::anyhow!("cannot listen on {}: {e} (is another manager running? pick another --listen)", config.listen)
    })?;
    let address = server.server_addr().to_ip().context("the server listens on an IP address")?;
    let url = format!("http://{address}");
    let replication = crate::replication::Replication::open(&dir, trusted.clone(), &config.replication)?;
    let rack = Arc::new(Rack {
        image_source: (!address.ip().is_unspecified()).then(|| url.clone()),
        replication: Arc::new(replication),
        store: Mutex::new(store),
        election,
        agents: RwLock::new(HashMap::new()),
        dir: dir.clone(),
        trusted: trusted.clone(),
        token: token.clone(),
        peer: std::sync::OnceLock::new(),
        wake: (Mutex::new(false), Condvar::new()),
    });

    if !config.no_local_agent {
        let launcher = make_launcher(config.launcher, &config.tender, &dir)?;
        let (memory_mib, vcpus) = capacity(config.memory_mib, config.vcpus);
        let agent: Arc<dyn HostAgent> = Arc::new(LocalAgent::new(launcher.clone(), dir.clone(), trusted.clone(), None));
        let names: Vec<String> = if config.launcher == LauncherKind::Sim && config.sim_hosts > 0 {
            (1..=config.sim_hosts).map(|i| format!("sim-{i:04}")).collect()
        } else {
            vec![config.host_name.clone()]
        };
        let arches: Vec<String> = launcher.arches().iter().map(|a| a.name().to_owned()).collect();
        if arches.is_empty() {
            eprintln!(
                "rack-manager: warning: this host can boot nothing: install QEMU ({}) to run appliances here",
                qemu::install_hint(images::Arch::Aarch64)
            );
        }
        let mut store = rack.store();
        let existing: HashMap<String, HostState> = store.hosts()?.into_iter().map(|h| (h.name, h.state)).collect();
        for name in names {
            store.upsert_host(&HostRecord {
                name: name.clone(),
                address: None,
                launcher: launcher.name().into(),
                arches: arches.clone(),
                memory_mib,
                vcpus,
                // On etcd, a new host waits for the scheduler's health check: a standby's own
                // host runs nothing until that manager is elected.
                state: existing.get(&name).copied().unwrap_or(if rack.election.is_some() {
                    HostState::Unreachable
                } else {
                    HostState::Ready
                }),
            })?;
            store.hold_liveness(&name)?;
            rack.add_agent(&name, agent.clone());
        }
    }
    // Hosts whose agents joined before the restart: reach them at the address they gave.
    for host in rack.store().hosts()? {
        if let Some(address) = &host.address {
            rack.add_agent(&host.name, Arc::new(RemoteAgent::new(address, &token)));
        }
    }

    // Before the reconciler's first pass: peers say which deployments they took over meanwhile.
    if let Some(node) = crate::peer::start(&rack, &config.peer, &url)? {
        let _ = rack.peer.set(node);
    }
    dir.write_address(&url)?;
    eprintln!("rack-manager: serving the rack API on {url} (data directory {})", dir.root().display());

    if let Some(election) = &rack.election {
        election.campaign(&url);
    }
    // Changes made through other managers (or expired leases) wake the reconciler at once.
    if let Some(feed) = rack.store().changes()? {
        let woken = rack.clone();
        std::thread::spawn(move || {
            for _change in feed {
                woken.wake();
            }
        });
    }

    let reconciler = rack.clone();
    std::thread::spawn(move || crate::reconcile::run(&reconciler));
    let replicating = rack.clone();
    std::thread::spawn(move || crate::replication::run(&replicating));
    let handler_rack = rack.clone();
    let handler = Arc::new(move |req: &http::Req| api::route(&handler_rack, req));
    http::serve(Arc::new(server), 8, token, handler);
    anyhow::bail!("the API server stopped")
}
