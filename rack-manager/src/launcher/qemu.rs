//! The QEMU launcher: one QEMU process per run, built by `qemu::Machine` (the one place that
//! knows the command line per architecture).
//!
//! Each VM is started in its own process group with its console appended to the instance's log
//! file, so it keeps running, and keeps logging, when the daemon is killed. A run is known by its
//! pid and its start time in `/proc`; after a daemon restart the launcher answers for runs it did
//! not start by checking both, so a pid reused by an unrelated process is never adopted (or killed).
//!
//! Not supported: aarch64 under KVM on Arm hosts (the machine model is fixed at cortex-a72 under
//! TCG); x86_64 without KVM.

use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io,
    path::Path,
    process::Child,
    sync::Mutex,
    time::{Duration, Instant},
};

use images::Arch;
use qemu::{Exit, Machine};
use rack_api::{
    PortForward,
    agent::{Launched, RunRef, RunState, RunStats},
};
use rustix::process::{Pid, Signal, kill_process};

use super::{LaunchError, LaunchSpec, Launcher, is_tender_kernel, proc, run_console};

/// A run this process started: it can be waited for, which gives the exact exit status.
#[derive(Debug)]
struct OwnRun {
    child: Child,
    machine: Machine,
    diagnostics: std::path::PathBuf,
}

#[derive(Debug)]
pub struct QemuLauncher {
    arches: Vec<Arch>,
    runs: Mutex<HashMap<u32, OwnRun>>,
    ports: PortPicker,
}

/// How long a host port handed to one QEMU is kept from the next: long enough for that QEMU to
/// bind it (or to have exited).
const PORT_QUARANTINE: Duration = Duration::from_secs(60);

/// Free loopback ports for QEMU's forwarding. Asking the kernel for a free port is not enough on
/// its own: until the QEMU it was picked for binds it, the kernel may offer the same port again,
/// and the second QEMU then fails to bind and exits (seen in CI: two instances of one agent with
/// one port). So a port handed out is not handed out again for [`PORT_QUARANTINE`].
#[derive(Debug, Default)]
struct PortPicker {
    handed_out: Mutex<HashMap<u16, Instant>>,
}

impl PortPicker {
    /// `previous` again when it can be bound now (the run that had it is gone), else a new one.
    fn pick_preferring(&self, previous: Option<u16>) -> io::Result<u16> {
        if let Some(port) = previous.filter(|p| *p != 0)
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            let mut handed_out = self.handed_out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            handed_out.insert(port, Instant::now());
            return Ok(port);
        }
        self.pick()
    }

    fn pick(&self) -> io::Result<u16> {
        let mut handed_out = self.handed_out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        handed_out.retain(|_, at| now.duration_since(*at) < PORT_QUARANTINE);
        for _ in 0..64 {
            let port = qemu::free_local_port()?;
            if handed_out.insert(port, now).is_none() {
                return Ok(port);
            }
        }
        Err(io::Error::new(io::ErrorKind::AddrInUse, "every free port offered was handed out moments ago"))
    }
}

impl QemuLauncher {
    /// A launcher for whatever this host can boot: aarch64 when `qemu-system-aarch64` is
    /// installed, x86_64 when `qemu-system-x86_64` is and KVM is usable.
    pub fn detect() -> QemuLauncher {
        let mut arches = Vec::new();
        if qemu::qemu_binary(Arch::Aarch64).is_ok() {
            arches.push(Arch::Aarch64);
        }
        if qemu::qemu_binary(Arch::X86_64).is_ok() && qemu::kvm::unavailable_reason().is_none() {
            arches.push(Arch::X86_64);
        }
        QemuLauncher { arches, runs: Mutex::new(HashMap::new()), ports: PortPicker::default() }
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<u32, OwnRun>> {
        self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// An exit as the API reports it: the appliance's status, or minus the signal that killed QEMU.
fn status_of(exit: Exit) -> Option<i32> {
    match exit {
        Exit::Status(status) => Some(i32::from(status)),
        Exit::Killed(signal) => Some(-signal),
        Exit::PoweredOff | Exit::QemuFailed(_) | Exit::TimedOut => None,
    }
}

impl Launcher for QemuLauncher {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn arches(&self) -> Vec<Arch> {
        self.arches.clone()
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<Launched, LaunchError> {
        if !self.arches.contains(&spec.arch) {
            return Err(LaunchError::UnsupportedArch { arch: spec.arch, launcher: "qemu" });
        }
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| LaunchError::Io { action, path, source }
        };
        if fs::read(&spec.kernel).is_ok_and(|kernel| is_tender_kernel(&kernel)) {
            return Err(LaunchError::WrongPlatform(
                "the image was built for the tender (`--platform tender`): run it with `--launcher tender`, or build \
                 it without `--platform tender` for QEMU"
                    .into(),
            ));
        }
        let mut machine = Machine::new(spec.arch, &spec.kernel).memory_mib(spec.memory_mib).args(&spec.args);
        machine.initrd = spec.initrd.clone();
        machine.volume = spec.volume.clone();
        // Each TCP port the manifest listens on is forwarded from a free port on the host's
        // loopback ([`PortPicker`]). Another process could still take the port before QEMU binds
        // it; QEMU then exits at once, and the restart policy decides. A restart takes the
        // previous run's port again when it is free, so the address `ps` showed stays true.
        let mut ports = Vec::new();
        for listen in spec.listen.iter().filter(|l| l.protocol == "tcp") {
            let previous = spec.previous_ports.iter().find(|p| p.guest_port == listen.port && p.address.is_none());
            let host_port = self
                .ports
                .pick_preferring(previous.map(|p| p.host_port))
                .map_err(|e| LaunchError::Spawn(format!("no free host port: {e}")))?;
            machine = machine.forward_tcp(host_port, listen.port);
            ports.push(PortForward {
                host_port,
                guest_port: listen.port,
                protocol: listen.protocol.clone(),
                address: None,
            });
        }
        if let Some(dir) = spec.log.parent() {
            fs::create_dir_all(dir).map_err(io("creating", dir))?;
        }
        let console = OpenOptions::new().create(true).append(true).open(&spec.log).map_err(io("opening", &spec.log))?;
        let log_offset = console.metadata().map_err(io("reading", &spec.log))?.len();
        let stderr = File::create(&spec.diagnostics).map_err(io("creating", &spec.diagnostics))?;
        let (child, _command) =
            machine.spawn_detached(console, stderr).map_err(|e| LaunchError::Spawn(format!("{e}")))?;
        let pid = child.id();
        let start_ticks = proc::stat(pid).map(|s| s.start_ticks);
        self.runs().insert(pid, OwnRun { child, machine, diagnostics: spec.diagnostics.clone() });
        Ok(Launched { pid: Some(pid), start_ticks, log_offset, ports })
    }

    fn state(&self, run: &RunRef, log: &Path) -> RunState {
        let Some(pid) = run.pid else { return RunState::Exited { status: None } };
        let mut runs = self.runs();
        if let Some(own) = runs.get_mut(&pid) {
            return match own.child.try_wait() {
                Ok(None) => RunState::Running,
                Ok(Some(status)) => {
                    let stderr = fs::read_to_string(&own.diagnostics).unwrap_or_default();
                    let exit = own.machine.exit_of(status, &run_console(log, run.log_offset), &stderr);
                    runs.remove(&pid);
                    RunState::Exited { status: status_of(exit) }
                }
                Err(_) => {
                    runs.remove(&pid);
                    RunState::Exited { status: None }
                }
            };
        }
        drop(runs);
        // A run of an earlier daemon: alive only if the pid still names the same process.
        match run.start_ticks {
            Some(start) if proc::is_alive(pid, start) => RunState::Running,
            _ => RunState::Exited { status: qemu::reported_status(&run_console(log, run.log_offset)).map(i32::from) },
        }
    }

    fn stop(&self, run: &RunRef) {
        let Some(pid) = run.pid else { return };
        if let Some(mut own) = self.runs().remove(&pid) {
            let _ = own.child.kill();
            let _ = own.child.wait();
            return;
        }
        let (Some(start), Some(target)) = (run.start_ticks, Pid::from_raw(pid as i32)) else { return };
        if proc::is_alive(pid, start) {
            let _ = kill_process(target, Signal::KILL);
        }
    }

    fn stats(&self, run: &RunRef) -> Option<RunStats> {
        proc::run_stats(run)
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn launcher() -> QemuLauncher {
        QemuLauncher { arches: vec![Arch::Aarch64], runs: Mutex::new(HashMap::new()), ports: PortPicker::default() }
    }

    /// The CI failure this prevents: two launches moments apart were offered the same free port
    /// (nothing had bound it yet), and the second QEMU could not forward it. Nothing binds the
    /// ports here either, so the kernel is free to offer repeats; the picker must not pass them on.
    #[test]
    fn a_port_is_not_handed_out_twice_before_its_qemu_binds_it() {
        let picker = PortPicker::default();
        let ports: Vec<u16> = (0..1000).map(|_| picker.pick().expect("a free port")).collect();
        let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice: {ports:?}");
    }

    /// What a restarted daemon does: a launcher that did not start a process answers for it by pid
    /// and start time, and never touches a process whose start time differs (a reused pid).
    #[test]
    fn runs_of_an_earlier_daemon_are_adopted_by_pid_and_start_time() {
        let mut sleeper = Command::new("sleep").arg("30").spawn().expect("sleep starts");
        let pid = sleeper.id();
        let start = proc::stat(pid).expect("its stat").start_ticks;
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("console.log");
        let run = RunRef { instance: "i".into(), pid: Some(pid), start_ticks: Some(start), log_offset: 0 };
        let impostor = RunRef { start_ticks: Some(start + 1), ..run.clone() };

        let fresh = launcher();
        assert_eq!(fresh.state(&run, &log), RunState::Running);
        assert!(fresh.stats(&run).is_some_and(|s| s.rss_bytes > 0));
        assert_eq!(fresh.state(&impostor, &log), RunState::Exited { status: None });
        fresh.stop(&impostor);
        assert!(proc::is_alive(pid, start), "a process with another start time is never killed");

        fresh.stop(&run);
        let _ = sleeper.wait();
        assert_eq!(fresh.state(&run, &log), RunState::Exited { status: None });
    }

    #[test]
    fn an_adopted_run_that_ended_reports_the_status_it_printed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("console.log");
        fs::write(&log, "mast: exit status 1\nHello\nmast: exit status 7\n").expect("written");
        let run = RunRef { instance: "i".into(), pid: Some(u32::MAX - 1), start_ticks: Some(1), log_offset: 20 };
        assert_eq!(launcher().state(&run, &log), RunState::Exited { status: Some(7) });
        // Only this run's output counts: the earlier run's status is before its offset.
        let first_run_only = RunRef { log_offset: 0, ..run };
        fs::write(&log, "mast: exit status 1\n").expect("written");
        assert_eq!(launcher().state(&first_run_only, &log), RunState::Exited { status: Some(1) });
    }
}
