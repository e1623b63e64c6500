//! What the project needs from the machine, checked and (as root on Debian) installed.
//!
//! Rust toolchain and targets come from `rust-toolchain.toml` through rustup; QEMU comes from the
//! distribution. A missing QEMU is installed with apt-get when that is possible without asking
//! (root on Debian or Ubuntu), and otherwise reported with the exact command to run.

use std::{fs, os::unix::fs::MetadataExt, process::Command};

use anyhow::{Context, Result, bail};
use images::Arch;
use qemu_tests::{install_hint, qemu_binary};

/// Makes sure QEMU for `arch` is installed, installing it where possible.
pub fn ensure_qemu(arch: Arch) -> Result<()> {
    let Err(missing) = qemu_binary(arch) else { return Ok(()) };
    if !(is_root() && is_debian_like()) {
        bail!("{missing}");
    }
    let package = qemu_tests::qemu::debian_package(arch);
    eprintln!("{} is missing: installing {package} with apt-get", missing.binary);
    apt_install(package)?;
    qemu_binary(arch)
        .with_context(|| format!("apt-get installed {package}, yet {} is still missing", missing.binary))?;
    Ok(())
}

fn apt_install(package: &str) -> Result<()> {
    let install = |extra: &[&str]| -> Result<bool> {
        let mut command = Command::new("apt-get");
        command.env("DEBIAN_FRONTEND", "noninteractive").args(["install", "-y", "-q", package]).args(extra);
        run(&mut command)
    };
    if install(&[])? {
        return Ok(());
    }
    // A stale package list is the usual reason on a fresh machine.
    run(Command::new("apt-get").args(["update", "-q"]))?;
    if install(&[])? {
        return Ok(());
    }
    // Some images carry a newer `qemu-utils` from backports, which refuses to share the machine
    // with the release's QEMU. Installing the release's own `qemu-utils` alongside resolves it.
    if let Some(codename) = os_release("VERSION_CODENAME") {
        let pinned = format!("qemu-utils/{codename}");
        if install(&["--allow-downgrades", &pinned])? {
            return Ok(());
        }
    }
    bail!("apt-get could not install {package}; its output is above. Try by hand:\n    {}", install_hint_for(package))
}

fn install_hint_for(package: &str) -> String {
    match Arch::ALL.into_iter().find(|a| qemu_tests::qemu::debian_package(*a) == package) {
        Some(arch) => install_hint(arch),
        None => format!("sudo apt-get install -y {package}"),
    }
}

/// Runs `command`, echoing it first; `Ok(false)` if it ran and failed.
fn run(command: &mut Command) -> Result<bool> {
    let shown = images::command::display(command);
    eprintln!("$ {shown}");
    let status = command.status().with_context(|| format!("running {shown}"))?;
    Ok(status.success())
}

fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

fn is_debian_like() -> bool {
    let ids = [os_release("ID"), os_release("ID_LIKE")];
    ids.iter().flatten().any(|id| id.split_whitespace().any(|w| w == "debian" || w == "ubuntu"))
}

fn os_release(key: &str) -> Option<String> {
    let text = fs::read_to_string("/etc/os-release").ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .map(|value| value.trim_matches('"').to_owned())
}

/// Makes sure `moto_server` (the S3-compatible server the replication tests start) is installed,
/// installing `moto[server]` with pip where it is missing.
pub fn ensure_moto() -> Result<()> {
    let present = || Command::new("moto_server").arg("--help").output().is_ok_and(|o| o.status.success());
    if present() {
        return Ok(());
    }
    eprintln!("moto_server is missing (the replication tests run against it): installing moto[server] with pip");
    let pip = |extra: &[&str]| -> Result<bool> {
        let mut command = Command::new("python3");
        command.args(["-m", "pip", "install", "-q", "moto[server]"]).args(extra);
        run(&mut command).or(Ok(false))
    };
    // Debian's system Python refuses pip installs (PEP 668) unless told the user means it.
    let installed = pip(&[])? || (is_root() && is_debian_like() && pip(&["--break-system-packages"])?);
    if installed && present() {
        return Ok(());
    }
    bail!(
        "moto_server is not installed and pip could not install it; install it by hand with\n    \
         pip install 'moto[server]'\n(it must be on PATH; the S3 replication tests start it on a loopback port)"
    )
}
