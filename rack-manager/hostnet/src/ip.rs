//! Taps and network namespaces, through iproute2's `ip` (one process per batch of changes) and
//! `setns(2)` (no process at all) to run a command or a thread inside a namespace.
//!
//! Creating a thousand taps one `ip` process at a time costs a thousand process starts; a batch
//! (`ip -batch -`) does them in one. Starting a tender inside a namespace with `ip netns exec`
//! would cost one more process per tender; [`run_in`] joins the namespace in the child between
//! `fork` and `exec` instead.

use std::{
    fs,
    io::Write,
    os::{
        fd::{AsFd, OwnedFd},
        unix::process::CommandExt,
    },
    path::PathBuf,
    process::{Command, Stdio},
    sync::Arc,
};

use rustix::{
    fs::{Mode, OFlags},
    thread::{LinkNameSpaceType, move_into_link_name_space},
};

use crate::plan::Link;

/// Where `ip netns add` puts a namespace's handle.
pub const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("`{command}` failed ({status}): {stderr}")]
    Command { command: String, status: String, stderr: String },
    #[error("cannot run `ip` ({0}): install iproute2")]
    NoIp(std::io::Error),
    #[error("{action}: {source}")]
    Io { action: String, source: std::io::Error },
}

/// Runs `ip ARGS…`, with `stdin` fed to it (for `-batch -`).
fn ip(args: &[&str], stdin: Option<&str>) -> Result<(), NetError> {
    let command = format!("ip {}", args.join(" "));
    let mut child = Command::new("ip")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NetError::NoIp)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error means `ip` stopped early; its status and stderr say why.
        let _ = pipe.write_all(text.as_bytes());
    }
    let output = child.wait_with_output().map_err(|source| NetError::Io { action: command.clone(), source })?;
    if output.status.success() {
        return Ok(());
    }
    Err(NetError::Command {
        command,
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

/// Runs `lines` (each an `ip` command without the `ip`) in one `ip -batch` process, in `netns`
/// or in the caller's namespace. Stops at the first failure.
pub fn batch(netns: Option<&str>, lines: &[String]) -> Result<(), NetError> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut args = Vec::new();
    if let Some(name) = netns {
        args.extend(["-n", name]);
    }
    args.extend(["-batch", "-"]);
    ip(&args, Some(&(lines.join("\n") + "\n")))
}

/// The `ip` commands that create `tap` for `link`: a persistent tap (a tender attaches to it by
/// name), the host end's address (which adds the route to the guest), and up.
pub fn tap_lines(tap: &str, link: &Link) -> [String; 3] {
    [
        format!("tuntap add dev {tap} mode tap"),
        format!("addr add {} dev {tap}", link.host_cidr()),
        format!("link set dev {tap} up"),
    ]
}

/// Creates `tap` for `link` in the caller's namespace (one `ip` process).
pub fn create_tap(tap: &str, link: &Link) -> Result<(), NetError> {
    batch(None, &tap_lines(tap, link))
}

/// Deletes `tap` from the caller's namespace.
pub fn delete_tap(tap: &str) -> Result<(), NetError> {
    ip(&["link", "del", "dev", tap], None)
}

/// The names of the network interfaces in the calling thread's namespace. (From /proc, not
/// /sys: sysfs shows the namespace it was mounted in, not the caller's.)
pub fn interfaces() -> Result<Vec<String>, NetError> {
    let path = "/proc/thread-self/net/dev";
    let text = fs::read_to_string(path).map_err(|source| NetError::Io { action: format!("reading {path}"), source })?;
    // Two header lines, then `  name: counters…`.
    Ok(text.lines().skip(2).filter_map(|l| Some(l.split_once(':')?.0.trim().to_owned())).collect())
}

/// A network namespace this process created; deleted (with everything in it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    deleted: bool,
}

impl Netns {
    /// `ip netns add NAME`, then brings its loopback up.
    pub fn create(name: &str) -> Result<Netns, NetError> {
        ip(&["netns", "add", name], None)?;
        let netns = Netns { name: name.to_owned(), deleted: false };
        ip(&["-n", name, "link", "set", "dev", "lo", "up"], None)?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's handle, `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// A descriptor of the namespace, for [`enter`] and [`run_in`].
    pub fn open(&self) -> Result<OwnedFd, NetError> {
        let path = self.path();
        rustix::fs::open(&path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| NetError::Io { action: format!("opening {}", path.display()), source: e.into() })
    }

    /// `ip netns del NAME`. The namespace, and its taps, go when the last process in it exits.
    pub fn delete(mut self) -> Result<(), NetError> {
        self.deleted = true;
        ip(&["netns", "del", &self.name], None)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.deleted
            && let Err(e) = ip(&["netns", "del", &self.name], None)
        {
            eprintln!(
                "could not delete the network namespace {}: {e}\n  delete it with: ip netns del {}",
                self.name, self.name
            );
        }
    }
}

/// Moves the calling thread (only it: a network namespace is per thread) into `netns`.
pub fn enter(netns: &OwnedFd) -> Result<(), NetError> {
    move_into_link_name_space(netns.as_fd(), Some(LinkNameSpaceType::Network))
        .map_err(|e| NetError::Io { action: "joining the network namespace".into(), source: e.into() })
}

/// Makes `command` start inside `netns` as `ip netns exec` would start it, without the extra
/// process: between `fork` and `exec` the child joins the namespace. (Unlike `ip netns exec`, it
/// keeps the caller's /sys, which shows the caller's interfaces: the tender looks its tap up with
/// `if_nametoindex`, which asks the namespace it runs in.)
pub fn run_in(command: &mut Command, netns: Arc<OwnedFd>) -> &mut Command {
    let join = move || -> std::io::Result<()> {
        move_into_link_name_space(netns.as_fd(), Some(LinkNameSpaceType::Network))?;
        Ok(())
    };
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed: it makes one system call (setns) on a descriptor the parent opened, and
    // allocates nothing.
    unsafe { command.pre_exec(join) }
}

/// Network namespaces named `<prefix><pid>` whose process no longer runs: left by a run that was
/// killed before it could clean up.
pub fn stale_namespaces(prefix: &str) -> Vec<String> {
    let mut stale = Vec::new();
    for entry in fs::read_dir(NETNS_DIR).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(prefix).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            stale.push(name);
        }
    }
    stale
}

/// Deletes the namespace `name` (one that [`stale_namespaces`] found).
pub fn delete_namespace(name: &str) -> Result<(), NetError> {
    ip(&["netns", "del", name], None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{DEFAULT_SUBNET, Link};

    #[test]
    fn a_tap_is_three_commands() {
        let link = DEFAULT_SUBNET.link(1).expect("slot 1");
        assert_eq!(
            tap_lines("mt1", &link),
            ["tuntap add dev mt1 mode tap", "addr add 10.64.0.5/30 dev mt1", "link set dev mt1 up"].map(String::from)
        );
    }

    #[test]
    fn this_namespace_has_a_loopback() {
        assert!(interfaces().expect("/proc readable").iter().any(|i| i == "lo"));
    }

    /// Real namespaces and taps: needs root (skipped with the reason otherwise; failed instead
    /// under `MAST_REQUIRE_KVM=1`, where CI runs the tender's tests as root).
    #[test]
    fn taps_made_in_a_namespace_are_seen_inside_it_and_go_with_it() {
        if !rustix::process::geteuid().is_root() {
            let reason = "creating network namespaces and taps needs root";
            assert!(!std::env::var("MAST_REQUIRE_KVM").is_ok_and(|v| v == "1"), "{reason} and MAST_REQUIRE_KVM=1");
            eprintln!("skipped: {reason}");
            return;
        }
        let name = format!("mast-hostnet-test-{}", std::process::id());
        let netns = Netns::create(&name).expect("ip netns add works as root");
        let links: Vec<Link> = (0..3).map(|slot| DEFAULT_SUBNET.link(slot).expect("slot")).collect();
        let lines: Vec<String> = links.iter().flat_map(|l| tap_lines(&l.tap("mt"), l)).collect();
        batch(Some(netns.name()), &lines).expect("one batch makes all three taps");
        assert!(!interfaces().expect("host interfaces").contains(&"mt0".to_owned()), "not in the caller's namespace");

        let fd = std::sync::Arc::new(netns.open().expect("the namespace opens"));
        let inside = {
            let fd = fd.clone();
            std::thread::spawn(move || {
                enter(&fd).expect("setns");
                interfaces().expect("interfaces inside")
            })
            .join()
            .expect("no panic")
        };
        assert_eq!(inside.iter().filter(|i| i.starts_with("mt")).count(), 3, "{inside:?}");
        let mut child = Command::new("sh");
        child.args(["-c", "cat /proc/self/net/dev"]).stdout(Stdio::piped());
        let child = run_in(&mut child, fd).output().expect("sh runs");
        let seen = String::from_utf8_lossy(&child.stdout);
        assert!(seen.contains("mt2:"), "a child started with run_in is inside: {seen}");
        assert!(!interfaces().expect("host interfaces").contains(&"mt2".to_owned()), "while we are not");

        netns.delete().expect("ip netns del");
        assert!(!PathBuf::from(NETNS_DIR).join(&name).exists());
        assert!(batch(Some(&name), &["link show".to_owned()]).is_err(), "the namespace is gone");
    }
}

/// What starting a process in a namespace costs, three ways (a figure, not a check: run with
/// `cargo test -p hostnet --release -- --ignored --nocapture spawn_costs`; needs root).
#[cfg(test)]
mod costs {
    use std::time::Instant;

    use super::*;

    #[test]
    #[ignore = "a measurement; needs root"]
    fn spawn_costs() {
        let netns = Netns::create(&format!("mast-spawn-cost-{}", std::process::id())).expect("root");
        let fd = Arc::new(netns.open().expect("opens"));
        let count = 200;
        let time = |label: &str, make: &dyn Fn() -> Command| {
            let started = Instant::now();
            let mut children: Vec<_> = (0..count).map(|_| make().spawn().expect("spawns")).collect();
            let per = started.elapsed() / count;
            for child in &mut children {
                let _ = child.kill();
                let _ = child.wait();
            }
            eprintln!("{label:<40} {:>8.2} ms per spawn", per.as_secs_f64() * 1e3);
        };
        time("plain", &|| {
            let mut c = Command::new("sleep");
            c.arg("30");
            c
        });
        time("run_in (setns between fork and exec)", &|| {
            let mut c = Command::new("sleep");
            c.arg("30");
            run_in(&mut c, fd.clone());
            c
        });
        time("ip netns exec", &|| {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", netns.name(), "sleep", "30"]);
            c
        });
    }
}
