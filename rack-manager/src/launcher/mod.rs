//! Launchers start, watch and stop the VMs of one host. [`Launcher`] is what the host agent needs
//! from one, so a lighter launcher (a minimal KVM tender) can replace QEMU without touching the
//! agent, the reconciler or the API.
//!
//! - [`qemu::QemuLauncher`]: a QEMU process per instance (aarch64 `virt` under TCG, x86_64
//!   `microvm` under KVM), started in its own process group so it outlives the daemon.
//! - [`tender::TenderLauncher`]: a `tender` process per instance (the minimal KVM monitor), each
//!   with its own tap device and /30 on this host ([`hostnet`]).
//! - [`sim::SimLauncher`]: no VMs at all; instances "run" until stopped. For scale tests and for
//!   trying placement on thousands of hosts.

pub mod proc;
pub mod qemu;
pub mod sim;
pub mod tender;

use std::path::PathBuf;

use images::Arch;
use rack_api::{
    ListenPort,
    agent::{Launched, RunRef, RunState, RunStats},
};

/// Everything needed to start one run of an instance. (A deployment's vCPUs reserve capacity at
/// placement; every VM gets one, because the runtime uses one CPU.)
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub arch: Arch,
    /// The verified, signed image (`.mast`) itself: the tender boots the image, not its parts.
    pub image: PathBuf,
    /// The verified kernel, unpacked from its image.
    pub kernel: PathBuf,
    /// The verified data bundle, unpacked from its image, if the image has one (loaded as the
    /// initial ramdisk).
    pub initrd: Option<PathBuf>,
    pub memory_mib: u32,
    pub args: Vec<String>,
    pub listen: Vec<ListenPort>,
    /// The instance's console log; the run appends to it.
    pub log: PathBuf,
    /// Where the launcher keeps its own diagnostics for the run (QEMU's stderr).
    pub diagnostics: PathBuf,
    /// The instance's volume, a raw disk image attached as its virtio-blk device, if its image
    /// declares one (`[[block]]`).
    pub volume: Option<PathBuf>,
}

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("this host cannot boot {arch} appliances with the {launcher} launcher")]
    UnsupportedArch { arch: Arch, launcher: &'static str },
    #[error("could not start the VM: {0}")]
    Spawn(String),
    #[error("{0}")]
    WrongPlatform(String),
    #[error("{0}")]
    Network(#[from] hostnet::ip::NetError),
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
}

/// Starts, watches and stops the VMs of one host. Runs are named by [`RunRef`] (pid and start
/// time), not by a handle, so a launcher can answer about runs it did not start itself: those of a
/// previous daemon process, adopted after a restart.
pub trait Launcher: Send + Sync {
    /// `qemu`, `tender` or `sim`: shown in `host ls`.
    fn name(&self) -> &'static str;
    /// The architectures this host can boot.
    fn arches(&self) -> Vec<Arch>;
    fn launch(&self, spec: &LaunchSpec) -> Result<Launched, LaunchError>;
    /// Whether the run is still going, and if not, how it ended.
    fn state(&self, run: &RunRef, log: &std::path::Path) -> RunState;
    /// Ends the run, if it is still going. Never touches a process that is not the run.
    fn stop(&self, run: &RunRef);
    fn stats(&self, run: &RunRef) -> Option<RunStats>;
}
