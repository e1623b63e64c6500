//! `cargo xtask bench summon` (root, KVM): on-demand appliances under the tender, against issue
//! #13's targets. The release `rack-manager` runs `--launcher tender` inside a network namespace
//! of the bench's own (`mast-summon-<pid>`, deleted at the end), driven by its CLI; requests go
//! from this process (which joined the namespace) to the gates' 127.77.x.y addresses. It prints:
//!
//! - **cold start**: connect → first response byte of `GET /` from a sleeping httpd (idle
//!   timeout 100 ms, a round robin of 10 services, each request only once its service's tender
//!   is gone), p50/p99 over `--wakes` wakes, and every request that did not get its 200;
//! - **warm overhead**: p50 of connect → whole response through the gate against straight to the
//!   guest's own address, alternating;
//! - **idle-timeout accuracy**: last connection closed → tender gone, minus the timeout (1 s);
//! - **N asleep**: the manager's RSS and CPU (one core = 100%) with `--services` more asleep
//!   gates registered, over 10 s;
//! - **burst**: `--burst` different sleeping services woken by one request each, all at once;
//! - **kvlog**: wake → append acknowledged, and every record read back after the sleep/wake cycles;
//! - **energy**: per deployment, CPU-seconds and seconds awake, as `ps -o json` reports them.

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::ExitCode,
    sync::{Arc, Barrier},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use hostnet::{ip, plan::DEFAULT_SUBNET};
use images::{Arch, Platform, build};
use serde_json::Value;

use super::{
    density::{build_httpd, build_tender},
    failover::{Rack, build_manager, wait_until},
    report::{percentile, us},
};

#[derive(Debug, Args)]
pub struct SummonArgs {
    /// Cold wakes to time (the issue asks for at least 200).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub wakes: u32,
    /// On-demand services registered (all asleep) for the memory and CPU figures.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=60_000))]
    pub services: u32,
    /// Sleeping services woken at once, one request each (at most --services).
    #[arg(long, default_value_t = 1000)]
    pub burst: u32,
    /// kvlog sleep/wake cycles, one append each.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub kvlog_cycles: u32,
}

const TARGET_COLD_P50: Duration = Duration::from_millis(10);
const TARGET_COLD_P99: Duration = Duration::from_millis(25);
const TARGET_WARM_OVERHEAD: Duration = Duration::from_micros(100);
const TARGET_ASLEEP_MIB: f64 = 100.0;
const TARGET_ASLEEP_CPU_PERCENT: f64 = 1.0;
const TARGET_BURST: Duration = Duration::from_secs(10);

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// The namespace the bench runs in; deleted on drop.
struct Namespace(Option<ip::Netns>);

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Some(netns) = self.0.take() {
            let _ = netns.delete();
        }
    }
}

pub fn main(args: SummonArgs) -> Result<ExitCode> {
    ensure!(rustix::process::geteuid().is_root(), "bench summon needs root (a network namespace and taps)");
    if let Some(why) = qemu::kvm::unavailable_reason() {
        bail!("bench summon needs KVM: {why}");
    }
    let root = build::workspace_root();
    let manager = build_manager(&root)?;
    let tender = build_tender()?;
    let httpd = build_httpd(Arch::X86_64)?;
    let kvlog = build::build_for_platform(&root, "kvlog", Arch::X86_64, Platform::Tender, build::Profile::Release)
        .context("building kvlog for the tender")?
        .artifact;
    let trust = super::failover::workspace_trust_args(&root)?;

    let name = format!("mast-summon-{}", std::process::id());
    let netns = Namespace(Some(ip::Netns::create(&name)?));
    let home = rustix::fs::open("/proc/thread-self/ns/net", rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty())?;
    // The daemon, its tenders and the CLI are this thread's children: they inherit the namespace.
    ip::enter(&netns.0.as_ref().expect("created").open()?)?;
    let result = run(&args, &manager, &tender, &trust, &httpd, &kvlog);
    let _ = ip::enter(&home);
    drop(netns);
    result
}

fn run(
    args: &SummonArgs,
    manager: &Path,
    tender: &Path,
    trust: &[String],
    httpd: &Path,
    kvlog: &Path,
) -> Result<ExitCode> {
    let tender = tender.display().to_string();
    let rack = Rack::start(manager, "summon", trust, &["--launcher", "tender", "--tender", &tender])?;
    rack.cli(&["image", "push", &httpd.display().to_string()])?;
    rack.cli(&["image", "push", &kvlog.display().to_string()])?;
    let mut met = true;

    // Cold starts: 10 services sleeping after 100 ms, woken in turn.
    let cold = deploy(&rack, &["httpd", "--replicas", "10", "--idle-timeout", "100ms"])?;
    let mut samples = Vec::new();
    let mut lost = 0;
    for n in 0..args.wakes as usize {
        let (id, address) = &cold[n % cold.len()];
        wait_asleep(rack.dir(), id)?;
        match first_byte(*address) {
            Ok(d) => samples.push(d),
            Err(e) => {
                lost += 1;
                eprintln!("cold request {n} to {address}: {e}\n{}", rack.log_tail());
            }
        }
    }
    samples.sort();
    let (p50, p99) = (percentile(&samples, 50.0), percentile(&samples, 99.0));
    println!(
        "cold connect -> first byte (tender, {} wakes): p50 {} p99 {} max {} (targets p50 <= 10 ms, p99 <= 25 ms: {})",
        samples.len(),
        us(p50),
        us(p99),
        us(samples.last().copied().unwrap_or_default()),
        verdict(p50 <= TARGET_COLD_P50 && p99 <= TARGET_COLD_P99)
    );
    println!("requests lost across {} sleep/wake cycles: {lost} (target 0: {})", args.wakes, verdict(lost == 0));
    met &= p50 <= TARGET_COLD_P50 && p99 <= TARGET_COLD_P99 && lost == 0;

    // Warm path: through the gate against straight to the guest.
    let warm = deploy(&rack, &["httpd", "--idle-timeout", "10m"])?;
    let (id, gate) = &warm[0];
    whole_response(*gate)?;
    let guest = guest_address(rack.dir(), id)?;
    let (mut through, mut direct) = (Vec::new(), Vec::new());
    for _ in 0..500 {
        through.push(whole_response(*gate)?);
        direct.push(whole_response(guest)?);
    }
    through.sort();
    direct.sort();
    let (through, direct) = (percentile(&through, 50.0), percentile(&direct, 50.0));
    let overhead = through.saturating_sub(direct);
    println!(
        "warm GET / p50: through the gate {} vs straight to the guest {}: overhead {} (target <= 100 µs: {})",
        us(through),
        us(direct),
        us(overhead),
        verdict(overhead <= TARGET_WARM_OVERHEAD)
    );
    met &= overhead <= TARGET_WARM_OVERHEAD;

    // Idle-timeout accuracy: 1 s.
    let timed = deploy(&rack, &["httpd", "--idle-timeout", "1s"])?;
    let (id, address) = &timed[0];
    let mut errors = Vec::new();
    for _ in 0..5 {
        wait_asleep(rack.dir(), id)?;
        whole_response(*address)?;
        let closed = Instant::now();
        wait_asleep(rack.dir(), id)?;
        errors.push(closed.elapsed().saturating_sub(Duration::from_secs(1)));
    }
    errors.sort();
    println!(
        "idle timeout 1 s: stopped {} (median) to {} (max) after it expired",
        us(percentile(&errors, 50.0)),
        us(*errors.last().expect("five samples"))
    );

    // kvlog: wake -> append acknowledged; every record there after the cycles.
    let kv = deploy(&rack, &["kvlog", "--idle-timeout", "100ms"])?;
    let (id, address) = &kv[0];
    let mut appends = Vec::new();
    for c in 0..args.kvlog_cycles {
        wait_asleep(rack.dir(), id)?;
        let started = Instant::now();
        let (status, _) = exchange(*address, "POST", &format!("/append?key=k{c}"), format!("value {c}").as_bytes())
            .with_context(|| format!("append {c}: {}", rack.log_tail()))?;
        ensure!(status == 201, "append {c} answered {status}");
        appends.push(started.elapsed());
    }
    wait_asleep(rack.dir(), id)?;
    let mut missing = 0;
    for c in 0..args.kvlog_cycles {
        let read = exchange(*address, "GET", &format!("/log/{c}"), b"").with_context(|| rack.log_tail())?;
        if read != (200, format!("value {c}")) {
            missing += 1;
        }
    }
    appends.sort();
    println!(
        "kvlog wake -> append acknowledged ({} cycles): p50 {} p99 {}; records missing after the cycles: {missing} (target 0: {})",
        appends.len(),
        us(percentile(&appends, 50.0)),
        us(percentile(&appends, 99.0)),
        verdict(missing == 0)
    );
    met &= missing == 0;

    // N registered, all asleep: the manager's memory and CPU.
    let pid = rack.pid().context("the manager runs")?;
    let rss_before = rss_kib(pid)?;
    let registered = Instant::now();
    // In deployments of at most 500 replicas: one deploy of thousands outlasts the CLI's deadline
    // (every instance id is a durable sequence step).
    let mut many = Vec::new();
    let mut left = args.services;
    while left > 0 {
        let chunk = left.min(500);
        many.extend(deploy_within(
            &rack,
            &["httpd", "--replicas", &chunk.to_string(), "--idle-timeout", "30s"],
            Duration::from_secs(600),
        )?);
        left -= chunk;
    }
    println!("registered {} on-demand services in {:.1} s", many.len(), registered.elapsed().as_secs_f64());
    thread::sleep(Duration::from_secs(2));
    let (rss_after, cpu_before) = (rss_kib(pid)?, cpu_ticks(pid)?);
    let window = Duration::from_secs(10);
    thread::sleep(window);
    let cpu = (cpu_ticks(pid)? - cpu_before) as f64 / 100.0 / window.as_secs_f64() * 100.0;
    let mib = rss_after.saturating_sub(rss_before) as f64 / 1024.0;
    println!(
        "{} services asleep: manager RSS +{mib:.1} MiB ({:.1} MiB in all; target <= 100 MiB: {}), CPU {cpu:.2}% of one core (target <= 1%: {})",
        many.len(),
        rss_after as f64 / 1024.0,
        verdict(mib <= TARGET_ASLEEP_MIB),
        verdict(cpu <= TARGET_ASLEEP_CPU_PERCENT)
    );
    met &= mib <= TARGET_ASLEEP_MIB && cpu <= TARGET_ASLEEP_CPU_PERCENT;

    // A burst: that many different sleeping services, one request each, all at once.
    let burst: Vec<SocketAddr> = many.iter().take(args.burst as usize).map(|(_, a)| *a).collect();
    let barrier = Arc::new(Barrier::new(burst.len() + 1));
    let workers: Vec<_> = burst
        .iter()
        .map(|address| {
            let (barrier, address) = (barrier.clone(), *address);
            thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    barrier.wait();
                    exchange(address, "GET", "/", b"").is_ok_and(|(status, _)| status == 200)
                })
                .context("starting a client thread")
        })
        .collect::<Result<_>>()?;
    barrier.wait();
    let started = Instant::now();
    let answered = workers.into_iter().filter_map(|w| w.join().ok()).filter(|ok| *ok).count();
    let took = started.elapsed();
    println!(
        "burst: {} sleeping services woken at once: {answered} answered, {} failed, all done in {:.2} s (target all within 10 s: {})",
        burst.len(),
        burst.len() - answered,
        took.as_secs_f64(),
        verdict(answered == burst.len() && took <= TARGET_BURST)
    );
    met &= answered == burst.len() && took <= TARGET_BURST;

    // Energy: what ps says each deployment used.
    let instances = rack.json_within(&["ps"], Duration::from_secs(120))?;
    let mut per: std::collections::BTreeMap<String, (u64, u64, u64, usize)> = Default::default();
    for instance in instances.as_array().into_iter().flatten() {
        let gate = &instance["gate"];
        let entry = per.entry(instance["deployment"].as_str().unwrap_or("?").to_owned()).or_default();
        entry.0 += gate["cpu_ms"].as_u64().unwrap_or(0);
        entry.1 += gate["awake_ms"].as_u64().unwrap_or(0);
        entry.2 += gate["wakes"].as_u64().unwrap_or(0);
        entry.3 += 1;
    }
    for (deployment, (cpu_ms, awake_ms, wakes, count)) in per {
        println!(
            "energy {deployment} ({count} service(s)): {wakes} wakes, {:.2} CPU-seconds, {:.1} s awake",
            cpu_ms as f64 / 1000.0,
            awake_ms as f64 / 1000.0
        );
    }
    Ok(if met { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Deploys on demand and waits until every gate is open; (instance id, service address) each.
fn deploy(rack: &Rack, args: &[&str]) -> Result<Vec<(String, SocketAddr)>> {
    deploy_within(rack, args, Duration::from_secs(60))
}

fn deploy_within(rack: &Rack, args: &[&str], within: Duration) -> Result<Vec<(String, SocketAddr)>> {
    let response = rack.json_within(&[&["deploy", "--on-demand", "--detach"], args].concat(), within)?;
    let deployment = response
        .as_array()
        .and_then(|all| all.first())
        .and_then(|i| i["deployment"].as_str())
        .context("deploy printed no instance")?
        .to_owned();
    wait_until("the gates to open", within, || {
        let all = rack.json_within(&["ps"], Duration::from_secs(120))?;
        let mine: Vec<&Value> =
            all.as_array().into_iter().flatten().filter(|i| i["deployment"] == deployment.as_str()).collect();
        if mine.is_empty() || mine.iter().any(|i| i["gate"].is_null()) {
            return Ok(None);
        }
        mine.iter()
            .map(|i| Ok((i["id"].as_str().context("id")?.to_owned(), endpoint(i)?)))
            .collect::<Result<_>>()
            .map(Some)
    })
    .with_context(|| rack.log_tail())
}

fn endpoint(instance: &Value) -> Result<SocketAddr> {
    let port = &instance["ports"][0];
    let address = port["address"].as_str().context("a gate has an address")?;
    Ok(SocketAddr::new(address.parse()?, u16::try_from(port["host_port"].as_u64().context("port")?)?))
}

/// Waits until no tender runs for instance `id` (the gate slept).
fn wait_asleep(dir: &Path, id: &str) -> Result<()> {
    let needle = dir.join("instances").join(id).join("").display().to_string();
    wait_until(&format!("{id} to sleep"), Duration::from_secs(30), || Ok(tenders_mentioning(&needle).then_some(())))
}

fn tenders_mentioning(needle: &str) -> bool {
    !fs::read_dir("/proc").into_iter().flatten().flatten().any(|entry| {
        entry.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            && fs::read(entry.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
    })
}

/// The guest's own address: slot n's /30 (`instances/<id>/tender-slot`).
fn guest_address(dir: &Path, id: &str) -> Result<SocketAddr> {
    let slot: u32 = fs::read_to_string(dir.join("instances").join(id).join("tender-slot"))?.trim().parse()?;
    let link = DEFAULT_SUBNET.link(slot).context("the slot is in the default subnet")?;
    Ok(SocketAddr::new(link.guest.into(), 8080))
}

/// Connect → the first byte of the answer to `GET /`, then the rest, which must be a 200.
fn first_byte(address: SocketAddr) -> Result<Duration> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut first = [0u8; 1];
    stream.read_exact(&mut first)?;
    let took = started.elapsed();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    ensure!(first[0] == b'H' && rest.starts_with(b"TTP/1.1 200"), "not a 200");
    Ok(took)
}

/// Connect → the whole answer to `GET /` (a 200).
fn whole_response(address: SocketAddr) -> Result<Duration> {
    let started = Instant::now();
    let (status, _) = exchange(address, "GET", "/", b"")?;
    ensure!(status == 200, "GET / answered {status}");
    Ok(started.elapsed())
}

fn exchange(address: SocketAddr, method: &str, path: &str, body: &[u8]) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let _ = stream.set_nodelay(true);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(&[head.as_bytes(), body].concat())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).with_context(|| format!("no status in {text:?}"))?;
    Ok((status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")
}

/// utime + stime of `pid` and its threads, in clock ticks (100 a second).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').context("stat")?.1.split_whitespace().collect();
    Ok(fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
}
