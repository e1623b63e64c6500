//! What the project needs from the machine, checked and (as root on Debian) installed.
//!
//! Rust toolchain and targets come from `rust-toolchain.toml` through rustup; QEMU, etcd and
//! protoc come from the distribution. A missing one is installed with apt-get when that is
//! possible without asking (root on Debian or Ubuntu), and otherwise reported with the exact
//! command to run.

use std::{fs, os::unix::fs::MetadataExt, process::Command};

use anyhow::{Context, Result, bail};
use images::Arch;
use qemu::{install_hint, qemu_binary};

/// Makes sure QEMU for `arch` is installed, installing it where possible.
pub fn ensure_qemu(arch: Arch) -> Result<()> {
    let Err(missing) = qemu_binary(arch) else { return Ok(()) };
    if !(is_root() && is_debian_like()) {
        bail!("{missing}");
    }
    let package = qemu::debian_package(arch);
    eprintln!("{} is missing: installing {package} with apt-get", missing.binary);
    apt_install(package)?;
    qemu_binary(arch)
        .with_context(|| format!("apt-get installed {package}, yet {} is still missing", missing.binary))?;
    Ok(())
}

/// A program the test suite needs from the distribution, besides QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    pub binary: &'static str,
    /// The Debian package that has it.
    pub package: &'static str,
    /// Why it is needed, for the message when it is missing.
    pub why: &'static str,
}

/// etcd: the rack-manager's etcd store is tested against a real server.
pub const ETCD: Tool =
    Tool { binary: "etcd", package: "etcd-server", why: "rack-manager's etcd tests run a real etcd server" };

/// protoc: etcd-client's build script compiles etcd's protocol definitions with it, so nothing
/// that depends on rack-manager builds without it.
pub const PROTOC: Tool = Tool {
    binary: "protoc",
    package: "protobuf-compiler",
    why: "etcd-client's build script runs it to build rack-manager",
};

/// What to do about a tool.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// It is there.
    Present,
    /// Install it with apt-get.
    Install,
    /// Stop with this message.
    Fail(String),
}

fn step(tool: Tool, present: bool, can_install: bool) -> Step {
    match (present, can_install) {
        (true, _) => Step::Present,
        (false, true) => Step::Install,
        (false, false) => Step::Fail(missing_message(tool)),
    }
}

/// The message for a missing tool that cannot be installed here.
pub fn missing_message(tool: Tool) -> String {
    format!(
        "{} is missing ({}): install it with `sudo apt-get install -y {}` (Debian/Ubuntu), or run `cargo xtask \
         test` as root on Debian to have it installed",
        tool.binary, tool.why, tool.package
    )
}

/// Whether `binary` is a file in one of `$PATH`'s directories.
fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(binary).is_file()))
}

/// Makes sure `tool` is installed, installing it where possible.
pub fn ensure_tool(tool: Tool) -> Result<()> {
    match step(tool, on_path(tool.binary), is_root() && is_debian_like()) {
        Step::Present => Ok(()),
        Step::Fail(message) => bail!("{message}"),
        Step::Install => {
            eprintln!("{} is missing: installing {} with apt-get", tool.binary, tool.package);
            apt_install(tool.package)?;
            if !on_path(tool.binary) {
                bail!("apt-get installed {}, yet {} is still not on PATH", tool.package, tool.binary);
            }
            Ok(())
        }
    }
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
    if let Some(codename) = os_release("VERSION_CODENAME").filter(|_| package.starts_with("qemu")) {
        let pinned = format!("qemu-utils/{codename}");
        if install(&["--allow-downgrades", &pinned])? {
            return Ok(());
        }
    }
    bail!("apt-get could not install {package}; its output is above. Try by hand:\n    {}", install_hint_for(package))
}

fn install_hint_for(package: &str) -> String {
    match Arch::ALL.into_iter().find(|a| qemu::debian_package(*a) == package) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_is_installed_only_when_missing_and_otherwise_named_with_its_package() {
        assert_eq!(step(ETCD, true, true), Step::Present);
        assert_eq!(step(ETCD, true, false), Step::Present);
        assert_eq!(step(PROTOC, false, true), Step::Install);
        assert_eq!(
            step(ETCD, false, false),
            Step::Fail(
                "etcd is missing (rack-manager's etcd tests run a real etcd server): install it with `sudo apt-get \
                 install -y etcd-server` (Debian/Ubuntu), or run `cargo xtask test` as root on Debian to have it \
                 installed"
                    .into()
            )
        );
        assert_eq!(
            missing_message(PROTOC),
            "protoc is missing (etcd-client's build script runs it to build rack-manager): install it with `sudo \
             apt-get install -y protobuf-compiler` (Debian/Ubuntu), or run `cargo xtask test` as root on Debian to \
             have it installed"
        );
    }

    #[test]
    fn a_tool_on_path_is_found() {
        assert!(on_path("sh"));
        assert!(!on_path("no-such-program-mast"));
    }
}
