//! `tender`: the per-appliance KVM monitor. One small process per appliance: it verifies a signed
//! `.mast` image, maps the RAM its manifest asks for, creates one vCPU and runs it on the main
//! thread until the guest exits.
//!
//! ```text
//! tender [--mem MIB] [--net TAP [--mac MAC]] [--block FILE] [--key KEY|FILE] [--ready-socket PATH] [--stats] IMAGE.mast [-- ARGS...]
//! ```
//!
//! Exit status: the guest's own (0–255, from the Exit hypercall); 125 when the tender could not
//! start it (bad or untrusted image, a kernel built for QEMU, no KVM, a missing tap); 126 when the
//! guest broke the ABI (then one line on stderr says what it did, and where); 128 + the signal when
//! SIGTERM or SIGINT stopped it (after printing `--stats`).
//!
//! # Design
//! - **Hypercalls, not emulated devices.** The guest talks to the tender through the few calls of
//!   `tender-abi` (console, exit, poll, net rings, block, ready), one VM exit each, with an argument block
//!   in guest RAM. No device model, no instruction decoding, no interrupt controller: less code to
//!   trust, and far fewer exits than port-I/O serial or virtio notifications, which matters where
//!   every exit costs ~0.1 ms (nested KVM).
//! - **Polling, no interrupts.** The guest never takes an interrupt. Its event loop calls Poll,
//!   which moves frames between the shared rings and the tap, then blocks in `ppoll` on the tap
//!   until a frame arrives or the guest's timeout passes. An idle appliance is a process asleep in
//!   `ppoll`, costing no CPU; the clock is the guest's own cycle counter, read without an exit.
//! - **Small.** Guest RAM is one `MAP_NORESERVE` anonymous mapping (no huge pages) that the tender
//!   never zeroes or pre-faults: a page costs host memory only once someone touches it. One thread.
//! - **Distrust.** Every address and length from the guest is checked against its RAM before use
//!   (vm-memory's checked accessors; no pointer arithmetic on guest addresses), ring counters are
//!   checked for possible states, and anything outside the contract stops the guest with status
//!   126 rather than being guessed at. Before the first guest instruction the tender sets
//!   `PR_SET_NO_NEW_PRIVS` and a seccomp filter ([`sandbox`]) that allows only the run loop's own
//!   system calls (`KVM_RUN` on its vCPU, read/write, ppoll, pread/pwrite/fdatasync, memory
//!   management for the allocator, exit); anything else kills the process.
//!
//! # Architectures
//! - x86_64 (tested here): the guest enters in long mode on the tender's identity map of its RAM;
//!   hypercalls are `out` to the hypercall ports or 64-bit stores to the hypercall window. On
//!   nested PVM KVM (this machine), guest code at CPL 0 is emulated instruction by instruction
//!   (~2 us each; a 200 000-instruction loop takes ~0.4 s) while CPL 3 code runs natively (the same
//!   loop: well under 1 ms); exits cost ~15-40 us from CPL 0 and ~0.1 ms from CPL 3. So a guest
//!   should do its privileged setup, drop to CPL 3 and make few, batched hypercalls through the
//!   window (the identity map is user-accessible for this). Mast's runtime does (see
//!   docs/tender.md: hello's first console line 10.6 -> 4.9 ms). The TSC cannot be reset under PVM: the
//!   guest reads the host's.
//! - aarch64 (KVM on Arm hosts; compile-checked with `cargo check -p tender --target
//!   aarch64-unknown-linux-gnu` and its pure parts unit-tested on any host): RAM at 1 GiB, the
//!   vCPU initialised as the host's preferred target, entry at EL1h with the MMU off (PC, X0 and
//!   PSTATE set through `KVM_SET_ONE_REG`), hypercalls as MMIO stores to the window. linux-loader's
//!   ELF loader is x86-only, so aarch64 copies the kernel's segments itself.
//!
//! # Modules
//! [`image`] (what to boot, verified) → [`kernel`] (built for this tender?) → [`layout`] (where
//! things go, boot info) → [`vm`] (KVM, memory, vCPU, run loop; per-architecture parts in [`arch`])
//! → [`hypercall`] (the calls, over [`guest`] memory, [`net`] and [`block`]); [`sandbox`],
//! [`stats`], [`violation`].

mod arch;
mod block;
mod guest;
mod hypercall;
mod image;
mod kernel;
mod layout;
mod net;
mod sandbox;
mod signals;
mod stats;
mod violation;
mod vm;

use std::{os::fd::AsRawFd, path::PathBuf, process::ExitCode, time::Instant};

use anyhow::{Context, Result};
use clap::Parser;
use tender_abi::{EXIT_GUEST_VIOLATION, EXIT_TENDER_FAILURE};

use crate::{
    hypercall::{Devices, Net},
    stats::Stats,
    vm::{Ending, Guest, Vm},
};

#[derive(Debug, Parser)]
#[command(
    name = "tender",
    version,
    about = "Runs one Mast appliance image under KVM",
    after_help = "Exit status: the appliance's own; 125 if the tender could not start it; 126 if the appliance broke the tender ABI.\n\nExamples:\n  tender target/images/x86_64-tender/release/hello.mast -- hello \"edge world\"\n  tender --net tap0 --stats httpd.mast"
)]
struct Cli {
    /// The signed appliance image (.mast) to boot; it must verify against the trusted keys.
    #[arg(value_name = "IMAGE.mast", required_unless_present = "kernel")]
    image: Option<PathBuf>,
    /// Boot a bare kernel ELF instead of an image: no signature, no manifest (development only).
    #[arg(long, value_name = "ELF", conflicts_with = "image")]
    kernel: Option<PathBuf>,
    /// Guest memory in MiB (default: the image manifest's memory_mib; 16 with --kernel).
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..))]
    mem: Option<u32>,
    /// Attach the existing tap device TAP as the appliance's network interface.
    #[arg(long, value_name = "TAP")]
    net: Option<String>,
    /// The interface's MAC address (default: a locally administered one derived from the tap name).
    #[arg(long, value_name = "MAC", requires = "net", value_parser = net::parse_mac)]
    mac: Option<[u8; 6]>,
    /// Give the appliance FILE as its block device (raw, 512-byte sectors, read-write).
    #[arg(long, value_name = "FILE")]
    block: Option<PathBuf>,
    /// Trust this public key (64 hex digits) or the keys in this trusted-keys file, instead of the
    /// workspace's ($MAST_TRUSTED_KEYS, its signing key). Repeatable.
    #[arg(long = "key", visible_alias = "trusted-key", value_name = "KEY|FILE")]
    keys: Vec<String>,
    /// When the appliance says it is ready (the Ready hypercall: it listens), send one datagram
    /// (`ready\n`) to the Unix datagram socket at PATH. The rack manager's on-demand gate binds it.
    #[arg(long, value_name = "PATH")]
    ready_socket: Option<PathBuf>,
    /// On exit, print VM exits by reason, hypercalls and timings to stderr.
    #[arg(long)]
    stats: bool,
    /// Arguments for the appliance (default: the manifest's args), as with `cargo xtask run`.
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_TENDER_FAILURE);
        }
    };
    let mut stats = Stats::new(started);
    let mut vm = match prepare(&cli) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("tender: {e:#}");
            return ExitCode::from(EXIT_TENDER_FAILURE);
        }
    };
    stats.entered = Some(Instant::now());
    let ending = vm.run(&mut stats);
    stats.ended = Some(Instant::now());
    let status = match ending {
        Ending::Exit(status) => status,
        Ending::Violation(violation, ip) => {
            let at = ip.map_or(String::new(), |ip| format!(" (guest instruction pointer {ip:#x})"));
            eprintln!("tender: guest violation: {violation}{at}; stopped it");
            EXIT_GUEST_VIOLATION
        }
        Ending::Failure(e) => {
            eprintln!("tender: {e:#}");
            EXIT_TENDER_FAILURE
        }
        Ending::Stopped(signal) => {
            eprintln!("tender: stopped by signal {signal}");
            128u8.saturating_add(signal as u8)
        }
    };
    if cli.stats {
        eprintln!("{stats}");
    }
    // The kernel reclaims the VM, its memory and fds faster than dropping them one by one would.
    std::process::exit(i32::from(status))
}

/// Everything before the guest's first instruction: image, devices, VM, sandbox.
fn prepare(cli: &Cli) -> Result<Vm> {
    let vm = build_vm(cli)?;
    // The image's bytes are in guest RAM now and their copies freed: give the freed heap back, so
    // an idle appliance's tender holds only what it uses (about 100 KiB less per instance).
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap memory to the kernel; no allocation is live in it.
    unsafe {
        libc::malloc_trim(0);
    }
    signals::catch_stop_requests()?;
    let program = sandbox::filter(vm.vcpu.as_raw_fd())?;
    sandbox::enter(&program)?;
    Ok(vm)
}

/// Opens the image and devices and builds the VM.
fn build_vm(cli: &Cli) -> Result<Vm> {
    let bootable = match (&cli.image, &cli.kernel) {
        (_, Some(kernel)) => image::open_kernel(kernel)?,
        (Some(path), None) => image::open_image(path, &image::trusted_keys(&cli.keys)?)?,
        (None, None) => unreachable!("clap requires an image or --kernel"),
    };
    let info = kernel::check(&bootable.kernel).with_context(|| format!("refusing to boot {}", bootable.name))?;
    let args = if cli.args.is_empty() { &bootable.args } else { &cli.args };
    let cmdline = layout::command_line(args)?;
    let memory_mib = cli.mem.unwrap_or(bootable.memory_mib);

    let mut devices = Devices::default();
    let mut mac = None;
    if let Some(tap) = &cli.net {
        let tap = net::Tap::open(tap)?;
        mac = Some(cli.mac.unwrap_or_else(|| net::default_mac(&tap.name)));
        devices.net = Some(Net { tap, rings: None });
    }
    if let Some(path) = &cli.block {
        devices.block = Some(block::Block::open(path)?);
    }
    if let Some(path) = &cli.ready_socket {
        devices.ready = Some(
            hypercall::ReadySignal::connect(path)
                .with_context(|| format!("connecting to the readiness socket {}", path.display()))?,
        );
    }
    let guest = Guest {
        kernel: &bootable.kernel,
        info,
        data: bootable.data.as_deref(),
        cmdline: &cmdline,
        ram_size: u64::from(memory_mib) << 20,
    };
    Vm::new(&guest, devices, mac)
}
