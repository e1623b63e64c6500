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
//!
//! What more than one launcher needs lives here, so no launcher imports another: [`run_console`]
//! and [`is_tender_kernel`]; [`proc`] reads `/proc`.

pub mod proc;
pub mod qemu;
pub mod sim;
pub mod tender;

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use images::{Arch, Platform};
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
    /// The host ports the instance's previous run forwarded, per guest port: taken again when
    /// free, so `ps` shows the same address across restarts.
    pub previous_ports: Vec<rack_api::PortForward>,
    /// On-demand wakes under the tender: the Unix datagram socket the tender tells when the
    /// appliance is ready (`tender --ready-socket`).
    pub ready_socket: Option<PathBuf>,
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

/// The console output of a run: the log from `offset` on (at most the last 64 KiB of it).
pub fn run_console(log: &Path, offset: u64) -> String {
    const MAX: u64 = 64 * 1024;
    let Ok(mut file) = File::open(log) else { return String::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    // An offset past the end means the log was rotated during the run: what is left is its tail.
    let offset = if offset > len { 0 } else { offset };
    let start = offset.max(len.saturating_sub(MAX));
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Whether `kernel` was built for the tender (it carries the tender ABI note; QEMU kernels do not).
pub fn is_tender_kernel(kernel: &[u8]) -> bool {
    images::kernel::platform_of(kernel) == Some(Platform::Tender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_an_elf_kernel_is_no_tender_kernel() {
        // Real kernels of both platforms are told apart in `tests/tender.rs`.
        assert!(!is_tender_kernel(b"not an ELF file"));
        assert!(!is_tender_kernel(&[]));
    }

    #[test]
    fn a_console_is_read_from_its_offset_and_a_rotated_log_from_its_start() {
        let dir = std::env::temp_dir().join(format!("mast-run-console-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("console.log");
        std::fs::write(&log, "first run\nsecond run\n").expect("write log");
        assert_eq!(run_console(&log, 10), "second run\n");
        assert_eq!(run_console(&log, 1000), "first run\nsecond run\n");
        assert_eq!(run_console(&dir.join("missing.log"), 0), "");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
