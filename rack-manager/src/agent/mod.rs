//! Host agents: what runs instances on one host for the manager.
//!
//! [`HostAgent`] is the manager's view of a host. [`LocalAgent`] does the work: it verifies the
//! instance's image against its own trusted keys, unpacks the kernel and hands the run to its
//! [`Launcher`]. The manager's own host (`serve` without flags) uses a `LocalAgent` in process;
//! other hosts run `rack-manager agent --join <manager>` ([`server`]), which serves a
//! `LocalAgent` over HTTP, and the manager reaches them through [`RemoteAgent`].
//!
//! Agents keep little state of their own: images, logs, and the record of the runs they launched
//! (`<data-dir>/launches`). The manager's store says which runs exist, and every question names
//! the run by pid and start time; an agent stops or reports on a run only if its own record has
//! that instance with that pid and start time, so no caller can make it signal another process.

pub mod gate;
pub mod server;

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    path::Path,
    sync::Arc,
    thread,
    time::Duration,
};

use images::{Arch, artifact};
use rack_api::{
    JoinRequest, LogChunk,
    agent::{LaunchRequest, Launched, RunRef, RunState, RunStats, VolumeRef},
};

use crate::{
    client::Client,
    datadir::DataDir,
    launcher::{LaunchError, LaunchSpec, Launcher},
};

/// The most console history one request returns: the bounded window `logs` shows.
pub const LOG_WINDOW: u64 = 64 * 1024;

/// The size past which an instance's console log is rotated.
pub const LOG_ROTATE_BYTES: u64 = 1 << 20;

/// How often the agent looks for logs to rotate.
const LOG_ROTATE_EVERY: Duration = Duration::from_secs(2);

/// Bounds a console log that a VM appends to: past `limit` bytes, its content is copied to
/// `console.log.1` (replacing the previous one) and the file truncated in place. The VM keeps
/// its descriptor, opened with `O_APPEND`, so its next write lands at the new end: nothing
/// needs restarting, and the daemon need not be alive for the VM to keep logging. (Lines written
/// between the copy and the truncation are lost, as with logrotate's `copytruncate`.)
pub fn rotate_log(path: &Path, limit: u64) -> std::io::Result<bool> {
    if std::fs::metadata(path)?.len() <= limit {
        return Ok(false);
    }
    std::fs::copy(path, path.with_extension("log.1"))?;
    std::fs::OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

/// Why an agent could not do what the manager asked.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Failed(String),
    #[error("the agent is unreachable: {0}")]
    Unreachable(String),
    #[error("{0}")]
    NotLaunchedHere(String),
    /// A launch that cannot succeed however often it is retried: an image built for another
    /// platform or architecture than this host's launcher boots.
    #[error("{0}")]
    Impossible(String),
}

/// The manager's view of one host.
pub trait HostAgent: Send + Sync {
    fn launch(&self, request: &LaunchRequest) -> Result<Launched, AgentError>;
    fn state(&self, run: &RunRef) -> Result<RunState, AgentError>;
    fn stop(&self, run: &RunRef) -> Result<(), AgentError>;
    fn stats(&self, run: &RunRef) -> Result<Option<RunStats>, AgentError>;
    /// Console output of `instance` from `offset`, at most [`LOG_WINDOW`] bytes.
    fn logs(&self, instance: &str, offset: u64) -> Result<LogChunk, AgentError>;
    /// Deletes the volume of a removed instance, if it has one.
    fn remove_volume(&self, volume: &VolumeRef) -> Result<(), AgentError>;
    /// Whether the agent answers at all.
    fn ping(&self) -> Result<(), AgentError>;
}

/// Runs instances on this machine.
pub struct LocalAgent {
    launcher: Arc<dyn Launcher>,
    dir: DataDir,
    trusted: crate::trust::Trust,
    /// Where to fetch images this host does not have yet, unless a launch request says: the
    /// manager it joined, with this agent's credential (joined agents only).
    source: Option<Arc<server::ManagerLink>>,
    launches: Launches,
    /// The gates of on-demand instances on this host.
    gates: gate::Gates,
}

impl std::fmt::Debug for LocalAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAgent").field("launcher", &self.launcher.name()).field("dir", &self.dir).finish()
    }
}

impl LocalAgent {
    /// An agent over `launcher`, with its images and logs in `dir`. Starts a thread that keeps
    /// every console log in `dir` under [`LOG_ROTATE_BYTES`] (plus one rotated file).
    pub fn new(
        launcher: Arc<dyn Launcher>,
        dir: DataDir,
        trusted: crate::trust::Trust,
        source: Option<Arc<server::ManagerLink>>,
    ) -> LocalAgent {
        let launches = Launches::open(dir.launches_file());
        let instances = dir.root().join("instances");
        thread::spawn(move || {
            loop {
                thread::sleep(LOG_ROTATE_EVERY);
                for entry in std::fs::read_dir(&instances).into_iter().flatten().flatten() {
                    let _ = rotate_log(&entry.path().join("console.log"), LOG_ROTATE_BYTES);
                }
            }
        });
        let gates = gate::Gates::new(launcher.clone(), dir.root().join("instances"))
            .expect("a two-thread tokio runtime for the gates starts (only out of memory it would not)");
        LocalAgent { launcher, dir, trusted, source, launches, gates }
    }

    /// Resource use of every live run this agent launched (for its `/metrics`).
    pub fn run_stats(&self) -> Vec<(String, RunStats)> {
        let runs = self.launches.runs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        runs.into_iter()
            .filter_map(|l| {
                let run = RunRef {
                    instance: l.instance.clone(),
                    pid: Some(l.pid),
                    start_ticks: Some(l.start_ticks),
                    log_offset: 0,
                };
                Some((l.instance, self.launcher.stats(&run)?))
            })
            .collect()
    }

    /// The image `id`, verified; fetched from the manager first if this host lacks it.
    fn verified_image(&self, id: &str, from: Option<&str>) -> Result<artifact::VerifiedImage, AgentError> {
        if id.len() != 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(AgentError::Failed(format!("{id:?} is not an image id (64 hex digits)")));
        }
        let path = self.dir.image(id);
        if !path.exists() {
            let Some(link) = &self.source else {
                return Err(AgentError::Failed(format!("image {id} is not stored on this host")));
            };
            let Some(credential) = link.agent_credential() else {
                return Err(AgentError::Failed(format!(
                    "image {id} is not stored here, and this agent has not joined"
                )));
            };
            let url = from.unwrap_or(&link.url);
            let bytes = Client::new(url, &credential, Duration::from_secs(30))
                .get_bytes(&format!("/images/{id}/blob"))
                .map_err(|e| AgentError::Failed(format!("fetching image {id} from the manager: {e}")))?;
            // Verified before it is stored, so the image directory holds only good images.
            artifact::verify(&bytes, &self.trusted.current())
                .map_err(|e| AgentError::Failed(format!("image {id} from the manager was refused: {e}")))?;
            let aside = path.with_extension(format!("{}.tmp", std::process::id()));
            std::fs::write(&aside, &bytes)
                .and_then(|()| std::fs::rename(&aside, &path))
                .map_err(|e| AgentError::Failed(format!("storing image {id}: {e}")))?;
        }
        artifact::verify_file(&path, &self.trusted.current()).map_err(|e| AgentError::Failed(e.to_string()))
    }
}

/// Instance ids name directories: only `[A-Za-z0-9_-]` (the manager makes `<app>-<n>`), so no
/// request can reach outside the instances directory.
fn check_instance_id(id: &str) -> Result<(), AgentError> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(AgentError::Failed(format!("{id:?} is not an instance id")));
    }
    Ok(())
}

impl HostAgent for LocalAgent {
    fn launch(&self, request: &LaunchRequest) -> Result<Launched, AgentError> {
        check_instance_id(&request.instance)?;
        let image = self.verified_image(&request.image_id, request.image_source.as_deref())?;
        let arch: Arch = image.arch();
        let kernel = image
            .unpack_kernel(&self.dir.kernels())
            .map_err(|e| AgentError::Failed(format!("unpacking the kernel of {}: {e}", request.image_id)))?;
        let initrd = image
            .unpack_data(&self.dir.kernels())
            .map_err(|e| AgentError::Failed(format!("unpacking the data of {}: {e}", request.image_id)))?;
        let volume = self.volume_for(request, image.manifest())?;
        let spec = LaunchSpec {
            volume,
            image: self.dir.image(&request.image_id),
            initrd,
            arch,
            kernel,
            memory_mib: request.memory_mib,
            args: request.args.clone(),
            listen: request.listen.clone(),
            log: self.dir.console_log(&request.instance),
            diagnostics: self.dir.instance_dir(&request.instance).join("launcher.stderr"),
            previous_ports: request.previous_ports.clone(),
            ready_socket: None,
        };
        if let Some(settings) = request.on_demand {
            // On demand: a gate now, appliances when connections come.
            let log_offset = std::fs::metadata(&spec.log).map_or(0, |m| m.len());
            let ports = self
                .gates
                .open(gate::GateSpec { instance: request.instance.clone(), launch: spec, settings })
                .map_err(AgentError::Failed)?;
            return Ok(Launched { pid: None, start_ticks: None, log_offset, ports });
        }
        let launched = self.launcher.launch(&spec).map_err(|e| match e {
            LaunchError::WrongPlatform(_) | LaunchError::UnsupportedArch { .. } => {
                AgentError::Impossible(e.to_string())
            }
            e => AgentError::Failed(e.to_string()),
        })?;
        if let (Some(pid), Some(start_ticks)) = (launched.pid, launched.start_ticks) {
            // Recorded before the manager hears of the run, so it can always be stopped.
            self.launches.add(Launch { instance: request.instance.clone(), pid, start_ticks })?;
        }
        Ok(launched)
    }

    fn state(&self, run: &RunRef) -> Result<RunState, AgentError> {
        // A run without a process may be a gate (an on-demand instance).
        if run.pid.is_none()
            && let Some(state) = self.gates.state(&run.instance)
        {
            return Ok(state);
        }
        Ok(self.launcher.state(run, &self.dir.console_log(&run.instance)))
    }

    fn stop(&self, run: &RunRef) -> Result<(), AgentError> {
        if run.pid.is_none() && self.gates.close(&run.instance) {
            return Ok(());
        }
        let launch = self.launches.check(run)?;
        self.launcher.stop(run);
        if let Some(launch) = launch {
            self.launches.remove(&launch);
        }
        Ok(())
    }

    fn stats(&self, run: &RunRef) -> Result<Option<RunStats>, AgentError> {
        if run.pid.is_none()
            && let Some(stats) = self.gates.stats(&run.instance)
        {
            return Ok(Some(stats));
        }
        self.launches.check(run)?;
        Ok(self.launcher.stats(run))
    }

    fn logs(&self, instance: &str, offset: u64) -> Result<LogChunk, AgentError> {
        check_instance_id(instance)?;
        let path = self.dir.console_log(instance);
        let empty =
            LogChunk { instance: instance.into(), offset: 0, text: String::new(), next_offset: 0, running: false };
        let Ok(mut file) = File::open(&path) else { return Ok(empty) };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        // An offset past the end means the log was replaced: start again from its beginning.
        let offset = if offset > len { 0 } else { offset };
        let start = offset.max(len.saturating_sub(LOG_WINDOW));
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(start))
            .and_then(|_| file.take(len - start).read_to_end(&mut bytes))
            .map_err(|e| AgentError::Failed(format!("reading {}: {e}", path.display())))?;
        let next_offset = start + bytes.len() as u64;
        Ok(LogChunk {
            instance: instance.into(),
            offset: start,
            text: String::from_utf8_lossy(&bytes).into_owned(),
            next_offset,
            running: false,
        })
    }

    fn remove_volume(&self, volume: &VolumeRef) -> Result<(), AgentError> {
        check_instance_id(&volume.deployment)?;
        check_instance_id(&volume.instance)?;
        let path = self.dir.volume(&volume.deployment, &volume.instance);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AgentError::Failed(format!("removing the volume {}: {e}", path.display()))),
        }
        // The deployment's directory goes with its last volume (fails harmlessly while others remain).
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }

    fn ping(&self) -> Result<(), AgentError> {
        Ok(())
    }
}

impl LocalAgent {
    /// The volume of the instance `request` starts, if its image declares one (`[[block]]`, the
    /// first only): created sparse, at the declared size, on the first launch; used as it is on
    /// every later one. Never truncated or replaced, so what the appliance wrote survives any
    /// restart; only [`HostAgent::remove_volume`] deletes it.
    fn volume_for(
        &self,
        request: &LaunchRequest,
        manifest: &images::manifest::Manifest,
    ) -> Result<Option<std::path::PathBuf>, AgentError> {
        let Some(size_mib) = manifest.devices.iter().find_map(|device| match device.kind {
            images::manifest::DeviceKind::Block { size_mib } => Some(size_mib),
            _ => None,
        }) else {
            return Ok(None);
        };
        let Some(deployment) = &request.deployment else {
            return Err(AgentError::Failed(format!(
                "{} declares a volume, but the launch request names no deployment to keep it under \
                 (a manager older than this agent?)",
                manifest.name
            )));
        };
        check_instance_id(deployment)?;
        let path = self.dir.volume(deployment, &request.instance);
        let failed = |action: &str, e: std::io::Error| AgentError::Failed(format!("{action} {}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| failed("creating the directory of", e))?;
        }
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => file.set_len(u64::from(size_mib) << 20).map_err(|e| failed("sizing the volume", e))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(failed("creating the volume", e)),
        }
        Ok(Some(path))
    }
}

/// One run this agent launched.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Launch {
    instance: String,
    pid: u32,
    start_ticks: u64,
}

/// The runs this agent launched and has not stopped, kept in `<data-dir>/launches` (one JSON
/// object a line, rewritten whole on each change) so a restarted agent still knows them.
/// Entries whose process is gone are dropped when the file is next written, so it stays as long
/// as the list of live runs.
#[derive(Debug)]
struct Launches {
    path: std::path::PathBuf,
    runs: std::sync::Mutex<Vec<Launch>>,
}

impl Launches {
    fn open(path: std::path::PathBuf) -> Launches {
        let runs = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        Launches { path, runs: std::sync::Mutex::new(runs) }
    }

    fn save(&self, runs: &mut Vec<Launch>) -> Result<(), AgentError> {
        runs.retain(|r| crate::launcher::proc::is_alive(r.pid, r.start_ticks));
        let text: String = runs.iter().map(|r| serde_json::to_string(r).expect("plain data") + "\n").collect();
        crate::credentials::write_secret_file(&self.path, &text)
            .map_err(|e| AgentError::Failed(format!("recording the run: {e:#}")))
    }

    fn add(&self, launch: Launch) -> Result<(), AgentError> {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.push(launch);
        self.save(&mut runs)
    }

    fn remove(&self, launch: &Launch) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.retain(|r| r != launch);
        let _ = self.save(&mut runs);
    }

    /// The recorded launch that `run` names; `Ok(None)` for runs without a process (the sim
    /// launcher's). Refuses a pid and start time this agent did not launch as that instance.
    fn check(&self, run: &RunRef) -> Result<Option<Launch>, AgentError> {
        let Some(pid) = run.pid else { return Ok(None) };
        // A run that has ended names no process: stopping it touches nothing, so it needs no record.
        if !run.start_ticks.is_some_and(|start| crate::launcher::proc::is_alive(pid, start)) {
            return Ok(None);
        }
        let wanted = Launch { instance: run.instance.clone(), pid, start_ticks: run.start_ticks.unwrap_or(u64::MAX) };
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if runs.contains(&wanted) {
            return Ok(Some(wanted));
        }
        Err(AgentError::NotLaunchedHere(format!(
            "this agent did not launch pid {pid} (start time {:?}) as instance {:?}: refused",
            run.start_ticks, run.instance
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_log_is_rotated_under_a_writer_that_keeps_appending() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("console.log");
        let mut writer = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("opens");
        writer.write_all(&[b'x'; 3000]).expect("writes");
        assert!(!rotate_log(&path, 4000).expect("checks"), "small logs stay");
        writer.write_all(b"last line before\n").expect("writes");
        assert!(rotate_log(&path, 2000).expect("rotates"));
        writer.write_all(b"first line after\n").expect("writes");
        assert_eq!(std::fs::read_to_string(&path).expect("reads"), "first line after\n");
        assert!(std::fs::read_to_string(path.with_extension("log.1")).expect("kept").ends_with("last line before\n"));
    }
}

/// The largest answer the manager reads from an agent: JSON documents, logs at most
/// [`LOG_WINDOW`] (escaped, up to six bytes a byte).
const MAX_AGENT_RESPONSE: u64 = 16 << 20;

/// An agent on another host, reached over TLS with its certificate pinned, presenting the token
/// derived for that host ([`crate::credentials::manager_token`]).
#[derive(Debug)]
pub struct RemoteAgent {
    /// The client and token, or why the stored address cannot be used.
    link: Result<(crate::peer::wire::PeerClient, String), String>,
}

impl RemoteAgent {
    /// The agent of host `name` at `address` (`https://HOST:PORT#sha256=<fingerprint>`, as
    /// stored at join), called with the token derived from `admin_token`.
    pub fn new(name: &str, address: &str, admin_token: &str) -> RemoteAgent {
        let link = crate::credentials::parse_pinned_address(address).and_then(|(url, fingerprint)| {
            let config = crate::peer::tls::pinned_client_config(fingerprint).map_err(|e| e.to_string())?;
            let client = crate::peer::wire::PeerClient::with_config(&url, config, Duration::from_secs(5))
                .map_err(|e| e.to_string())?;
            Ok((client, crate::credentials::manager_token(admin_token, name, &fingerprint)))
        });
        RemoteAgent { link }
    }

    fn call<T: serde::de::DeserializeOwned>(&self, method: &str, path: &str, body: &[u8]) -> Result<T, AgentError> {
        self.call_as(method, path, body, true)
    }

    fn call_as<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        with_token: bool,
    ) -> Result<T, AgentError> {
        use crate::peer::wire::CallError;
        let (client, token) = self.link.as_ref().map_err(|e| AgentError::Unreachable(e.clone()))?;
        let bearer = with_token.then_some(token.as_str());
        let response = client
            .call_with_bearer(method, &format!("/v1{path}"), bearer, body, MAX_AGENT_RESPONSE)
            .map_err(|e| match e {
                CallError::Status { status, message, .. } if status < 500 || status == 422 => {
                    match serde_json::from_str::<rack_api::ErrorBody>(&message) {
                        Ok(body) if status == 403 && body.error.code == "not_launched_here" => {
                            AgentError::NotLaunchedHere(body.error.message)
                        }
                        Ok(body) if body.error.code == "launch_impossible" => {
                            AgentError::Impossible(body.error.message)
                        }
                        Ok(body) => AgentError::Failed(body.error.message),
                        Err(_) => AgentError::Failed(message),
                    }
                }
                other => AgentError::Unreachable(other.to_string()),
            })?;
        serde_json::from_slice(&response.body).map_err(|e| {
            AgentError::Unreachable(format!("the agent answered with a body this manager cannot read: {e}"))
        })
    }

    fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, AgentError> {
        self.call("POST", path, &serde_json::to_vec(body).expect("request bodies are plain data"))
    }

    /// Invites a waiting agent (`agent --manager-url`) to join as `name`; it answers once joined.
    pub fn invite(&self, name: &str) -> Result<rack_api::Host, AgentError> {
        // Without the token: a waiting agent has none yet, and the invite carries no secret.
        let body = serde_json::to_vec(&rack_api::Invite { name: name.to_owned() }).expect("plain data");
        self.call_as("POST", "/agent/invite", &body, false)
    }
}

impl HostAgent for RemoteAgent {
    fn launch(&self, request: &LaunchRequest) -> Result<Launched, AgentError> {
        self.post("/agent/launch", request)
    }

    fn state(&self, run: &RunRef) -> Result<RunState, AgentError> {
        self.post("/agent/state", run)
    }

    fn stop(&self, run: &RunRef) -> Result<(), AgentError> {
        self.post::<_, serde_json::Value>("/agent/stop", run).map(|_| ())
    }

    fn stats(&self, run: &RunRef) -> Result<Option<RunStats>, AgentError> {
        self.post("/agent/stats", run)
    }

    fn logs(&self, instance: &str, offset: u64) -> Result<LogChunk, AgentError> {
        self.call("GET", &format!("/agent/logs/{instance}?offset={offset}"), &[])
    }

    fn remove_volume(&self, volume: &VolumeRef) -> Result<(), AgentError> {
        self.post::<_, serde_json::Value>("/agent/remove-volume", volume).map(|_| ())
    }

    fn ping(&self) -> Result<(), AgentError> {
        self.call::<JoinRequest>("GET", "/agent/info", &[]).map(|_| ())
    }
}
