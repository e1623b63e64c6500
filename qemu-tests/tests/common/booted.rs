//! A network appliance booted for a probe, on QEMU (either architecture, its port forwarded from
//! the host's loopback) or on the tender (x86_64, over a tap in a network namespace of the
//! test's own). The boot tests `cargo xtask new` generates use this, so one probe checks all
//! three.

use std::{
    io::{BufRead, BufReader},
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, OnceLock, mpsc},
    thread,
    time::{Duration, Instant},
};

use images::{
    Arch, Platform,
    build::{self, Profile, cargo_command, workspace_root},
};
use qemu::{Instance, free_local_port, kvm};

use super::TIMEOUT;

/// TCP or UDP: which kind of port the appliance serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// The tap in the tender's namespace is the guest's gateway; the guest has a static address.
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const TAP: &str = "tap0";

/// A booted appliance; killed (and its namespace deleted) on drop.
pub enum Booted {
    Qemu { instance: Instance, address: SocketAddr },
    Tender { child: Child, netns: hostnet::ip::Netns, address: SocketAddr },
}

impl Booted {
    /// `app` on QEMU for `arch`, with `port` forwarded; `None` (the reason printed) when `arch`
    /// cannot run here. Returns once the appliance says it listens.
    pub fn qemu(app: &str, arch: Arch, test: &str, port: u16, proto: Proto) -> Option<Booted> {
        if arch == Arch::X86_64 && !kvm::available_for(test) {
            return None;
        }
        let machine = qemu::appliance_machine(app, arch).unwrap_or_else(|e| panic!("building {app}: {e}"));
        // Another process may take the free port before QEMU binds it; QEMU then exits at once.
        for _ in 0..3 {
            let host_port = free_local_port().expect("a free port on 127.0.0.1");
            let machine = match proto {
                Proto::Tcp => machine.clone().forward_tcp(host_port, port),
                Proto::Udp => machine.clone().forward_udp(host_port, port),
            };
            let mut instance = machine.spawn().expect("starting QEMU");
            match instance.wait_for(": listening on", TIMEOUT) {
                Ok(_) => {
                    return Some(Booted::Qemu { instance, address: SocketAddr::from(([127, 0, 0, 1], host_port)) });
                }
                Err(qemu::WaitError::Exited { .. }) => continue,
                Err(e) => panic!("{test}: {e}; console: {:?}", instance.console()),
            }
        }
        panic!("{test}: QEMU could not forward a free port three times");
    }

    /// `app` on the tender (x86_64) in a namespace of its own; `None` (the reason printed) without
    /// KVM or without root for the namespace.
    pub fn tender(app: &str, test: &str, port: u16) -> Option<Booted> {
        if !kvm::available_for(test) {
            return None;
        }
        let netns = match namespace(test) {
            Ok(netns) => netns,
            Err(reason) => {
                kvm::skip(test, &format!("it needs a network namespace with a tap device (root), but {reason}"));
                return None;
            }
        };
        let image = build::build_for_platform(&workspace_root(), app, Arch::X86_64, Platform::Tender, Profile::Release)
            .unwrap_or_else(|e| panic!("building {app} for the tender: {e}"));
        let fd = Arc::new(netns.open().expect("the namespace just created"));
        let mut command = Command::new(tender_binary());
        command.args(["--net", TAP]).arg(&image.artifact).args([
            "--".to_owned(),
            format!("ip={GUEST_IP}/24"),
            format!("gw={HOST_IP}"),
        ]);
        hostnet::ip::run_in(&mut command, fd);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("tender starts");
        let stdout = child.stdout.take().expect("piped");
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        let deadline = Instant::now() + TIMEOUT;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(": listening on") => {
                    return Some(Booted::Tender { child, netns, address: SocketAddr::from((GUEST_IP, port)) });
                }
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("{test}: {app} never said it listens on the tender; console:\n{}", seen.join("\n"));
    }

    /// Runs `probe` against the appliance's address, from where it is reachable (inside the
    /// namespace, for the tender).
    pub fn probe<T: Send>(&self, probe: impl FnOnce(SocketAddr) -> T + Send) -> T {
        match self {
            Booted::Qemu { address, .. } => probe(*address),
            Booted::Tender { netns, address, .. } => {
                let fd = netns.open().expect("the namespace exists");
                thread::scope(|scope| {
                    scope
                        .spawn(|| {
                            hostnet::ip::enter(&fd).expect("joining the namespace");
                            probe(*address)
                        })
                        .join()
                        .expect("the probe does not panic")
                })
            }
        }
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        match self {
            Booted::Qemu { instance, .. } => instance.kill(),
            Booted::Tender { child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A namespace `mast-boot-PID-N` with the tap, addressed as the guest's gateway.
fn namespace(test: &str) -> Result<hostnet::ip::Netns, String> {
    static COUNT: Mutex<u32> = Mutex::new(0);
    let n = {
        let mut count = COUNT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *count += 1;
        *count
    };
    let name = format!("mast-boot-{}-{n}", std::process::id());
    let netns = hostnet::ip::Netns::create(&name).map_err(|e| format!("{test}: {e}"))?;
    let ip = |args: &[&str]| -> Result<(), String> {
        let output =
            Command::new("ip").args(["-n", &name]).args(args).output().map_err(|e| format!("running ip: {e}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("`ip -n {name} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
        }
    };
    ip(&["tuntap", "add", "dev", TAP, "mode", "tap"])?;
    ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", TAP])?;
    ip(&["link", "set", TAP, "up"])?;
    Ok(netns)
}

/// The tender, built once per test process. In a target directory of its own: the test's own
/// build has other settings, and the two would otherwise rebuild each other's artifacts.
fn tender_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = workspace_root();
            let mut cargo = cargo_command(&root);
            cargo.args(["build", "--package", "tender", "--target-dir", "target/boot-tests"]);
            eprintln!("$ cargo build --package tender --target-dir target/boot-tests");
            let status = cargo.status().expect("running cargo");
            assert!(status.success(), "building the tender failed ({status}); its errors are above");
            root.join("target/boot-tests/debug/tender")
        })
        .clone()
}

/// How long a probe waits for an answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(20);
