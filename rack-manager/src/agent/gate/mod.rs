//! On-demand instances: the gate that holds an instance's service address open while no
//! appliance runs, starts one on the first connection, hands it that connection once the
//! appliance says it is ready, and stops it again when idle (docs/on-demand.md).
//!
//! One [`Gate`] per on-demand instance on this host, all on one small tokio runtime: an asleep
//! gate is a listening socket and a parked accept task, nothing else (no timer, no thread). A
//! wake runs on a blocking thread (the launcher and the readiness wait block); the waiting
//! clients' connections stay accepted, their bytes in the kernel's socket buffers, so nothing
//! they sent is lost. Once the appliance is ready each connection is relayed to it.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections per gate (waiting and relayed; more are
//! closed at once), a wake that does not end ready within [`WAKE_DEADLINE`] closes its waiting
//! clients, and a relay connects within [`CONNECT_DEADLINE`]. Nothing is buffered in user space
//! beyond the relay's copy buffers.
//!
//! Supervision: a run that crashes while waking or awake closes its clients' connections and
//! marks the gate failed; the manager's next look at the run ([`Gates::state`]) hears that the
//! run exited with the appliance's status, and its restart policy applies to the gate as to any
//! run (a restarted gate gets the same address).

mod address;
mod ready;
mod tcp;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::net::UnixDatagram,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use rack_api::{
    GateState, GateStatus, OnDemand, PortForward,
    agent::{RunRef, RunState, RunStats},
};
use tokio::sync::{Notify, Semaphore};

use crate::launcher::{LaunchSpec, Launcher, proc};

/// The most connections one gate holds at once, waiting for a wake or relayed.
pub const MAX_CONNECTIONS: usize = 1024;
/// The longest a wake may take, launch to ready (QEMU boots are the slow case).
pub const WAKE_DEADLINE: Duration = Duration::from_secs(30);
/// The longest a relay waits to connect to a ready appliance.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(5);
/// Connections per appliance above which a gate starts another (up to `max_instances`).
pub const BUSY_AT: usize = 32;

/// The gates of this host.
pub struct Gates {
    runtime: tokio::runtime::Runtime,
    launcher: Arc<dyn Launcher>,
    addresses: address::AddressBook,
    open: Mutex<HashMap<String, Arc<Gate>>>,
}

impl std::fmt::Debug for Gates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gates").field("open", &self.locked().len()).finish_non_exhaustive()
    }
}

/// What a gate starts: the launch of its first appliance (log, volume, arguments), and how it
/// sleeps and scales.
#[derive(Debug, Clone)]
pub struct GateSpec {
    pub instance: String,
    pub launch: LaunchSpec,
    pub settings: OnDemand,
}

impl Gates {
    /// Gates over `launcher`; their addresses are recorded in `instances_dir`.
    pub fn new(launcher: Arc<dyn Launcher>, instances_dir: PathBuf) -> std::io::Result<Gates> {
        raise_open_files_limit();
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("gate").enable_all().build()?;
        Ok(Gates {
            runtime,
            launcher,
            addresses: address::AddressBook::new(instances_dir),
            open: Mutex::new(HashMap::new()),
        })
    }

    fn locked(&self) -> MutexGuard<'_, HashMap<String, Arc<Gate>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens `spec.instance`'s gate (closing one it had), listening on its ports at its stable
    /// address; returns the ports as the API shows them.
    pub fn open(&self, spec: GateSpec) -> Result<Vec<PortForward>, String> {
        if let Some(old) = self.locked().remove(&spec.instance) {
            old.close();
        }
        let tcp: Vec<u16> =
            spec.launch.listen.iter().filter(|l| l.protocol.eq_ignore_ascii_case("tcp")).map(|l| l.port).collect();
        let bindable = |address: Ipv4Addr| {
            tcp.iter().all(|port| std::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(address), *port)).is_ok())
        };
        let address = self
            .addresses
            .claim(&spec.instance, bindable)
            .map_err(|e| format!("choosing the service address of {}: {e}", spec.instance))?;
        let mut listeners = Vec::new();
        for port in &tcp {
            let at = SocketAddr::new(IpAddr::V4(address), *port);
            let listener = std::net::TcpListener::bind(at)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| format!("the gate of {} cannot listen on {at}: {e}", spec.instance))?;
            listeners.push(listener);
        }
        let max_instances = if spec.launch.volume.is_some() { 1 } else { spec.settings.max_instances.max(1) };
        let gate = Arc::new(Gate {
            instance: spec.instance.clone(),
            template: spec.launch,
            idle_timeout: Duration::from_millis(spec.settings.idle_timeout_ms),
            max_instances: max_instances as usize,
            launcher: self.launcher.clone(),
            runtime: self.runtime.handle().clone(),
            opened: Instant::now(),
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
            connections: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            tasks: Mutex::new(Vec::new()),
        });
        {
            let _entered = self.runtime.enter();
            let mut tasks = gate.tasks.lock().unwrap_or_else(|p| p.into_inner());
            for (index, listener) in listeners.into_iter().enumerate() {
                let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
                tasks.push(self.runtime.spawn(tcp::accept(gate.clone(), listener, index)));
            }
        }
        self.locked().insert(spec.instance, gate);
        Ok(tcp
            .iter()
            .map(|port| PortForward {
                host_port: *port,
                guest_port: *port,
                protocol: "tcp".into(),
                address: Some(IpAddr::V4(address)),
            })
            .collect())
    }

    /// `Some` when `instance` has a gate: running, or exited (its appliance crashed; the gate
    /// is closed then, and the caller's restart policy decides whether it opens again).
    pub fn state(&self, instance: &str) -> Option<RunState> {
        let gate = self.locked().get(instance).cloned()?;
        let failed = gate.inner().failed;
        match failed {
            None => Some(RunState::Running),
            Some(status) => {
                self.locked().remove(instance);
                gate.close();
                Some(RunState::Exited { status })
            }
        }
    }

    /// Closes `instance`'s gate and stops its appliances; false if it has none.
    pub fn close(&self, instance: &str) -> bool {
        let Some(gate) = self.locked().remove(instance) else { return false };
        gate.close();
        true
    }

    /// The gate's figures, over all the runs it started.
    pub fn stats(&self, instance: &str) -> Option<RunStats> {
        let gate = self.locked().get(instance).cloned()?;
        Some(gate.stats())
    }
}

/// One appliance a gate started.
#[derive(Debug)]
struct Awake {
    /// Its instance name: the gate's own for the first, `<id>_<n>` for more.
    name: String,
    run: Option<RunRef>,
    log: PathBuf,
    /// Where each TCP port of the listen list reaches it; empty while waking.
    backends: Vec<SocketAddr>,
    ready: bool,
    connections: usize,
    idle_since: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    awake: Vec<Awake>,
    wakes: u64,
    last_wake: Option<Duration>,
    last_request: Option<Instant>,
    /// CPU time of stopped runs.
    ended_cpu_ms: u64,
    /// Time awake before the current stretch.
    ended_awake: Duration,
    /// Since when at least one appliance has been awake.
    awake_since: Option<Instant>,
    /// The appliance crashed (with this status, if known): the gate reports its run exited.
    failed: Option<Option<i32>>,
    /// Appliances taken out for being idle whose runs are still being stopped: their names (and
    /// taps, slots and volumes) are not reused until they are gone.
    stopping: Vec<String>,
    closed: bool,
    watching: bool,
}

pub struct Gate {
    instance: String,
    template: LaunchSpec,
    idle_timeout: Duration,
    max_instances: usize,
    launcher: Arc<dyn Launcher>,
    runtime: tokio::runtime::Handle,
    opened: Instant,
    inner: Mutex<Inner>,
    /// Woken whenever an appliance becomes ready or a wake fails.
    changed: Notify,
    connections: Arc<Semaphore>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Why a connection gets no appliance: it is closed.
#[derive(Debug)]
pub struct NoBackend;

impl Gate {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn touch(&self) {
        self.inner().last_request = Some(Instant::now());
    }

    /// An appliance for a new connection to TCP port number `port` (its index in the listen
    /// list), waking one when none is ready or all are busy; the caller must [`Gate::release`]
    /// the name it gets.
    async fn backend(self: &Arc<Self>, port: usize) -> Result<(String, SocketAddr), NoBackend> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut inner = self.inner();
                if inner.closed || inner.failed.is_some() {
                    return Err(NoBackend);
                }
                if let Some(awake) = inner.awake.iter_mut().find(|a| a.ready && a.connections < BUSY_AT) {
                    return take(awake, port);
                }
                let waking = inner.awake.iter().any(|a| !a.ready);
                if !waking {
                    if inner.awake.len() + inner.stopping.len() < self.max_instances {
                        let name = self.next_name(&inner);
                        inner.awake.push(Awake {
                            log: self.log_of(&name),
                            name: name.clone(),
                            run: None,
                            backends: Vec::new(),
                            ready: false,
                            connections: 0,
                            idle_since: Instant::now(),
                        });
                        inner.awake_since.get_or_insert_with(Instant::now);
                        let gate = self.clone();
                        self.runtime.spawn_blocking(move || gate.wake(name));
                    } else if let Some(awake) = inner.awake.iter_mut().filter(|a| a.ready).min_by_key(|a| a.connections)
                    {
                        // Every appliance is busy and no more may start: share the least busy.
                        // (With none ready, one is being stopped: wait until it is gone.)
                        return take(awake, port);
                    }
                }
            }
            notified.await;
        }
    }

    fn release(&self, name: &str) {
        let mut inner = self.inner();
        if let Some(awake) = inner.awake.iter_mut().find(|a| a.name == name) {
            awake.connections = awake.connections.saturating_sub(1);
            awake.idle_since = Instant::now();
        }
        inner.last_request = Some(Instant::now());
    }

    fn next_name(&self, inner: &Inner) -> String {
        let taken = |name: &str| inner.awake.iter().any(|a| a.name == name) || inner.stopping.iter().any(|n| n == name);
        if !taken(&self.instance) {
            return self.instance.clone();
        }
        (2..).map(|n| format!("{}_{n}", self.instance)).find(|n| !taken(n)).expect("fewer than 2^32 appliances")
    }

    fn instance_dir(&self, name: &str) -> PathBuf {
        let instances = self.template.log.parent().and_then(|d| d.parent()).map(PathBuf::from).unwrap_or_default();
        instances.join(name)
    }

    fn log_of(&self, name: &str) -> PathBuf {
        if name == self.instance { self.template.log.clone() } else { self.instance_dir(name).join("console.log") }
    }

    /// Starts the appliance `name` and waits until it is ready (on a blocking thread).
    fn wake(self: Arc<Self>, name: String) {
        let started = Instant::now();
        let dir = self.instance_dir(&name);
        let _ = std::fs::create_dir_all(&dir);
        let mut spec = self.template.clone();
        spec.log = self.log_of(&name);
        spec.diagnostics = dir.join("launcher.stderr");
        // The tender says it is ready on a socket; QEMU in its console; the simulation at once.
        let socket_path = dir.join("ready.sock");
        let socket = (self.launcher.name() == "tender")
            .then(|| {
                let _ = std::fs::remove_file(&socket_path);
                UnixDatagram::bind(&socket_path)
            })
            .transpose();
        let socket = match socket {
            Ok(socket) => socket,
            Err(e) => return self.wake_failed(&name, None, &format!("binding {}: {e}", socket_path.display())),
        };
        spec.ready_socket = socket.as_ref().map(|_| socket_path.clone());
        let launched = match self.launcher.launch(&spec) {
            Ok(launched) => launched,
            Err(e) => return self.wake_failed(&name, None, &format!("starting {name}: {e}")),
        };
        let run = RunRef {
            instance: name.clone(),
            pid: launched.pid,
            start_ticks: launched.start_ticks,
            log_offset: launched.log_offset,
        };
        let signal = match (&socket, self.launcher.name()) {
            (Some(socket), _) => ready::Signal::Socket(socket),
            (None, "sim") => ready::Signal::Immediate,
            (None, _) => ready::Signal::Console { log: &spec.log, offset: launched.log_offset },
        };
        let result = ready::wait(&*self.launcher, &run, &spec.log, signal, started + WAKE_DEADLINE);
        drop(socket);
        let _ = std::fs::remove_file(&socket_path);
        if let Err(why) = result {
            self.launcher.stop(&run);
            let (status, text) = match why {
                ready::NotReady::Exited(status) => (status, format!("{name} exited while waking (status {status:?})")),
                ready::NotReady::TimedOut => (None, format!("{name} did not say ready within {WAKE_DEADLINE:?}")),
            };
            return self.wake_failed(&name, status, &text);
        }
        let backends = launched
            .ports
            .iter()
            .filter(|p| p.protocol.eq_ignore_ascii_case("tcp"))
            .map(|p| SocketAddr::new(p.address.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), p.host_port))
            .collect();
        let start_watching = {
            let mut inner = self.inner();
            if inner.closed {
                drop(inner);
                self.launcher.stop(&run);
                return;
            }
            inner.wakes += 1;
            inner.last_wake = Some(started.elapsed());
            if let Some(awake) = inner.awake.iter_mut().find(|a| a.name == name) {
                awake.ready = true;
                awake.run = Some(run);
                awake.backends = backends;
                awake.idle_since = Instant::now();
            }
            !std::mem::replace(&mut inner.watching, true)
        };
        self.changed.notify_waiters();
        if start_watching {
            self.runtime.spawn(watch(self.clone()));
        }
    }

    fn wake_failed(&self, name: &str, status: Option<i32>, why: &str) {
        eprintln!("rack-manager: gate {}: {why}; closing its waiting connections", self.instance);
        {
            let mut inner = self.inner();
            inner.awake.retain(|a| a.name != name);
            inner.failed = Some(status);
            if inner.awake.is_empty() {
                settle_awake_time(&mut inner);
            }
        }
        self.changed.notify_waiters();
    }

    /// Stops every appliance and the listeners; waiting connections are closed.
    fn close(&self) {
        for task in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            task.abort();
        }
        let runs: Vec<RunRef> = {
            let mut inner = self.inner();
            inner.closed = true;
            settle_awake_time(&mut inner);
            inner.awake.drain(..).filter_map(|a| a.run).collect()
        };
        self.changed.notify_waiters();
        for run in runs {
            self.stop_run(&run);
        }
    }

    /// Stops a run, counting the CPU time it used.
    fn stop_run(&self, run: &RunRef) {
        let cpu = proc::run_stats(run).map_or(0, |s| s.cpu_ms);
        self.launcher.stop(run);
        self.inner().ended_cpu_ms += cpu;
    }

    fn stats(&self) -> RunStats {
        let inner = self.inner();
        let runs: Vec<RunRef> = inner.awake.iter().filter_map(|a| a.run.clone()).collect();
        let (ended_cpu, awake_ms, status) =
            (inner.ended_cpu_ms, awake_time(&inner).as_millis() as u64, status_of(&inner));
        drop(inner);
        let live: Vec<RunStats> = runs.iter().filter_map(proc::run_stats).collect();
        let cpu_ms = ended_cpu + live.iter().map(|s| s.cpu_ms).sum::<u64>();
        RunStats {
            cpu_ms,
            rss_bytes: live.iter().map(|s| s.rss_bytes).sum(),
            age_ms: self.opened.elapsed().as_millis() as u64,
            gate: Some(GateStatus { cpu_ms, awake_ms, ..status }),
        }
    }
}

fn take(awake: &mut Awake, port: usize) -> Result<(String, SocketAddr), NoBackend> {
    let backend = *awake.backends.get(port).ok_or(NoBackend)?;
    awake.connections += 1;
    Ok((awake.name.clone(), backend))
}

fn settle_awake_time(inner: &mut Inner) {
    if let Some(since) = inner.awake_since.take() {
        inner.ended_awake += since.elapsed();
    }
}

fn awake_time(inner: &Inner) -> Duration {
    inner.ended_awake + inner.awake_since.map_or(Duration::ZERO, |since| since.elapsed())
}

fn status_of(inner: &Inner) -> GateStatus {
    let state = match (inner.awake.iter().any(|a| a.ready), inner.awake.is_empty()) {
        (true, _) => GateState::Running,
        (false, false) => GateState::Waking,
        (false, true) => GateState::Asleep,
    };
    GateStatus {
        state,
        awake_instances: inner.awake.len() as u32,
        wakes: inner.wakes,
        last_wake_us: inner.last_wake.map(|d| d.as_micros() as u64),
        idle_ms: inner.last_request.map(|at| at.elapsed().as_millis() as u64),
        cpu_ms: inner.ended_cpu_ms,
        awake_ms: awake_time(inner).as_millis() as u64,
    }
}

/// While any appliance is awake: stops the idle ones and notices crashes. Ends when the gate
/// sleeps, so an asleep gate has no timer.
async fn watch(gate: Arc<Gate>) {
    let tick = (gate.idle_timeout / 20).clamp(Duration::from_millis(5), Duration::from_millis(250));
    loop {
        tokio::time::sleep(tick).await;
        let (idle, live) = {
            let mut inner = gate.inner();
            if inner.closed {
                inner.watching = false;
                return;
            }
            let now = Instant::now();
            let (idle, keep): (Vec<Awake>, Vec<Awake>) = std::mem::take(&mut inner.awake)
                .into_iter()
                .partition(|a| a.ready && a.connections == 0 && now.duration_since(a.idle_since) >= gate.idle_timeout);
            inner.awake = keep;
            inner.stopping.extend(idle.iter().map(|a| a.name.clone()));
            let live: Vec<(String, RunRef, PathBuf)> = inner
                .awake
                .iter()
                .filter(|a| a.ready)
                .filter_map(|a| a.run.clone().map(|r| (a.name.clone(), r, a.log.clone())))
                .collect();
            (idle, live)
        };
        let gate_ = gate.clone();
        let done = tokio::task::spawn_blocking(move || {
            for awake in idle {
                if let Some(run) = &awake.run {
                    gate_.stop_run(run);
                }
                gate_.inner().stopping.retain(|n| *n != awake.name);
                // A connection that came meanwhile waits for this name to be free.
                gate_.changed.notify_waiters();
            }
            // A run that ended on its own (a crash): its clients' relays fail; the gate reports it.
            for (name, run, log) in live {
                if run.pid.is_some()
                    && let RunState::Exited { status } = gate_.launcher.state(&run, &log)
                {
                    gate_.wake_failed(&name, status, &format!("{name} exited (status {status:?})"));
                }
            }
            let mut inner = gate_.inner();
            if inner.awake.is_empty() && inner.stopping.is_empty() {
                settle_awake_time(&mut inner);
                inner.watching = false;
                true
            } else {
                false
            }
        })
        .await;
        if done.unwrap_or(true) {
            return;
        }
    }
}

/// A host with thousands of gates needs thousands of listening sockets: the soft limit on open
/// files is raised to the hard one.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let _ = setrlimit(Resource::Nofile, rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum });
    }
}
