//! The tender launcher: one `tender` process (Mast's minimal KVM monitor) per run, each with its
//! own tap device.
//!
//! # Network
//! Instance networking is routed, not bridged: every instance gets a slot, slot `n` the `n`-th
//! /30 of the agent's subnet (default 10.64.0.0/14, `--tender-subnet`), and a persistent tap
//! `mt<n>` in the agent's network namespace with the host end (`.1`) on it. The guest boots with
//! `ip=<.2>/30 gw=<.1>`, so the agent's host reaches it at `<.2>:<port>` through the route the
//! /30 installs: that is the endpoint `ps` shows, with no port forwarding and no proxy, and it
//! keeps working while the daemon is down. Guests cannot reach each other (no bridge), and
//! nothing reaches them from other hosts unless the operator routes the subnet.
//!
//! The slot is kept in `instances/<id>/tender-slot` so a restarted run gets the same address and
//! a restarted daemon knows which tap a run it adopted uses. A run's tap is deleted when the run is
//! seen to have ended and when it is stopped; a new run creates it afresh.
//!
//! # Processes
//! As with QEMU: each tender runs in its own process group with its console appended to the
//! instance's log, so it outlives the daemon; runs are known by pid and start time
//! ([`super::proc`]), so a reused pid is never adopted or killed. The tender's exit status is the
//! guest's, or 125 (could not start the guest) or 126 (the guest broke the ABI).

use std::{
    collections::{BTreeSet, HashMap},
    fs::{self, File, OpenOptions},
    os::unix::process::{CommandExt, ExitStatusExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
};

use hostnet::{Link, Subnet, ip};
use images::Arch;
use rack_api::{
    PortForward,
    agent::{Launched, RunRef, RunState, RunStats},
};
use rustix::process::{Pid, Signal, kill_process};

use super::{LaunchError, LaunchSpec, Launcher, is_tender_kernel, proc, run_console};

/// Tap devices are named `mt<slot>`.
pub const TAP_PREFIX: &str = "mt";

/// The file in an instance's directory that holds its slot.
const SLOT_FILE: &str = "tender-slot";

/// How the agent runs tenders.
#[derive(Debug, Clone)]
pub struct TenderConfig {
    /// The `tender` binary.
    pub binary: PathBuf,
    /// Instances' links are cut from this range.
    pub subnet: Subnet,
    /// `<data-dir>/instances`: where each instance's slot file lives.
    pub instances_dir: PathBuf,
    /// The trusted-keys file the tender verifies images against (the agent's own).
    pub trusted_keys: PathBuf,
}

/// Where the `tender` binary is: `given` (`--tender` or `MAST_TENDER`), else next to this
/// program (where `cargo build` puts both).
pub fn find_binary(given: Option<&Path>) -> Result<PathBuf, String> {
    let candidate = match given {
        Some(path) => path.to_owned(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this program's path to look for `tender` next to it: {e}"))?
            .with_file_name("tender"),
    };
    if candidate.is_file() {
        return Ok(candidate);
    }
    Err(format!(
        "the tender launcher needs the `tender` binary, and {} does not exist: build it with \
         `cargo build --release -p tender` (it is looked for next to rack-manager), or pass --tender PATH \
         (or MAST_TENDER)",
        candidate.display()
    ))
}

#[derive(Debug)]
pub struct TenderLauncher {
    config: TenderConfig,
    arches: Vec<Arch>,
    /// Runs this process started: they can be waited for, which gives the exact exit status.
    runs: Mutex<HashMap<u32, Child>>,
    /// Held while a slot is chosen and claimed, so two launches never take the same one.
    slots: Mutex<()>,
}

impl TenderLauncher {
    /// A launcher for this host's own architecture, when KVM is usable.
    pub fn new(config: TenderConfig) -> TenderLauncher {
        let native = if cfg!(target_arch = "aarch64") { Arch::Aarch64 } else { Arch::X86_64 };
        let arches = if qemu::kvm::unavailable_reason().is_none() { vec![native] } else { Vec::new() };
        TenderLauncher { config, arches, runs: Mutex::new(HashMap::new()), slots: Mutex::new(()) }
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Child>> {
        self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn slot_file(&self, instance: &str) -> PathBuf {
        self.config.instances_dir.join(instance).join(SLOT_FILE)
    }

    fn recorded_slot(&self, instance: &str) -> Option<u32> {
        fs::read_to_string(self.slot_file(instance)).ok()?.trim().parse().ok()
    }

    /// The instance's link: its recorded slot, or the lowest one no instance has recorded and no
    /// existing interface uses (recorded before it is returned).
    fn claim_link(&self, instance: &str) -> Result<Link, LaunchError> {
        let _claiming = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(link) = self.recorded_slot(instance).and_then(|slot| self.config.subnet.link(slot)) {
            return Ok(link);
        }
        let mut used = BTreeSet::new();
        for entry in fs::read_dir(&self.config.instances_dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            used.extend(self.recorded_slot(&name));
        }
        for name in ip::interfaces()? {
            used.extend(name.strip_prefix(TAP_PREFIX).and_then(|n| n.parse::<u32>().ok()));
        }
        let slot = (0..self.config.subnet.slots()).find(|s| !used.contains(s)).ok_or_else(|| {
            LaunchError::Spawn(format!("all {} links of {} are in use", self.config.subnet.slots(), self.config.subnet))
        })?;
        let path = self.slot_file(instance);
        fs::write(&path, format!("{slot}\n")).map_err(|source| LaunchError::Io { action: "writing", path, source })?;
        self.config.subnet.link(slot).ok_or_else(|| LaunchError::Spawn(format!("slot {slot} is outside the subnet")))
    }

    /// Deletes the tap of `instance`'s slot, if it exists.
    fn delete_tap(&self, instance: &str) {
        let Some(slot) = self.recorded_slot(instance) else { return };
        let tap = format!("{TAP_PREFIX}{slot}");
        if ip::interfaces().is_ok_and(|names| names.contains(&tap))
            && let Err(e) = ip::delete_tap(&tap)
        {
            tracing::info!("deleting the tap {tap} of {instance}: {e}");
        }
    }
}

/// A tender's exit as the API reports it: its status, or minus the signal that killed it.
fn status_of(status: std::process::ExitStatus) -> Option<i32> {
    status.code().or_else(|| status.signal().map(|s| -s))
}

impl Launcher for TenderLauncher {
    fn name(&self) -> &'static str {
        "tender"
    }

    fn arches(&self) -> Vec<Arch> {
        self.arches.clone()
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<Launched, LaunchError> {
        if !self.arches.contains(&spec.arch) {
            return Err(LaunchError::UnsupportedArch { arch: spec.arch, launcher: "tender" });
        }
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| LaunchError::Io { action, path, source }
        };
        let kernel = fs::read(&spec.kernel).map_err(io("reading", &spec.kernel))?;
        if !is_tender_kernel(&kernel) {
            return Err(LaunchError::WrongPlatform(
                "the image was built for QEMU, and the tender launcher boots only images built for the tender: \
                 build it with `cargo xtask image build --platform tender` and push that"
                    .into(),
            ));
        }
        let instance_dir = spec.log.parent().ok_or_else(|| LaunchError::Spawn("the log has no directory".into()))?;
        fs::create_dir_all(instance_dir).map_err(io("creating", instance_dir))?;
        let instance = instance_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let link = self.claim_link(&instance)?;
        let tap = link.tap(TAP_PREFIX);
        // A tap left by an earlier run of this instance (the daemon died before it saw the run end).
        if ip::interfaces()?.contains(&tap) {
            ip::delete_tap(&tap)?;
        }
        ip::create_tap(&tap, &link)?;

        let console = OpenOptions::new().create(true).append(true).open(&spec.log).map_err(io("opening", &spec.log))?;
        let log_offset = console.metadata().map_err(io("reading", &spec.log))?.len();
        let stderr = File::create(&spec.diagnostics).map_err(io("creating", &spec.diagnostics))?;
        let mut command = Command::new(&self.config.binary);
        command
            .args(["--net", &tap, "--mac", &link.guest_mac(), "--mem", &spec.memory_mib.to_string()])
            // The agent's trust set, not the tender's default (a workspace's keys).
            .arg("--key")
            .arg(&self.config.trusted_keys)
            .args(spec.ready_socket.iter().flat_map(|path| [std::ffi::OsStr::new("--ready-socket"), path.as_os_str()]))
            // The instance's volume as the tender's disk (kvlog's log).
            .args(spec.volume.iter().flat_map(|path| [std::ffi::OsStr::new("--block"), path.as_os_str()]))
            .arg(&spec.image)
            .arg("--")
            .args(&spec.args)
            // Last, so they win over any address the deployment's own arguments give.
            .args(link.guest_args())
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(stderr)
            // Its own process group: a signal to the daemon's group (Ctrl-C) does not reach it.
            .process_group(0);
        let child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = ip::delete_tap(&tap);
                return Err(LaunchError::Spawn(format!("starting {}: {e}", self.config.binary.display())));
            }
        };
        let pid = child.id();
        let start_ticks = proc::stat(pid).map(|s| s.start_ticks);
        self.runs().insert(pid, child);
        let ports = spec
            .listen
            .iter()
            .map(|l| PortForward {
                host_port: l.port,
                guest_port: l.port,
                protocol: l.protocol.clone(),
                address: Some(link.guest.into()),
            })
            .collect();
        Ok(Launched { pid: Some(pid), start_ticks, log_offset, ports })
    }

    fn state(&self, run: &RunRef, log: &Path) -> RunState {
        let Some(pid) = run.pid else { return RunState::Exited { status: None } };
        let mut runs = self.runs();
        let state = match runs.get_mut(&pid).map(Child::try_wait) {
            Some(Ok(None)) => return RunState::Running,
            Some(Ok(Some(status))) => {
                runs.remove(&pid);
                RunState::Exited { status: status_of(status) }
            }
            Some(Err(_)) => {
                runs.remove(&pid);
                RunState::Exited { status: None }
            }
            // A run of an earlier daemon: alive only if the pid still names the same process. Its
            // exit status went to that daemon; the runtime's last console line may still say it.
            None => match run.start_ticks {
                Some(start) if proc::is_alive(pid, start) => return RunState::Running,
                _ => {
                    RunState::Exited { status: qemu::reported_status(&run_console(log, run.log_offset)).map(i32::from) }
                }
            },
        };
        drop(runs);
        self.delete_tap(&run.instance);
        state
    }

    fn stop(&self, run: &RunRef) {
        if let Some(pid) = run.pid {
            if let Some(mut child) = self.runs().remove(&pid) {
                let _ = child.kill();
                let _ = child.wait();
            } else if let (Some(start), Some(target)) = (run.start_ticks, Pid::from_raw(pid as i32))
                && proc::is_alive(pid, start)
            {
                let _ = kill_process(target, Signal::KILL);
            }
        }
        self.delete_tap(&run.instance);
    }

    fn stats(&self, run: &RunRef) -> Option<RunStats> {
        proc::run_stats(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_is_named_with_the_fix() {
        let error = find_binary(Some(Path::new("/nonexistent/tender"))).expect_err("missing");
        assert!(error.contains("/nonexistent/tender") && error.contains("cargo build --release -p tender"), "{error}");
    }
}
