//! What the project needs from the machine, checked and (as root on Debian) installed.
//!
//! Rust toolchain and targets come from `rust-toolchain.toml` through rustup; QEMU, etcd and
//! protoc come from the distribution. A missing one is installed with apt-get when that is
//! possible without asking (root on Debian or Ubuntu), and otherwise reported with the exact
//! command to run.

use std::{fs, os::unix::fs::MetadataExt, process::Command};

use anyhow::{Context, Result, bail};
use images::Arch;
use qemu::{
    install_hint, qemu_binary,
    version::{Version, WANTED_MAJOR},
};

/// Where QEMU comes from on Debian bookworm, chosen by `MAST_QEMU_FROM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuFrom {
    /// `bookworm-backports` (QEMU 10): the default, and what CI runs. It has the Pi 4 (`raspi4b`).
    Backports,
    /// The release's own QEMU (7.2 on bookworm): no `raspi4b`, so the Pi 4 tests are skipped.
    Release,
}

impl QemuFrom {
    fn from_env() -> Result<QemuFrom> {
        match std::env::var("MAST_QEMU_FROM").ok().as_deref() {
            None | Some("" | "backports") => Ok(QemuFrom::Backports),
            Some("release") => Ok(QemuFrom::Release),
            Some(other) => {
                bail!("MAST_QEMU_FROM={other:?} is not understood: use `backports` (the default) or `release`")
            }
        }
    }
}

/// What to do about QEMU.
#[derive(Debug, PartialEq, Eq)]
enum QemuStep {
    /// It is there and new enough.
    Present,
    /// Keep the installed, older QEMU; print this note.
    KeepOld(String),
    /// Install the release's QEMU with apt-get.
    InstallRelease,
    /// Install QEMU 10 from bookworm-backports with apt-get.
    InstallBackports,
    /// Stop with this message.
    Fail(String),
}

/// Decides what to do: `installed` is QEMU's version (`None`: missing), `can_install` is root on
/// Debian or Ubuntu, `bookworm` whether this is Debian bookworm, `required` `MAST_REQUIRE_QEMU10=1`.
fn qemu_step(
    installed: Option<Version>,
    from: QemuFrom,
    can_install: bool,
    bookworm: bool,
    required: bool,
    missing: &str,
) -> QemuStep {
    if installed.is_some_and(|v| v.major >= WANTED_MAJOR) {
        return QemuStep::Present;
    }
    if from == QemuFrom::Backports && can_install && bookworm {
        return QemuStep::InstallBackports;
    }
    let Some(old) = installed else {
        return if can_install { QemuStep::InstallRelease } else { QemuStep::Fail(missing.to_owned()) };
    };
    let how = if bookworm && from == QemuFrom::Release {
        "unset MAST_QEMU_FROM (it is `release`) and run `cargo xtask test` as root to install it from \
         bookworm-backports"
            .to_owned()
    } else if bookworm {
        format!("install it as root with `{BACKPORTS_HINT}`")
    } else {
        "install QEMU 10 or later from your distribution".to_owned()
    };
    if required {
        QemuStep::Fail(format!(
            "QEMU {old} is older than {WANTED_MAJOR} and MAST_REQUIRE_QEMU10=1 forbids skipping the Raspberry Pi 4 (`raspi4b`) tests: {how}"
        ))
    } else {
        QemuStep::KeepOld(format!(
            "QEMU {old} is older than {WANTED_MAJOR}: the Raspberry Pi 4 (`raspi4b`) boot tests will be skipped; to run them, {how}"
        ))
    }
}

/// The commands that install QEMU 10 by hand on Debian bookworm.
const BACKPORTS_HINT: &str = "echo 'deb http://deb.debian.org/debian bookworm-backports main' > \
                              /etc/apt/sources.list.d/bookworm-backports.list && apt-get update && apt-get install -y \
                              -t bookworm-backports qemu-system-arm qemu-system-x86";

/// Makes sure QEMU for `arch` is installed, installing it where possible: on Debian bookworm as
/// root, QEMU 10 from bookworm-backports unless `MAST_QEMU_FROM=release`.
pub fn ensure_qemu(arch: Arch) -> Result<()> {
    let from = QemuFrom::from_env()?;
    let missing = match qemu_binary(arch) {
        Ok(_) => String::new(),
        Err(missing) => missing.to_string(),
    };
    let installed = match qemu::version::installed(arch) {
        Ok(version) => Some(version),
        // There, but its version unreadable: use it as it is (a test that needs more says so).
        Err(e) if missing.is_empty() => {
            eprintln!("note: {e}; using this QEMU as it is");
            return Ok(());
        }
        Err(_) => None,
    };
    let bookworm =
        os_release("ID").as_deref() == Some("debian") && os_release("VERSION_CODENAME").as_deref() == Some("bookworm");
    let step = qemu_step(installed, from, is_root() && is_debian_like(), bookworm, qemu::version::required(), &missing);
    match step {
        QemuStep::Present => Ok(()),
        QemuStep::KeepOld(note) => {
            // Only the Pi 4 (aarch64) needs the newer QEMU: say it once, not per architecture.
            if arch == Arch::Aarch64 {
                eprintln!("note: {note}");
            }
            Ok(())
        }
        QemuStep::Fail(message) => bail!("{message}"),
        QemuStep::InstallRelease => {
            let package = qemu::debian_package(arch);
            eprintln!("{} is missing: installing {package} with apt-get", qemu::binary_name(arch));
            apt_install(package)?;
            qemu_binary(arch).with_context(|| {
                format!("apt-get installed {package}, yet {} is still missing", qemu::binary_name(arch))
            })?;
            Ok(())
        }
        QemuStep::InstallBackports => {
            let have = installed.map_or("no QEMU".to_owned(), |v| format!("QEMU {v}"));
            eprintln!(
                "{have} for {arch} here; installing QEMU {WANTED_MAJOR} from Debian bookworm-backports (CI runs it; it \
                 boots the Raspberry Pi 4). Set MAST_QEMU_FROM=release to keep bookworm's QEMU 7.2 instead."
            );
            install_from_backports()?;
            match qemu::version::installed(arch) {
                Ok(v) if v.major >= WANTED_MAJOR => {
                    eprintln!("installed QEMU {v} from bookworm-backports");
                    Ok(())
                }
                Ok(v) => bail!(
                    "apt-get ran, yet {} is QEMU {v}; try by hand:\n    {BACKPORTS_HINT}",
                    qemu::binary_name(arch)
                ),
                Err(e) => bail!("apt-get ran, yet {e}; try by hand:\n    {BACKPORTS_HINT}"),
            }
        }
    }
}

/// Where backports are added: a file of the project's own, so that it is plain what added them.
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/mast-bookworm-backports.list";

/// Adds `bookworm-backports` for the machine's own Debian mirror (unless a source already has it),
/// then installs both QEMU packages from it together: they share `qemu-system-common`, so one
/// cannot move to 10 without the other. `-t` lets apt take `qemu-utils` and the other QEMU
/// packages from backports too, which the new `qemu-system-common` requires.
fn install_from_backports() -> Result<()> {
    let sources = apt_sources();
    if sources.iter().any(|(_, text)| has_suite(text, "bookworm-backports")) {
        eprintln!("bookworm-backports is already in the apt sources");
    } else {
        let mirror = sources.iter().find_map(|(name, text)| release_mirror(name, text, "bookworm"));
        let mirror = mirror.unwrap_or(Mirror { uri: "http://deb.debian.org/debian".into(), signed_by: None });
        let line = mirror.backports_line("bookworm");
        eprintln!("adding `{line}` to {BACKPORTS_SOURCE}");
        fs::write(BACKPORTS_SOURCE, format!("# Added by `cargo xtask` for QEMU 10 (docs/testing.md).\n{line}\n"))
            .with_context(|| format!("writing {BACKPORTS_SOURCE}"))?;
    }
    if !run(Command::new("apt-get").args(["update", "-q"]))? {
        bail!("apt-get update failed; its output is above");
    }
    let mut install = Command::new("apt-get");
    install.env("DEBIAN_FRONTEND", "noninteractive").args(["install", "-y", "-q", "-t", "bookworm-backports"]);
    install.args(Arch::ALL.map(qemu::debian_package));
    if !run(&mut install)? {
        bail!(
            "apt-get could not install QEMU from bookworm-backports; its output is above. Try by hand:\n    {BACKPORTS_HINT}"
        );
    }
    Ok(())
}

/// The apt source files, as (file name, text): `/etc/apt/sources.list` and `sources.list.d/*`.
fn apt_sources() -> Vec<(String, String)> {
    let mut files = vec![std::path::PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut names: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        names.sort();
        files.extend(names);
    }
    files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
        .filter_map(|p| Some((p.display().to_string(), fs::read_to_string(&p).ok()?)))
        .collect()
}

/// A Debian mirror from the apt sources.
#[derive(Debug, PartialEq, Eq)]
struct Mirror {
    uri: String,
    /// The keyring the source names (`signed-by`), kept for backports, which the same keys sign.
    signed_by: Option<String>,
}

impl Mirror {
    fn backports_line(&self, codename: &str) -> String {
        match &self.signed_by {
            Some(keyring) => format!("deb [signed-by={keyring}] {} {codename}-backports main", self.uri),
            None => format!("deb {} {codename}-backports main", self.uri),
        }
    }
}

/// Whether a source file (one-line or deb822) has `suite` enabled.
fn has_suite(text: &str, suite: &str) -> bool {
    text.lines().map(str::trim).filter(|l| !l.starts_with('#')).any(|line| {
        if let Some(suites) = line.strip_prefix("Suites:") {
            suites.split_whitespace().any(|s| s == suite)
        } else {
            one_line_source(line).is_some_and(|(_, _, s)| s == suite)
        }
    })
}

/// A one-line source `deb [options] uri suite components…` as (options, uri, suite).
fn one_line_source(line: &str) -> Option<(Option<&str>, &str, &str)> {
    let rest = line.strip_prefix("deb ")?.trim_start();
    let (options, rest) = match rest.strip_prefix('[') {
        Some(inner) => {
            let (options, rest) = inner.split_once(']')?;
            (Some(options), rest)
        }
        None => (None, rest),
    };
    let mut words = rest.split_whitespace();
    Some((options, words.next()?, words.next()?))
}

/// The mirror of the first source in `text` (file `name`) that serves `codename` itself.
fn release_mirror(name: &str, text: &str, codename: &str) -> Option<Mirror> {
    if name.ends_with(".sources") {
        // deb822: stanzas of fields, separated by blank lines.
        return text.split("\n\n").find_map(|stanza| {
            let field =
                |key: &str| stanza.lines().find_map(|l| l.trim().strip_prefix(key)?.strip_prefix(':').map(str::trim));
            let is_deb = field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
            let enabled = field("Enabled").is_none_or(|e| e != "no");
            let serves = field("Suites").is_some_and(|s| s.split_whitespace().any(|s| s == codename));
            let uri = field("URIs")?.split_whitespace().next()?;
            let signed_by = field("Signed-By").filter(|k| k.starts_with('/')).map(str::to_owned);
            (is_deb && enabled && serves).then(|| Mirror { uri: uri.to_owned(), signed_by })
        });
    }
    text.lines().map(str::trim).find_map(|line| {
        let (options, uri, suite) = one_line_source(line)?;
        let signed_by =
            options.and_then(|o| o.split_whitespace().find_map(|w| w.strip_prefix("signed-by="))).map(str::to_owned);
        (suite == codename).then(|| Mirror { uri: uri.to_owned(), signed_by })
    })
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

/// nginx: the `cache` appliance's tests and bench use it as the origin.
pub const NGINX: Tool =
    Tool { binary: "nginx", package: "nginx", why: "the cache appliance is tested against nginx as its origin" };

/// wrk: the `cache` appliance's tests and bench load it with it.
pub const WRK: Tool =
    Tool { binary: "wrk", package: "wrk", why: "the cache appliance's tests and bench drive it with wrk" };

/// Prometheus: rack-manager's `/metrics` is tested by a real Prometheus scraping it.
pub const PROMETHEUS: Tool = Tool {
    binary: "prometheus",
    package: "prometheus",
    why: "rack-manager's metrics test scrapes /metrics with a real Prometheus",
};

/// Chromium: the dashboard's browser test drives a headless Chromium.
pub const CHROMIUM: Tool =
    Tool { binary: "chromium", package: "chromium", why: "the dashboard's browser test runs a headless Chromium" };

/// chromedriver: the WebDriver server the dashboard's browser test talks to.
pub const CHROMEDRIVER: Tool = Tool {
    binary: "chromedriver",
    package: "chromium-driver",
    why: "the dashboard's browser test drives Chromium through chromedriver",
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

/// Makes sure `redbot` (REDbot, the HTTP linter the httpd origin test runs against the default
/// site) is installed, installing it from PyPI with pip where it is missing.
pub fn ensure_redbot() -> Result<()> {
    let present = || Command::new("redbot").arg("--help").output().is_ok_and(|o| o.status.success());
    if present() {
        return Ok(());
    }
    eprintln!("redbot is missing (the httpd origin test lints the site with it): installing redbot with pip");
    let pip = |extra: &[&str]| -> Result<bool> {
        let mut command = Command::new("python3");
        command.args(["-m", "pip", "install", "-q", "redbot"]).args(extra);
        run(&mut command).or(Ok(false))
    };
    let installed = pip(&[])? || (is_root() && is_debian_like() && pip(&["--break-system-packages"])?);
    if installed && present() {
        return Ok(());
    }
    bail!(
        "redbot is not installed and pip could not install it; install it by hand with\n    \
         pip install redbot\n(it must be on PATH; the httpd origin test runs it against a loopback port)"
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

    const V72: Version = Version { major: 7, minor: 2, micro: 19 };
    const V10: Version = Version { major: 10, minor: 0, micro: 2 };

    #[test]
    fn qemu_10_comes_from_backports_on_bookworm_unless_the_release_is_asked_for() {
        use QemuFrom::{Backports, Release};
        let step = |v, from, root, bookworm, required| qemu_step(v, from, root, bookworm, required, "missing");
        assert_eq!(step(Some(V10), Backports, false, true, true), QemuStep::Present);
        assert_eq!(step(Some(V10), Release, true, true, true), QemuStep::Present);
        // Old or missing on bookworm as root: backports.
        assert_eq!(step(Some(V72), Backports, true, true, false), QemuStep::InstallBackports);
        assert_eq!(step(None, Backports, true, true, true), QemuStep::InstallBackports);
        // MAST_QEMU_FROM=release: 7.2 is kept with the skip stated, unless QEMU 10 is required.
        let QemuStep::KeepOld(note) = step(Some(V72), Release, true, true, false) else { panic!("7.2 is kept") };
        assert!(note.contains("QEMU 7.2.19 is older than 10") && note.contains("will be skipped"), "{note}");
        let QemuStep::Fail(message) = step(Some(V72), Release, true, true, true) else { panic!("required fails") };
        assert!(message.contains("MAST_REQUIRE_QEMU10=1"), "{message}");
        assert_eq!(step(None, Release, true, true, false), QemuStep::InstallRelease);
        // Elsewhere (not bookworm, or not root): the release's QEMU, or a message.
        assert_eq!(step(None, Backports, true, false, false), QemuStep::InstallRelease);
        assert_eq!(step(None, Backports, false, true, false), QemuStep::Fail("missing".into()));
        let QemuStep::KeepOld(note) = step(Some(V72), Backports, false, true, false) else { panic!("kept") };
        assert!(note.contains("bookworm-backports"), "{note}");
    }

    #[test]
    fn backports_are_added_for_the_mirror_the_machine_already_uses() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
                      Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        let mirror = release_mirror("debian.sources", deb822, "bookworm").expect("the bookworm stanza");
        assert_eq!(
            mirror.backports_line("bookworm"),
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian \
             bookworm-backports main"
        );
        let list = "# a comment\ndeb http://security.debian.org/debian-security bookworm-security main\n\
                    deb [arch=amd64] http://ftp.example/debian bookworm main contrib\n";
        let mirror = release_mirror("sources.list", list, "bookworm").expect("the bookworm line");
        assert_eq!(mirror.backports_line("bookworm"), "deb http://ftp.example/debian bookworm-backports main");
        assert_eq!(release_mirror("sources.list", "deb http://x/debian trixie main", "bookworm"), None);
        assert!(!has_suite(deb822, "bookworm-backports"));
        assert!(has_suite("deb http://x/debian bookworm-backports main", "bookworm-backports"));
        assert!(has_suite("Types: deb\nSuites: bookworm-backports\n", "bookworm-backports"));
        assert!(!has_suite("# deb http://x/debian bookworm-backports main", "bookworm-backports"));
    }
}
