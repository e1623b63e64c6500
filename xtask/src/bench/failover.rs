//! The failover part of `cargo xtask bench replication`: how fast a peer rack serves a dead
//! rack's kvlog, and what the dead rack's acknowledged writes the peer still has.
//!
//! Per run: two `rack-manager serve` processes (the release binary, run through its CLI like an
//! operator would; xtask does not link the rack-manager crate) on 127.0.0.1, each with its own
//! temporary data directory, peered both ways by fingerprint. Rack a runs kvlog (aarch64, release)
//! with `--failover-to b`; a client appends one record after another and keeps each acknowledged
//! sequence number with the time its 201 arrived. Once b holds the image and a volume snapshot,
//! and after a few more seconds of appends, a's manager and VM get SIGKILL. Then:
//!
//! - **lease → 200**: a's lease expiry (from b's `failover status`) until kvlog on b answers
//!   `GET /healthz` with 200 (the target: at most 10 s); **kill → 200** likewise from the kill;
//! - **lag** and **loss window** as b reports them (`lag_ms`, `loss_window_ms`);
//! - every append acknowledged before `last heartbeat - lag` read back from b (`GET /log/N`,
//!   same value): their count and how many are missing (must be 0), and how many acknowledged
//!   appends b lacks in all (lost, allowed within the loss window).

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail, ensure};
use images::{
    Arch,
    build::{self, Profile},
    keys::KeyConfig,
};
use qemu::free_local_port;
use rustix::process::{Pid, Signal, kill_process, kill_process_group};
use serde_json::Value;

use super::report::median;
use crate::{deps, http_client::Client};

/// Every rack the benches start (`Rack::start`) runs with these.
pub(crate) const HEARTBEAT_MS: u64 = 1000;
pub(crate) const LEASE_MS: u64 = 3000;
/// Appends after b is ready to take over and before a is killed.
const APPENDS_BEFORE_KILL: Duration = Duration::from_secs(3);
const TARGET_LEASE_TO_SERVING: Duration = Duration::from_secs(10);
const SLOW: Duration = Duration::from_secs(120);
/// The longest any one CLI call may take (`deploy` waits up to 120 s for its instances).
const CLI_TIMEOUT: Duration = Duration::from_secs(180);

/// One run's figures.
struct Figures {
    lease_to_serving_ms: u64,
    kill_to_serving_ms: u64,
    lag_ms: u64,
    loss_window_ms: u64,
    acknowledged: usize,
    before_cutoff: usize,
    missing_before_cutoff: usize,
    lost: usize,
    /// How long before the kill the oldest lost append was acknowledged.
    oldest_lost_before_kill_ms: Option<u64>,
}

/// Runs `runs` failovers and prints each and a summary. Ok(false) when a record acknowledged
/// before the reported lag was missing on the peer.
pub fn main(runs: u32) -> Result<bool> {
    deps::ensure_qemu(Arch::Aarch64)?;
    let root = build::workspace_root();
    let manager = build_manager(&root)?;
    let kvlog = build::build(&root, "kvlog", Arch::Aarch64, Profile::Release)?.artifact;
    let trust = workspace_trust_args(&root)?;

    println!(
        "failover bench: kvlog (aarch64, release) on rack a with --failover-to b, two racks on 127.0.0.1, heartbeat \
         {HEARTBEAT_MS} ms, lease {LEASE_MS} ms; a's manager and VM killed after {} s of appends; {runs} runs",
        APPENDS_BEFORE_KILL.as_secs()
    );
    println!(
        "{:>3} {:>12} {:>12} {:>8} {:>12} {:>6} {:>13} {:>13} {:>5} {:>18}",
        "run",
        "lease->200",
        "kill->200",
        "lag",
        "loss window",
        "acked",
        "before cutoff",
        "missing there",
        "lost",
        "oldest lost acked"
    );
    let mut all = Vec::new();
    for run in 1..=runs {
        let figures = failover_once(&manager, &trust, &kvlog).with_context(|| format!("failover run {run}"))?;
        println!(
            "{run:>3} {:>9} ms {:>9} ms {:>5} ms {:>9} ms {:>6} {:>13} {:>13} {:>5} {:>18}",
            figures.lease_to_serving_ms,
            figures.kill_to_serving_ms,
            figures.lag_ms,
            figures.loss_window_ms,
            figures.acknowledged,
            figures.before_cutoff,
            figures.missing_before_cutoff,
            figures.lost,
            figures.oldest_lost_before_kill_ms.map_or("-".to_owned(), |ms| format!("{ms} ms before kill")),
        );
        all.push(figures);
    }
    let summary = |what: &str, value: fn(&Figures) -> u64, unit: &str, target: &str| {
        let mut values: Vec<u64> = all.iter().map(value).collect();
        values.sort_unstable();
        let (min, max) = (values.first().copied().unwrap_or(0), values.last().copied().unwrap_or(0));
        let line =
            format!("{what:<34} median {:>6}{unit}  min {min:>6}{unit}  max {max:>6}{unit}  {target}", median(&values));
        println!("{}", line.trim_end());
    };
    let target = format!("(target <= {} ms)", TARGET_LEASE_TO_SERVING.as_millis());
    summary("lease expiry -> b answers 200", |f| f.lease_to_serving_ms, " ms", &target);
    summary("kill -> b answers 200", |f| f.kill_to_serving_ms, " ms", "");
    summary("replication lag at failure", |f| f.lag_ms, " ms", "");
    summary("reported loss window", |f| f.loss_window_ms, " ms", "");
    summary("acknowledged appends lost", |f| f.lost as u64, "   ", "(allowed: within the loss window)");
    let missing: usize = all.iter().map(|f| f.missing_before_cutoff).sum();
    let checked: usize = all.iter().map(|f| f.before_cutoff).sum();
    println!(
        "appends acknowledged before the cutoff (last heartbeat - lag): {checked} in all, {missing} missing on b \
         (must be 0)"
    );
    let met = all.iter().all(|f| Duration::from_millis(f.lease_to_serving_ms) <= TARGET_LEASE_TO_SERVING);
    println!("recovery target (<= 10 s after lease expiry) {}", if met { "met in every run" } else { "MISSED" });
    Ok(missing == 0)
}

/// `cargo build --release -p rack-manager`, and the binary's path.
pub(crate) fn build_manager(root: &Path) -> Result<PathBuf> {
    let mut cargo = Command::new("cargo");
    cargo.current_dir(root).args(["build", "--release", "-p", "rack-manager"]);
    eprintln!("$ {}", images::command::display(&cargo));
    ensure!(cargo.status().context("running cargo")?.success(), "building rack-manager failed");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("release").join("rack-manager"))
}

/// `--trust KEY` for each key the workspace trusts, creating the signing key first if there is
/// none: what a bench's racks need to accept the images it builds.
pub(crate) fn workspace_trust_args(root: &Path) -> Result<Vec<String>> {
    let keys = KeyConfig::for_workspace(root);
    keys.signing_key()?;
    Ok(keys.trusted()?.keys().iter().flat_map(|k| ["--trust".to_owned(), k.to_string()]).collect())
}

fn failover_once(manager: &Path, trust: &[String], kvlog: &Path) -> Result<Figures> {
    let mut a = Rack::start(manager, "a", trust, &[])?;
    let b = Rack::start(manager, "b", trust, &[])?;
    a.peer_with(&b)?;
    b.peer_with(&a)?;
    a.cli(&["image", "push", &kvlog.display().to_string()])?;
    a.cli(&["deploy", "kvlog", "--failover-to", "b"])?;
    let (deployment, port_a) = a.running_instance(SLOW)?;
    wait_for_health(port_a, SLOW)?;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = append_until(port_a, stop.clone());
    let ready = wait_until("b to be ready to take over", SLOW, || {
        let plan = b.json(&["failover", "plan"])?;
        let ready = plan["incoming"].as_array().into_iter().flatten().any(|p| {
            p["deployment"] == deployment.as_str()
                && p["would_take_over"] == true
                && p["image_complete"] == true
                && p["snapshot_taken_ms"].is_u64()
        });
        Ok(ready.then_some(()))
    });
    if let Err(e) = ready {
        stop.store(true, Ordering::SeqCst);
        let _ = writer.join();
        return Err(e);
    }
    thread::sleep(APPENDS_BEFORE_KILL);
    a.kill();
    let killed_ms = now_ms();
    stop.store(true, Ordering::SeqCst);
    let acks = writer.join().map_err(|_| anyhow::anyhow!("the append thread panicked"))??;

    let (_, port_b) = b.running_instance(SLOW)?;
    wait_for_health(port_b, SLOW)?;
    let serving_ms = now_ms();
    let takeover = wait_until("b to record the takeover", SLOW, || {
        let all = b.json(&["failover", "status"])?;
        Ok(all
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["deployment"] == deployment.as_str() && t["state"] == "running")
            .cloned())
    })?;
    let field = |name: &str| takeover[name].as_u64().with_context(|| format!("the takeover has no {name}: {takeover}"));
    let (last_heartbeat_ms, lease_expired_ms) = (field("peer_last_heartbeat_ms")?, field("lease_expired_ms")?);
    let (lag_ms, loss_window_ms) = (field("lag_ms")?, field("loss_window_ms")?);
    let cutoff_ms = last_heartbeat_ms.saturating_sub(lag_ms);

    let mut reader = Client::connect(port_b)?;
    let mut before_cutoff = 0;
    let mut missing_before_cutoff = 0;
    let mut lost_at = Vec::new();
    for ack in &acks {
        let (status, body) = reader.request("GET", &format!("/log/{}", ack.seq), b"")?;
        let present = status == 200 && body == ack.value.as_bytes();
        if ack.at_ms < cutoff_ms {
            before_cutoff += 1;
            missing_before_cutoff += usize::from(!present);
        }
        if !present {
            lost_at.push(ack.at_ms);
        }
    }
    ensure!(before_cutoff > 0, "no append was acknowledged before the snapshot b holds: nothing was checked");
    Ok(Figures {
        lease_to_serving_ms: serving_ms.saturating_sub(lease_expired_ms),
        kill_to_serving_ms: serving_ms.saturating_sub(killed_ms),
        lag_ms,
        loss_window_ms,
        acknowledged: acks.len(),
        before_cutoff,
        missing_before_cutoff,
        lost: lost_at.len(),
        oldest_lost_before_kill_ms: lost_at.iter().min().map(|at| killed_ms.saturating_sub(*at)),
    })
}

/// An acknowledged append: its sequence number, value and when its 201 arrived.
struct Ack {
    seq: u64,
    value: String,
    at_ms: u64,
}

/// Appends to kvlog one record after another until `stop`; a failed connection (a's VM killed)
/// is retried, any answer but 201 is an error.
fn append_until(port: u16, stop: Arc<AtomicBool>) -> thread::JoinHandle<Result<Vec<Ack>>> {
    thread::spawn(move || {
        let mut acks = Vec::new();
        let mut client: Option<Client> = None;
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let connected = match client.take() {
                Some(c) => c,
                None => match Client::connect_within(port, Duration::from_secs(2)) {
                    Ok(c) => c,
                    Err(_) => {
                        thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                },
            };
            let current = client.insert(connected);
            n += 1;
            let value = format!("record {n} of the failover bench");
            let Ok((status, body)) = current.request("POST", &format!("/append?key=k{}", n % 5), value.as_bytes())
            else {
                client = None;
                continue;
            };
            let at_ms = now_ms();
            ensure!(status == 201, "append {n} answered {status}: {}", String::from_utf8_lossy(&body));
            let reply: Value = serde_json::from_slice(&body).context("the append's answer is not JSON")?;
            let seq = reply["seq"].as_u64().with_context(|| format!("the append's answer has no seq: {reply}"))?;
            acks.push(Ack { seq, value, at_ms });
        }
        Ok(acks)
    })
}

/// `GET /healthz` with short attempts until 200: QEMU accepts connections before the guest listens.
fn wait_for_health(port: u16, timeout: Duration) -> Result<()> {
    wait_until("kvlog to answer /healthz", timeout, || {
        let answer = Client::connect_within(port, Duration::from_millis(200))
            .and_then(|mut c| c.request("GET", "/healthz", b""));
        Ok(answer.ok().filter(|(status, _)| *status == 200).map(|_| ()))
    })
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `timeout`.
pub(crate) fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A `rack-manager serve` in its own process group with a temporary data directory; dropping it
/// kills the manager and its VMs and deletes the directory.
pub(crate) struct Rack {
    manager: PathBuf,
    dir: tempfile::TempDir,
    daemon: Option<Child>,
    /// The keys this rack trusts: its peers may have images they signed run here on takeover.
    image_keys: Vec<String>,
}

impl Rack {
    /// Starts rack `name` on 127.0.0.1 (API and peer ports), with `extra` arguments to `serve`.
    pub(crate) fn start(manager: &Path, name: &str, trust: &[String], extra: &[&str]) -> Result<Rack> {
        let dir = tempfile::Builder::new().prefix(&format!("mast-bench-{name}-")).tempdir()?;
        let log = File::create(dir.path().join("daemon.stderr"))?;
        let peer_listen = format!("127.0.0.1:{}", free_local_port()?);
        let (heartbeat, lease) = (HEARTBEAT_MS.to_string(), LEASE_MS.to_string());
        let daemon = Command::new(manager)
            .args(["serve", "--listen", "127.0.0.1:0", "--rack", name, "--peer-listen", &peer_listen])
            .args(["--heartbeat-ms", &heartbeat, "--lease-ms", &lease])
            .args(trust)
            .args(extra)
            .arg("--data-dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", manager.display()))?;
        // `trust` is `--trust KEY` pairs.
        let image_keys = trust.iter().skip(1).step_by(2).cloned().collect();
        let rack = Rack { manager: manager.to_owned(), dir, daemon: Some(daemon), image_keys };
        let address = rack.dir.path().join("address");
        wait_until("the manager to write its address", Duration::from_secs(20), || Ok(address.exists().then_some(())))
            .with_context(|| rack.log_tail())?;
        Ok(rack)
    }

    /// Runs the CLI against this rack; its stdout, or an error with its stderr.
    pub(crate) fn cli(&self, args: &[&str]) -> Result<String> {
        self.cli_within(args, CLI_TIMEOUT)
    }

    /// Runs the CLI and kills it if it has not finished after `timeout`: a manager that hangs
    /// must not hang the bench.
    pub(crate) fn cli_within(&self, args: &[&str], timeout: Duration) -> Result<String> {
        // Files, not pipes: a CLI that writes much cannot block on a full pipe while we wait.
        let (mut stdout, mut stderr) = (tempfile::tempfile()?, tempfile::tempfile()?);
        let mut child = Command::new(&self.manager)
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout.try_clone()?)
            .stderr(stderr.try_clone()?)
            .spawn()
            .context("running the rack-manager CLI")?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("rack-manager {} did not finish within {timeout:?}", args.join(" "));
            }
            thread::sleep(Duration::from_millis(20));
        };
        let read = |file: &mut File| -> Result<String> {
            let mut text = String::new();
            file.seek(SeekFrom::Start(0))?;
            file.read_to_string(&mut text)?;
            Ok(text)
        };
        ensure!(status.success(), "rack-manager {} failed: {}", args.join(" "), read(&mut stderr)?.trim());
        read(&mut stdout)
    }

    pub(crate) fn json(&self, args: &[&str]) -> Result<Value> {
        self.json_within(args, CLI_TIMEOUT)
    }

    /// [`Rack::json`] with a deadline of its own.
    pub(crate) fn json_within(&self, args: &[&str], timeout: Duration) -> Result<Value> {
        let text = self.cli_within(&[args, &["-o", "json"]].concat(), timeout)?;
        serde_json::from_str(&text).with_context(|| format!("rack-manager {} printed no JSON: {text}", args.join(" ")))
    }

    /// The data directory (`token`, `address`).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The manager's process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    /// `peer add`s `other` with the name, URL and fingerprint its `identity` prints, and this
    /// rack's trusted keys as the keys whose images `other` may have run here on takeover.
    pub(crate) fn peer_with(&self, other: &Rack) -> Result<()> {
        let identity = other.json(&["identity"])?;
        let field = |k: &str| identity[k].as_str().with_context(|| format!("identity has no {k}: {identity}"));
        let mut args = vec!["peer", "add", field("name")?, field("peer_url")?, "--fingerprint", field("fingerprint")?];
        for key in &self.image_keys {
            args.extend(["--image-key", key.as_str()]);
        }
        self.cli(&args)?;
        Ok(())
    }

    /// The deployment and forwarded host port of the first running instance with a port.
    fn running_instance(&self, timeout: Duration) -> Result<(String, u16)> {
        wait_until("an instance to run", timeout, || {
            let instances = self.json(&["ps"])?;
            Ok(instances.as_array().into_iter().flatten().find_map(|i| {
                let port = i["ports"].get(0)?["host_port"].as_u64()?;
                (i["state"] == "running")
                    .then(|| Some((i["deployment"].as_str()?.to_owned(), u16::try_from(port).ok()?)))?
            }))
        })
        .with_context(|| self.log_tail())
    }

    /// SIGKILL to the manager's process group and to every process whose command line names the
    /// data directory (the VMs, each in a process group of its own).
    fn kill(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            if let Some(group) = Pid::from_raw(daemon.id() as i32) {
                let _ = kill_process_group(group, Signal::KILL);
            }
            let _ = daemon.wait();
        }
        for pid in processes_naming(self.dir.path()) {
            if let Some(pid) = Pid::from_raw(pid) {
                let _ = kill_process(pid, Signal::KILL);
            }
        }
    }

    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("daemon.stderr")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(20).collect();
        format!("rack-manager's log ends:\n{}", lines.into_iter().rev().collect::<Vec<_>>().join("\n"))
    }
}

impl Drop for Rack {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Processes (other than this one) whose command line contains `dir`.
fn processes_naming(dir: &Path) -> Vec<i32> {
    let needle = dir.display().to_string();
    let entries = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    entries
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            (pid != std::process::id() as i32 && String::from_utf8_lossy(&cmdline).contains(&needle)).then_some(pid)
        })
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[]), 0);
        assert_eq!(median(&[5]), 5);
        assert_eq!(median(&[1, 2, 9]), 2);
        assert_eq!(median(&[1, 3, 5, 100]), 4);
    }
}
