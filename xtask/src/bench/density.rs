//! `cargo xtask bench density --count N`: how many idle `httpd` appliances one host holds under
//! the tender, and what each costs.
//!
//! The bench creates a network namespace of its own (`mast-density-<pid>`) with one tap and /30
//! per instance ([`hostnet`]), starts N tenders inside it (each joins the namespace between fork
//! and exec, so no `ip netns exec` process per instance), and waits for every guest's
//! `httpd: listening` line. Then it checks that each answers `GET /healthz` with 200 (from
//! threads that joined the namespace), lets them idle, and measures:
//! - **started per second**: N over the time from the first spawn to the last `listening` line;
//! - **RSS and PSS per tender** (`/proc/<pid>/smaps_rollup`): median, p95, max. PSS splits the
//!   pages tenders share (the binary, libraries) among them, so it is what one more instance costs;
//! - **host memory used**: `MemAvailable` before the namespace was made minus after the idle
//!   window, in total and per instance (includes the kernel's side: taps, KVM structures);
//! - **idle CPU**: the tenders' user + system time over the idle window (from `/proc/<pid>/stat`)
//!   and the whole host's (`/proc/stat`), each as a share of one core.
//!
//! It stops everything it started (SIGTERM, then SIGKILL after 5 s, and checks every process is
//! gone) and deletes the namespace, also on Ctrl-C and on a panic; a namespace left by a run that
//! was killed outright is named and deleted by the next run.

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::{fd::OwnedFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use hostnet::{Link, ip, plan::DEFAULT_SUBNET};
use images::{Arch, Platform, build};

#[derive(Debug, Args)]
pub struct DensityArgs {
    /// Idle httpd instances to start.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub count: u32,
    /// The appliances' architecture (the tender runs the host's own, under KVM).
    #[arg(long, default_value_t = host_arch())]
    pub arch: Arch,
    /// Seconds of idleness over which CPU use is measured.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_seconds: u64,
    /// Guest memory per instance in MiB [default: the manifest's].
    #[arg(long, value_name = "MIB")]
    pub mem: Option<u32>,
}

/// The targets of issue #7, printed next to the figures.
const TARGET_PSS_MIB: f64 = 1.0;
const TARGET_IDLE_CPU_PERCENT: f64 = 5.0;

const GUEST_PORT: u16 = 8080;
const NETNS_PREFIX: &str = "mast-density-";
/// How long one instance may take to print its `listening` line, on top of a fixed minute.
const BOOT_ALLOWANCE_PER_INSTANCE: Duration = Duration::from_millis(100);

pub fn host_arch() -> Arch {
    if cfg!(target_arch = "aarch64") { Arch::Aarch64 } else { Arch::X86_64 }
}

/// Set by SIGINT/SIGTERM: long loops stop, and the fleet's drop cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub(crate) fn catch_interrupts() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe; `signal`
        // replaces no handler anything else in this process relies on.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
}

pub(crate) fn check_interrupted() -> Result<()> {
    ensure!(!interrupted(), "interrupted");
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived since [`catch_interrupts`].
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub count: u32,
    pub taps_created: Duration,
    /// From the first spawn to the last `listening` line.
    pub all_listening: Duration,
    pub answered: u32,
    /// Each tender's CPU time (user + system) from its start to its guest's `listening`, in ticks.
    pub start_cpu_ticks: Vec<u64>,
    pub rss_kib: Vec<u64>,
    pub pss_kib: Vec<u64>,
    pub host_used_kib: i64,
    pub idle_window: Duration,
    /// The tenders' CPU over the idle window, in % of one core.
    pub tender_cpu_percent: f64,
    /// The whole host's.
    pub host_cpu_percent: f64,
    /// Tenders still alive after the stop (must be 0).
    pub left_running: usize,
    pub pids: Vec<u32>,
    pub netns: String,
}

pub fn main(args: DensityArgs) -> Result<ExitCode> {
    catch_interrupts();
    let tender = build_tender()?;
    let image = build_httpd(args.arch)?;
    let report = measure(&tender, &image, &args, &|line| eprintln!("{line}"))?;
    print(&report, &args);
    let alive: Vec<&u32> = report.pids.iter().filter(|pid| Path::new(&format!("/proc/{pid}")).exists()).collect();
    ensure!(report.left_running == 0 && alive.is_empty(), "tenders survived the stop: {alive:?}");
    Ok(if report.answered == report.count { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `cargo build --release -p tender`; the binary's path.
pub fn build_tender() -> Result<PathBuf> {
    let root = build::workspace_root();
    let mut cargo = Command::new("cargo");
    cargo.current_dir(&root).args(["build", "--release", "--quiet", "-p", "tender"]);
    // `cargo xtask` runs inside `cargo run`: its CARGO_*/RUST* settings describe the xtask build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let keep =
            matches!(key.as_ref(), "CARGO_HOME" | "RUSTUP_HOME" | "CARGO_TERM_COLOR" | "CARGO_TERM_PROGRESS_WHEN");
        if !keep && (key.starts_with("CARGO") || key.starts_with("RUST")) {
            cargo.env_remove(key.as_ref());
        }
    }
    eprintln!("$ cargo build --release --quiet -p tender");
    ensure!(cargo.status().context("running cargo")?.success(), "building the tender failed");
    Ok(root.join("target/release/tender"))
}

/// The signed release `httpd` image for the tender.
pub fn build_httpd(arch: Arch) -> Result<PathBuf> {
    let root = build::workspace_root();
    let built = build::build_for_platform(&root, "httpd", arch, Platform::Tender, build::Profile::Release)
        .context("building httpd for the tender")?;
    Ok(built.artifact)
}

/// Everything the bench started: stopped and deleted on drop, whatever happened.
struct Fleet {
    tenders: Vec<Child>,
    netns: Option<ip::Netns>,
}

impl Fleet {
    /// SIGTERM to all, SIGKILL to those left after 5 s, then reaps them; how many are still alive.
    fn stop(&mut self) -> usize {
        let signal = |child: &Child, signal| {
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process(pid, signal);
            }
        };
        for child in &self.tenders {
            signal(child, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut running: Vec<&mut Child> = self.tenders.iter_mut().collect();
        while !running.is_empty() && Instant::now() < deadline {
            running.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
            thread::sleep(Duration::from_millis(20));
        }
        for child in running {
            let _ = child.kill();
            let _ = child.wait();
        }
        let alive = self.tenders.iter().filter(|c| Path::new(&format!("/proc/{}", c.id())).exists()).count();
        self.tenders.clear();
        alive
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if !self.tenders.is_empty() {
            let alive = self.stop();
            if alive > 0 {
                eprintln!("{alive} tender processes could not be stopped");
            }
        }
        // Netns's own drop deletes it, or says how to.
        self.netns.take();
    }
}

/// Starts `args.count` httpd instances under `tender`, measures them, stops them.
pub fn measure(tender: &Path, image: &Path, args: &DensityArgs, progress: &dyn Fn(&str)) -> Result<Report> {
    ensure!(
        rustix::process::geteuid().is_root(),
        "the density bench creates a network namespace and taps: run it as root"
    );
    if let Some(reason) = qemu::kvm::unavailable_reason() {
        bail!("the tender needs KVM, and {reason}");
    }
    ensure!(args.arch == host_arch(), "the tender runs {} appliances on this host, not {}", host_arch(), args.arch);
    ensure!(tender.is_file(), "no tender binary at {}", tender.display());
    raise_file_limit(args.count);
    for stale in ip::stale_namespaces(NETNS_PREFIX) {
        progress(&format!("deleting the namespace {stale}, left by a density bench that was killed"));
        ip::delete_namespace(&stale).with_context(|| format!("delete it with: ip netns del {stale}"))?;
    }
    let count = args.count;
    let links: Vec<Link> = (0..count)
        .map(|slot| DEFAULT_SUBNET.link(slot).context("more instances than links in the subnet"))
        .collect::<Result<_>>()?;
    let logs = tempfile::tempdir().context("a directory for the consoles")?;

    let available_before = mem_available_kib()?;
    let name = format!("{NETNS_PREFIX}{}", std::process::id());
    let mut fleet = Fleet { tenders: Vec::new(), netns: Some(ip::Netns::create(&name)?) };
    let netns_fd = Arc::new(fleet.netns.as_ref().context("just made")?.open()?);
    let started = Instant::now();
    let lines: Vec<String> = links.iter().flat_map(|l| ip::tap_lines(&l.tap("mt"), l)).collect();
    ip::batch(Some(&name), &lines)?;
    let taps_created = started.elapsed();
    progress(&format!("{count} taps in namespace {name}: {} ms (one `ip -batch`)", taps_created.as_millis()));

    let first_spawn = Instant::now();
    for link in &links {
        check_interrupted()?;
        let i = link.slot;
        let console = fs::File::create(logs.path().join(format!("{i}.out")))?;
        let stderr = fs::File::create(logs.path().join(format!("{i}.err")))?;
        let mut command = Command::new(tender);
        command.args(["--net", &link.tap("mt"), "--mac", &link.guest_mac()]);
        if let Some(mib) = args.mem {
            command.args(["--mem", &mib.to_string()]);
        }
        command
            .arg(image)
            .arg("--")
            .args(link.guest_args())
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(stderr)
            // Its own group, so Ctrl-C reaches only the bench, which then stops it in order.
            .process_group(0);
        ip::run_in(&mut command, netns_fd.clone());
        die_with_parent(&mut command);
        fleet.tenders.push(command.spawn().with_context(|| format!("starting {}", tender.display()))?);
        if (i + 1) % 100 == 0 && i + 1 < count {
            progress(&format!("spawned {}/{count}", i + 1));
        }
    }
    progress(&format!("spawned {count}/{count} in {:.1} s", first_spawn.elapsed().as_secs_f64()));
    let all_listening = wait_listening(&mut fleet, logs.path(), first_spawn, progress)?;
    progress(&format!("all {count} listening {:.1} s after the first spawn", all_listening.as_secs_f64()));
    let start_cpu_ticks: Vec<u64> = fleet.tenders.iter().map(|c| cpu_ticks_of(&[c.id()])).collect();

    let answered = check_http(&links, &netns_fd, progress)?;
    progress(&format!("{answered}/{count} answered GET /healthz with 200; idling {} s", args.idle_seconds));

    thread::sleep(Duration::from_secs(1)); // let the checks' connections close
    let pids: Vec<u32> = fleet.tenders.iter().map(Child::id).collect();
    let (tender_ticks_before, host_before) = (cpu_ticks_of(&pids), host_cpu()?);
    let idle_started = Instant::now();
    while idle_started.elapsed() < Duration::from_secs(args.idle_seconds) {
        check_interrupted()?;
        thread::sleep(Duration::from_millis(100));
    }
    let (tender_ticks_after, host_after) = (cpu_ticks_of(&pids), host_cpu()?);
    let idle_window = idle_started.elapsed();
    let (rss_kib, pss_kib): (Vec<u64>, Vec<u64>) = pids.iter().filter_map(|&pid| smaps_rollup(pid)).unzip();
    let available_after = mem_available_kib()?;
    for (i, child) in fleet.tenders.iter_mut().enumerate() {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("instance {i} ended during the idle window ({status}): {}", tail(logs.path(), i));
        }
    }
    let window_ticks = idle_window.as_secs_f64() * TICKS_PER_SECOND;
    let tender_cpu_percent = tender_ticks_after.saturating_sub(tender_ticks_before) as f64 / window_ticks * 100.0;
    let host_cpu_percent = host_after.busy.saturating_sub(host_before.busy) as f64 / window_ticks * 100.0;

    progress("stopping every tender");
    let left_running = fleet.stop();
    let netns = fleet.netns.take().context("the namespace")?;
    drop(netns_fd);
    netns.delete()?;
    ensure!(!Path::new(ip::NETNS_DIR).join(&name).exists(), "the namespace {name} is still there");
    Ok(Report {
        count,
        taps_created,
        all_listening,
        answered,
        start_cpu_ticks,
        rss_kib,
        pss_kib,
        host_used_kib: available_before as i64 - available_after as i64,
        idle_window,
        tender_cpu_percent,
        host_cpu_percent,
        left_running,
        pids,
        netns: name,
    })
}

/// Each tender gets SIGKILL when the bench dies, even by SIGKILL: nothing outlives a killed run
/// but its (empty) namespace, which the next run deletes.
fn die_with_parent(command: &mut Command) {
    let arm =
        || rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL)).map_err(Into::into);
    // SAFETY: runs in the child between fork and exec; one `prctl` system call, no allocation.
    // (The signal follows the thread that forked: the bench spawns from its main thread only.)
    unsafe { command.pre_exec(arm) };
}

/// Enough descriptors for the bench itself and its children's stdio as they start.
fn raise_file_limit(count: u32) {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let wanted = u64::from(count) * 4 + 256;
    if limit.current.is_some_and(|c| c < wanted) {
        let raised = rustix::process::Rlimit { current: limit.maximum.map(|m| m.min(wanted.max(65_536))), ..limit };
        let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, raised);
    }
}

/// Waits until every console says `listening`; the time from `since` until the last did.
fn wait_listening(fleet: &mut Fleet, logs: &Path, since: Instant, progress: &dyn Fn(&str)) -> Result<Duration> {
    let count = fleet.tenders.len();
    let deadline = since + Duration::from_secs(60) + BOOT_ALLOWANCE_PER_INSTANCE * count as u32;
    let mut waiting: Vec<usize> = (0..count).collect();
    let mut last_report = Instant::now();
    loop {
        check_interrupted()?;
        let mut still = Vec::new();
        for i in waiting {
            let console = fs::read_to_string(logs.join(format!("{i}.out"))).unwrap_or_default();
            if console.contains("httpd: listening on") {
                continue;
            }
            if let Ok(Some(status)) = fleet.tenders[i].try_wait() {
                bail!("instance {i} exited before listening ({status}):\n{}", tail(logs, i));
            }
            still.push(i);
        }
        waiting = still;
        if waiting.is_empty() {
            return Ok(since.elapsed());
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {count} instances did not print `listening` in time; the first:\n{}",
                waiting.len(),
                tail(logs, waiting[0])
            );
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            progress(&format!("listening {}/{count}", count - waiting.len()));
            last_report = Instant::now();
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// The end of instance `i`'s console and stderr, for error messages.
fn tail(logs: &Path, i: usize) -> String {
    let read = |ext: &str| fs::read_to_string(logs.join(format!("{i}.{ext}"))).unwrap_or_default();
    let last =
        |text: String| text.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    format!("console:\n{}\nstderr:\n{}", last(read("out")), last(read("err")))
}

/// Per checker thread: each slot, and why it did not answer 200 (`None`: it did).
type CheckResults = Result<Vec<(u32, Option<String>)>>;

/// GETs `/healthz` from each guest, from threads inside the namespace; how many answered 200.
fn check_http(links: &[Link], netns: &Arc<OwnedFd>, progress: &dyn Fn(&str)) -> Result<u32> {
    const THREADS: usize = 8;
    let chunk = links.len().div_ceil(THREADS);
    let results: Vec<CheckResults> = thread::scope(|scope| {
        let workers: Vec<_> = links
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || -> CheckResults {
                    ip::enter(netns)?;
                    Ok(part.iter().map(|l| (l.slot, healthz(SocketAddr::from((l.guest, GUEST_PORT))).err())).collect())
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a checker panicked")))).collect()
    });
    let mut answered = 0;
    for result in results {
        for (slot, error) in result? {
            match error {
                None => answered += 1,
                Some(e) => progress(&format!("instance {slot}: {e}")),
            }
        }
    }
    Ok(answered)
}

/// One `GET /healthz`, up to three tries: Ok if a 200 came back.
fn healthz(address: SocketAddr) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..3 {
        match get(address, "/healthz") {
            Ok(200) => return Ok(()),
            Ok(status) => last = format!("GET /healthz answered {status}"),
            Err(e) => last = format!("GET http://{address}/healthz: {e}"),
        }
        thread::sleep(Duration::from_millis(200));
    }
    Err(last)
}

fn get(address: SocketAddr, path: &str) -> std::io::Result<u16> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {:?}", text.lines().next())))
}

/// `/proc` times are in USER_HZ, 100 on every Linux architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system ticks of all `pids` together.
fn cpu_ticks_of(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
            // After the command name: field 3 (state) is index 0, utime (14) index 11, stime index 12.
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

#[derive(Debug, Clone, Copy)]
struct HostCpu {
    /// Ticks of all CPUs not idle and not waiting for I/O.
    busy: u64,
}

fn host_cpu() -> Result<HostCpu> {
    let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_host_cpu(&stat).context("/proc/stat has no cpu line")
}

fn parse_host_cpu(stat: &str) -> Option<HostCpu> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line.split_whitespace().skip(1).map(|v| v.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already counted in user].
    let total: u64 = values.iter().take(8).sum();
    Some(HostCpu { busy: total - values.get(3)? - values.get(4).copied().unwrap_or(0) })
}

/// RSS and PSS of `pid` in KiB.
fn smaps_rollup(pid: u32) -> Option<(u64, u64)> {
    parse_smaps_rollup(&fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

fn parse_smaps_rollup(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        text.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("Rss:")?, field("Pss:")?))
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map_or("unknown".into(), |l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

fn mem_available_kib() -> Result<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    meminfo
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .context("/proc/meminfo has no MemAvailable")
}

/// The `p`-th percentile (nearest rank) of `values`, in MiB.
fn percentile_mib(values: &[u64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0 * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1024.0
}

fn print(report: &Report, args: &DensityArgs) {
    let n = report.count;
    let per_second = f64::from(n) / report.all_listening.as_secs_f64();
    let spread = |v: &[u64]| {
        format!("{:.2} / {:.2} / {:.2} MiB", percentile_mib(v, 50.0), percentile_mib(v, 95.0), percentile_mib(v, 100.0))
    };
    let pss_median = percentile_mib(&report.pss_kib, 50.0);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "density bench: {n} idle httpd ({} tender, guest memory {}), idle window {:.1} s, namespace {}",
        args.arch,
        args.mem.map_or("the manifest's".to_owned(), |m| format!("{m} MiB")),
        report.idle_window.as_secs_f64(),
        report.netns
    );
    println!("(host-wide figures include whatever else the machine runs: load average {})", load_average());
    println!("{:<40} {:>30}   target", "what", "figure");
    let row = |what: &str, figure: String, target: &str| println!("{what:<40} {figure:>30}   {target}");
    row("instances answering GET /healthz", format!("{}/{n}", report.answered), &format!("{n}/{n}"));
    row("taps created (one ip -batch)", format!("{} ms", report.taps_created.as_millis()), "");
    row(
        "started per second (spawn -> listening)",
        format!("{per_second:.1}/s ({:.1} s for all)", report.all_listening.as_secs_f64()),
        "",
    );
    let start_cpu_ms: Vec<u64> = report.start_cpu_ticks.iter().map(|t| t * 1000 / TICKS_PER_SECOND as u64).collect();
    let mut sorted = start_cpu_ms.clone();
    sorted.sort_unstable();
    row(
        "CPU to start one (median / max)",
        format!("{} / {} ms", sorted.get(sorted.len() / 2).copied().unwrap_or(0), sorted.last().copied().unwrap_or(0)),
        "",
    );
    row("RSS per tender (median / p95 / max)", spread(&report.rss_kib), "");
    row(
        "PSS per tender (median / p95 / max)",
        spread(&report.pss_kib),
        &format!("<= {TARGET_PSS_MIB} MiB: {}", verdict(pss_median <= TARGET_PSS_MIB)),
    );
    row(
        "host memory used (MemAvailable drop)",
        format!(
            "{:.1} MiB, {:.2} MiB each",
            report.host_used_kib as f64 / 1024.0,
            report.host_used_kib as f64 / 1024.0 / f64::from(n)
        ),
        "",
    );
    row(
        "tenders' CPU while idle",
        format!("{:.2}% of one core", report.tender_cpu_percent),
        &format!("<= {TARGET_IDLE_CPU_PERCENT}%: {}", verdict(report.tender_cpu_percent <= TARGET_IDLE_CPU_PERCENT)),
    );
    row("host CPU while idle (/proc/stat)", format!("{:.2}% of one core", report.host_cpu_percent), "");
    row("tenders left after the stop", report.left_running.to_string(), "0");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let rollup =
            "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:                2048 kB\nPss:                 300 kB\n";
        assert_eq!(parse_smaps_rollup(rollup), Some((2048, 300)));
        assert_eq!(parse_smaps_rollup("Rss: 1 kB\n"), None);
        let stat = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 50 2 25 500 10 0 1 1 0 0\n";
        assert_eq!(parse_host_cpu(stat).map(|c| c.busy), Some(100 + 5 + 50 + 1 + 2 + 3));
        assert!(parse_host_cpu("intr 1 2 3\n").is_none());
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let kib: Vec<u64> = (1..=100).map(|m| m * 1024).collect();
        assert_eq!(percentile_mib(&kib, 50.0), 50.0);
        assert_eq!(percentile_mib(&kib, 95.0), 95.0);
        assert_eq!(percentile_mib(&kib, 100.0), 100.0);
        assert_eq!(percentile_mib(&[2048], 95.0), 2.0);
    }

    /// The density smoke test: five real tenders in a namespace of their own, each answering
    /// HTTP, and nothing left afterwards. Needs root and KVM (skipped with the reason, unless
    /// MAST_REQUIRE_KVM=1).
    #[test]
    fn five_instances_answer_and_leave_nothing_behind() {
        let skip = |reason: String| {
            qemu::kvm::skip("five_instances_answer_and_leave_nothing_behind", &reason);
        };
        if let Some(reason) = qemu::kvm::unavailable_reason() {
            return skip(reason);
        }
        if !rustix::process::geteuid().is_root() {
            return skip("it needs root (network namespaces and taps)".into());
        }
        let tender = build_tender().expect("the tender builds");
        let image = build_httpd(host_arch()).expect("httpd builds for the tender");
        let args = DensityArgs { count: 5, arch: host_arch(), idle_seconds: 1, mem: None };
        let report = measure(&tender, &image, &args, &|line| eprintln!("{line}")).expect("the bench runs");
        assert_eq!(report.answered, 5, "{report:?}");
        assert_eq!((report.rss_kib.len(), report.pss_kib.len()), (5, 5), "every tender measured: {report:?}");
        assert_eq!(report.left_running, 0);
        assert!(!Path::new(ip::NETNS_DIR).join(&report.netns).exists(), "the namespace is gone");
        let left: Vec<&u32> = report.pids.iter().filter(|pid| Path::new(&format!("/proc/{pid}")).exists()).collect();
        assert!(left.is_empty(), "no tender of this bench is left: {left:?}");
    }
}
