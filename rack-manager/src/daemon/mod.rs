//! `rack-manager serve`: the manager daemon. It owns the store, the API and the reconciler, and,
//! unless told otherwise, a built-in agent for its own host, so one command runs a whole
//! single-machine rack.
//!
//! Startup order matters for crash safety: the store is opened and the agents are known before the
//! reconciler runs its first pass, which re-adopts every run that survived the previous daemon
//! (same pid **and** start time) and restarts the others by policy.

pub mod api;
pub mod peers_api;

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use anyhow::Context;
use images::keys::PublicKey;
use rack_api::HostState;

use crate::{
    agent::{HostAgent, LocalAgent},
    datadir::DataDir,
    http,
    launcher::{
        Launcher,
        qemu::QemuLauncher,
        sim::SimLauncher,
        tender::{self, TenderConfig, TenderLauncher},
    },
    rack::{Rack, RackParts, image_store::Replication},
    store::{
        HostRecord, StateStore,
        etcd::{EtcdSettings, EtcdStore},
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
    pub log: crate::logging::LogArgs,
    pub store: StoreChoice,
    pub data_dir: std::path::PathBuf,
    pub listen: SocketAddr,
    pub trust: Vec<PublicKey>,
    /// Do not trust the signing key of the checkout `serve` runs from.
    pub no_workspace_trust: bool,
    pub launcher: LauncherKind,
    pub tender: TenderOptions,
    /// Run no built-in agent: only joined agents host instances.
    pub no_local_agent: bool,
    pub host_name: String,
    pub capacity: crate::capacity::CapacityArgs,
    /// With the sim launcher: this many simulated hosts instead of one.
    pub sim_hosts: u32,
    /// `--power-budget-w`: the rack's worst-case draw may not pass it.
    pub power_budget_w: Option<f64>,
    pub replication: crate::rack::image_store::ReplicationArgs,
    pub peer: crate::peer::PeerArgs,
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
    crate::logging::init(&config.log);
    let dir = DataDir::open(&config.data_dir)?;
    let _lock = dir.lock()?;
    let token = dir.token()?;
    let trusted = crate::trust::Trust::open(&dir, &config.trust)?;
    if !config.no_workspace_trust {
        trust_workspace_key(&trusted);
    }
    print_trusted(&trusted);
    let (store, election): (Box<dyn StateStore>, _) = match &config.store {
        StoreChoice::Sqlite => {
            let store = SqliteStore::open(&dir.state_db())
                .with_context(|| format!("opening the state database {}", dir.state_db().display()))?;
            (Box::new(store), None)
        }
        StoreChoice::Etcd(settings) => {
            let store = EtcdStore::connect(settings)?;
            let election = store.election().sealed_by(crate::store::JoinKey::from_token(&token));
            (Box::new(store), Some(election))
        }
    };
    let server = std::net::TcpListener::bind(config.listen).map_err(|e| {
        anyhow::anyhow!("cannot listen on {}: {e} (is another manager running? pick another --listen)", config.listen)
    })?;
    let address = server.local_addr().context("the API listener's address")?;
    let url = format!("http://{address}");
    let replication = Replication::open(&dir, trusted.current(), &config.replication)?;
    let rack = Arc::new(Rack::new(RackParts {
        image_source: (!address.ip().is_unspecified()).then(|| url.clone()),
        replication: Arc::new(replication),
        store,
        election,
        dir: dir.clone(),
        trusted: trusted.clone(),
        token: token.clone(),
    }));
    rack.power.set_rack_budget(config.power_budget_w);

    if !config.no_local_agent {
        let launcher = make_launcher(config.launcher, &config.tender, &dir)?;
        let offer = config.capacity.offer(config.launcher);
        let (memory_mib, vcpus) = (offer.memory_mib, offer.vcpus);
        tracing::info!(memory_mib, vcpus, "this host offers instances {}", offer.explanation);
        let agent: Arc<dyn HostAgent> = Arc::new(LocalAgent::new(launcher.clone(), dir.clone(), trusted.clone(), None));
        let names: Vec<String> = if config.launcher == LauncherKind::Sim && config.sim_hosts > 0 {
            (1..=config.sim_hosts).map(|i| format!("sim-{i:04}")).collect()
        } else {
            vec![config.host_name.clone()]
        };
        let arches: Vec<String> = launcher.arches().iter().map(|a| a.name().to_owned()).collect();
        if arches.is_empty() {
            tracing::warn!(
                "this host can boot nothing: install QEMU ({}) to run appliances here",
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
                join_seal: None,
            })?;
            store.hold_liveness(&name)?;
            rack.add_agent(&name, agent.clone());
        }
    }
    // Hosts whose agents joined before the restart: reach them at the address they gave.
    crate::reconcile::connect_joined_agents(&rack)?;

    // Before the reconciler's first pass: peers say which deployments they took over meanwhile.
    let peer = crate::peer::start(&rack, &config.peer)?;
    dir.write_address(&url)?;
    tracing::info!(url = %url, data_dir = %dir.root().display(), "serving the rack API on {url}");
    crate::logging::on_shutdown_signal();

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
    // A credential checked as the API checks it; dashboard sessions resolve to one of these.
    let check = |rack: &Rack, bearer: &str| {
        crate::credentials::authenticate(&rack.token, &rack.join_tokens, &rack.api_tokens, Some(bearer))
    };
    let sessions = Arc::new(crate::dashboard::Sessions::default());
    let (handler_rack, handler_sessions) = (rack.clone(), sessions.clone());
    let handler = Arc::new(move |req: &http::Req| {
        let started = std::time::Instant::now();
        let answer = if crate::dashboard::is_dashboard(&req.segments) {
            crate::dashboard::route(&handler_rack, &handler_sessions, &|b| check(&handler_rack, b), req)
        } else {
            api::route(&handler_rack, peer.as_ref(), req)
        };
        let status = answer.as_ref().map_or_else(|e| e.status, |r| r.status);
        let route = crate::metrics::api::route_of(&req.segments);
        crate::metrics::api::observe(&req.method, route, status, started.elapsed());
        answer
    });
    let auth_rack = rack.clone();
    let authenticate = Arc::new(move |bearer: Option<&str>| {
        if let Some(session) = bearer.and_then(|b| b.strip_prefix(http::SESSION_PREFIX)) {
            return crate::dashboard::authenticate_session(&sessions, session, &|b| check(&auth_rack, b));
        }
        crate::credentials::authenticate(&auth_rack.token, &auth_rack.join_tokens, &auth_rack.api_tokens, bearer)
    });
    let public: http::PublicRoute = crate::dashboard::is_public;
    let error = http::serve(server, API_LIMITS, authenticate, Some(public), api_body_limit, handler);
    anyhow::bail!("the API server stopped: {error}")
}

/// Started from a Mast checkout: trust the key its image builds are signed with, so the first
/// push of a `cargo xtask image build` output works, and say so.
fn trust_workspace_key(trusted: &crate::trust::Trust) {
    let Some(root) = crate::trust::checkout_root() else { return };
    match crate::trust::workspace_key(&root) {
        Ok((key, file)) => match trusted.add(key) {
            Ok(true) => tracing::info!(
                checkout = %root.display(),
                key_file = %file.display(),
                "started from a checkout: now trusting its signing key {key}; --no-workspace-trust to not, \
                 `rack-manager trust rm {key}` to undo"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot trust the workspace's signing key: {e:#}"),
        },
        Err(e) => tracing::warn!("{e:#}"),
    }
}

/// The keys images must be signed with, at start: the first thing a refused push asks.
fn print_trusted(trusted: &crate::trust::Trust) {
    let keys = trusted.current();
    if keys.keys().is_empty() {
        tracing::warn!(
            "trusting no image signing keys yet: every push is refused until `rack-manager trust add KEY` \
             (or serve --trust KEY)"
        );
    }
    for key in keys.keys() {
        tracing::info!("trusting images signed by {key}");
    }
}

/// The manager's API listener. Connections: the CLI, agents, peers' replication and a bench
/// hold a few each; 512 leaves ample room while bounding descriptors (the default limit is
/// 1024) and memory (a connection costs a task and its buffers, a few KiB).
const API_LIMITS: http::Limits = http::Limits {
    max_connections: 512,
    // One address (a NAT, a loopback flood) may hold a quarter of the room.
    max_per_address: 128,
    // Idle or head-sending sockets beyond this make room for newcomers, oldest first.
    max_unproven: 256,
    // Handlers end in the store (one lock) or an agent call: eight at once kept today's
    // throughput; more would only queue on the store lock, holding threads.
    handlers: 8,
};

/// Image push carries a whole image; everything else is a small JSON document.
fn api_body_limit(method: &http::Method, path: &[String]) -> u64 {
    match (method, path) {
        (http::Method::Post, [v1, images]) if v1 == "v1" && images == "images" => MAX_IMAGE_BYTES,
        // The dashboard's sign-in form is read without a credential: a token's worth only.
        (http::Method::Post, [_]) => crate::dashboard::MAX_FORM_BYTES,
        _ => MAX_REQUEST_BYTES,
    }
}

/// The largest image `image push` accepts: far above any appliance image.
const MAX_IMAGE_BYTES: u64 = 64 << 20;
/// The largest other request body: deploy requests, joins and plans are a few KiB.
const MAX_REQUEST_BYTES: u64 = 1 << 20;
