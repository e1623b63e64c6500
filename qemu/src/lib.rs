//! Runs Mast appliances on QEMU: the harness the boot tests (`qemu-tests`), `cargo xtask` and the
//! rack manager's QEMU launcher share.
//!
//! - [`Machine`] describes one VM (architecture, machine model, accelerator, memory, kernel, command
//!   line) and turns it into the exact QEMU command line.
//! - [`Machine::spawn`] validates the kernel file first (a garbage or truncated image is refused
//!   here, not handed to QEMU), starts QEMU, and returns an [`Instance`] that captures the console
//!   line by line with timestamps. An `Instance` is killed when dropped, so a failing test never
//!   leaves a VM behind.
//! - [`Instance::wait_exit`] waits under a hard timeout and returns a [`RunResult`]: how it ended,
//!   every console line with the time it appeared, and QEMU's own stderr.
//! - [`RunResult::check`] passes only when the exit status **and** a success marker both match.
//! - [`Machine::forward_tcp`] gives the VM a network card on QEMU's user-mode network with a port
//!   forwarded from the host's 127.0.0.1 ([`free_local_port`] finds one), for appliances that
//!   serve something.
//!
//! - [`Machine::spawn_detached`] starts a VM that outlives its starter (own process group, console
//!   to a file) for the rack manager, which reads the status back with [`reported_status`].
//! - [`qemu_binary`] finds QEMU; when it is missing, [`install_hint`] (from [`debian_package`]) is
//!   the exact command that installs it.
//!
//! [`appliance`] builds an appliance image once per process, [`kvm`] says whether hardware
//! virtualisation is usable (x86_64 appliances run under KVM), and [`version`] which QEMU is installed
//! and whether it has the Raspberry Pi 4 (`raspi4b`, QEMU 9 and later).

mod appliance;
mod binary;
mod detached;
pub mod kvm;
mod machine;
mod net;
mod run;
pub mod version;

pub use appliance::{
    ApplianceError, appliance, appliance_for_board, appliance_image, appliance_image_for_board, appliance_machine,
};
pub use binary::{MissingQemu, binary_name, debian_package, install_hint, qemu_binary};
pub use detached::reported_status;
pub use machine::{Aarch64Machine, Accel, Machine};
pub use net::free_local_port;
pub use run::{ConsoleLine, Exit, Instance, RunFailure, RunResult, SpawnError, WaitError};
