//! `cargo xtask bench http`: the `httpd` appliance's figures, per architecture.
//!
//! - **start → first 200**: from starting QEMU to the first complete `200` answer to
//!   `GET /healthz`, over `--runs` boots (after one untimed warm-up). Each boot waits for the
//!   appliance's `listening` console line before its first request, because QEMU's user network
//!   accepts connections before the guest listens and such early connections can stall.
//! - **load**: `--connections` keep-alive clients each sending `--requests` `GET /index.html`
//!   one after another; requests per second over the whole run, and the latency of each request
//!   (write to last byte read) at the 50th and 99th percentiles.
//! - **idle CPU**: the QEMU process's CPU time (user + system, from /proc) over 10 s in which the
//!   appliance serves nothing, as a share of one core.
//! - **image**: the kernel and the signed image (kernel, site and manifest).
//! - **revalidation**: a cache-like client that fetches each file of the site once (gzip accepted)
//!   and then revalidates it `--revalidations` times with `If-None-Match`; the bytes on the wire
//!   against the same requests sent unconditionally without compression, the share of
//!   revalidations answered 304 (target: all), and each HTML/CSS file's gzip size against its
//!   plain size (target: at most 40%).
//!
//! The client is a minimal HTTP/1.1 one over `std::net`, so what is measured is the appliance and
//! QEMU, not a client library.

use std::{
    fs,
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use images::Arch;
use qemu::{Instance, Machine, free_local_port, kvm};

use super::report::{Summary, ms, percentile};
use crate::{
    deps,
    http_client::{Client, IO_TIMEOUT},
};

#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Timed boots per architecture for start → first 200 (after one untimed warm-up).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Concurrent keep-alive connections in the load test.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub connections: u32,
    /// Requests per connection in the load test.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(1..))]
    pub requests: u32,
    /// Seconds of idleness over which QEMU's CPU use is measured.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_secs: u64,
    /// Revalidations of each site file in the revalidation test.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub revalidations: u32,
    /// Only this architecture (default: both).
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<Arch>,
    /// Boot with a static address (`ip=10.0.2.15/24 gw=10.0.2.2`, QEMU's user network) instead of
    /// the manifest's DHCP, to see what the DHCP exchange costs.
    #[arg(long = "static")]
    pub static_address: bool,
}

/// The static configuration `--static` boots with: the address QEMU's user network forwards to.
const STATIC_ARGS: [&str; 2] = ["ip=10.0.2.15/24", "gw=10.0.2.2"];

/// The port httpd listens on (its manifest's `[[listen]]`).
const GUEST_PORT: u16 = 8080;
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

pub fn main(args: HttpArgs) -> Result<ExitCode> {
    let arches: Vec<Arch> = args.arch.map_or(Arch::ALL.to_vec(), |a| vec![a]);
    println!(
        "http bench: release `httpd`; start → first 200 over {} boots per arch after 1 warm-up; \
         load: {} keep-alive connections × {} GET /index.html; idle CPU over {} s; address by {}",
        args.runs,
        args.connections,
        args.requests,
        args.idle_secs,
        if args.static_address { "boot arguments (--static)" } else { "DHCP (the manifest's default)" }
    );
    for arch in arches {
        deps::ensure_qemu(arch)?;
        if arch == Arch::X86_64
            && let Some(reason) = kvm::unavailable_reason()
        {
            println!("{arch}: skipped: {reason}");
            continue;
        }
        bench_arch(arch, &args).with_context(|| format!("benchmarking httpd on {arch}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_arch(arch: Arch, args: &HttpArgs) -> Result<()> {
    let built = qemu::appliance_image("httpd", arch)?;
    let machine = qemu::appliance_machine("httpd", arch)?;
    let machine = if args.static_address { machine.args(&STATIC_ARGS) } else { machine };
    println!(
        "{arch}: image: kernel {} bytes ({:.1} KiB), signed image with site {} bytes ({:.1} KiB)",
        built.info.file_size,
        built.info.file_size as f64 / 1024.0,
        built.artifact_size,
        built.artifact_size as f64 / 1024.0
    );

    let mut first_200 = Vec::new();
    let mut listening = Vec::new();
    for run in 0..=args.runs {
        let (vm, port, listened) = boot(&machine)?;
        let (status, body) = request_once(port, "/healthz")?;
        let answered = vm.elapsed();
        ensure!(status == 200 && body == b"ok\n", "GET /healthz answered {status}");
        if run > 0 {
            first_200.push(answered);
            listening.push(listened);
        }
    }
    let first = Summary::of(&first_200).context("no timed boots")?;
    let listen = Summary::of(&listening).context("no timed boots")?;
    println!(
        "{arch}: start → first 200: median {}, min {}, max {} ({} boots; start → listening median {})",
        ms(first.median),
        ms(first.min),
        ms(first.max),
        first_200.len(),
        ms(listen.median)
    );

    let (vm, port, _) = boot(&machine)?;
    let expected = fs::read(images::build::workspace_root().join("kernel-apps/httpd/site/index.html"))?;
    let (rate, latencies) = load(port, args.connections, args.requests, &expected).context("the load test")?;
    let p50 = percentile(&latencies, 50.0);
    let p99 = percentile(&latencies, 99.0);
    println!(
        "{arch}: load: {:.0} requests/s, latency p50 {}, p99 {} ({} requests, 0 failed)",
        rate,
        ms(p50),
        ms(p99),
        latencies.len()
    );

    revalidation(arch, port, args.revalidations).context("the revalidation test")?;

    // Let the load's connections finish closing and the stack's timers run out.
    thread::sleep(Duration::from_secs(2));
    let pid = vm.pid();
    let before = cpu_time(pid)?;
    let began = Instant::now();
    thread::sleep(Duration::from_secs(args.idle_secs));
    let used = cpu_time(pid)? - before;
    let share = used.as_secs_f64() / began.elapsed().as_secs_f64();
    println!(
        "{arch}: idle: QEMU used {:.2}% of one core over {:.1} s ({} ms of CPU)",
        share * 100.0,
        began.elapsed().as_secs_f64(),
        used.as_millis()
    );
    let (status, _) = request_once(port, "/healthz").context("the request after the idle period")?;
    ensure!(status == 200, "httpd stopped answering after the idle period");
    Ok(())
}

/// Boots `machine` with httpd's port forwarded from a free host port and waits for its
/// `listening` line; returns the VM, the port and when the line appeared. Retries if another
/// process takes the port first (QEMU then exits at once).
fn boot(machine: &Machine) -> Result<(Instance, u16, Duration)> {
    for _ in 0..3 {
        let port = free_local_port()?;
        let mut vm = machine.clone().forward_tcp(port, GUEST_PORT).spawn()?;
        match vm.wait_for("httpd: listening on", BOOT_TIMEOUT) {
            Ok(listened) => return Ok((vm, port, listened)),
            Err(qemu::WaitError::Exited { .. }) => continue,
            Err(e) => bail!("{e}; console: {:?}", vm.console()),
        }
    }
    bail!("QEMU could not forward a free port three times")
}

/// One GET on a new connection, retried on a new connection if the first attempt fails (QEMU may
/// still be wiring up the forward).
fn request_once(port: u16, path: &str) -> Result<(u16, Vec<u8>)> {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let attempt = (|| -> Result<(u16, Vec<u8>)> {
            let mut client = Client::connect(port)?;
            client.get(path)
        })();
        match attempt {
            Ok(response) => return Ok(response),
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(e),
        }
    }
}

/// Runs `connections` keep-alive clients of `requests` requests each; returns requests per second
/// and every request's latency.
///
/// The connections are opened one at a time (each checked with an untimed request) before the
/// timed requests start together: QEMU's forwarded port listens with a backlog of one, and
/// simultaneous connects would measure the host kernel's accept queue, not the appliance.
fn load(port: u16, connections: u32, requests: u32, expected: &[u8]) -> Result<(f64, Vec<Duration>)> {
    let mut clients = Vec::new();
    for _ in 0..connections {
        let mut client = Client::connect(port).context("connecting a load client")?;
        let (status, _) = client.get("/index.html").context("a load client's first request")?;
        ensure!(status == 200, "a load client's first request answered {status}");
        clients.push(client);
    }
    let began = Instant::now();
    let workers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let expected = expected.to_vec();
            thread::spawn(move || -> Result<Vec<Duration>> {
                let mut latencies = Vec::with_capacity(requests as usize);
                for request in 0..requests {
                    let start = Instant::now();
                    let (status, body) =
                        client.get("/index.html").with_context(|| format!("load request {request}"))?;
                    latencies.push(start.elapsed());
                    ensure!(status == 200 && body == expected, "a wrong answer under load");
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.join().map_err(|_| anyhow::anyhow!("a load thread panicked"))??);
    }
    let rate = latencies.len() as f64 / began.elapsed().as_secs_f64();
    latencies.sort();
    Ok((rate, latencies))
}

/// The site's files, by URL path.
fn site_files() -> Result<Vec<(String, Vec<u8>)>> {
    let dir = images::build::workspace_root().join("kernel-apps/httpd/site");
    let mut files = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        files.push((format!("/{}", entry.file_name().to_string_lossy()), fs::read(entry.path())?));
    }
    files.sort();
    Ok(files)
}

/// The value of header `name` in a response head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").find_map(|line| {
        let (field, value) = line.split_once(':')?;
        field.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// The revalidation-heavy load (see the module docs).
fn revalidation(arch: Arch, port: u16, revalidations: u32) -> Result<()> {
    let files = site_files()?;
    let mut cache = Client::connect(port)?.with_header("Accept-Encoding", "gzip");
    let mut naive = Client::connect(port)?;
    let (mut not_modified, mut asked) = (0u32, 0u32);
    let mut ratios = Vec::new();
    for (path, bytes) in &files {
        let (status, body) = cache.get(path)?;
        ensure!(status == 200, "GET {path} answered {status}");
        let etag = header(&cache.last_head, "etag").with_context(|| format!("GET {path}: no ETag"))?.to_owned();
        if path.ends_with(".html") || path.ends_with(".css") {
            ratios.push((path.clone(), body.len(), bytes.len()));
        }
        for _ in 0..revalidations {
            let (status, _) = cache.request_with("GET", path, &format!("If-None-Match: {etag}\r\n"), &[])?;
            asked += 1;
            not_modified += u32::from(status == 304);
        }
        for _ in 0..=revalidations {
            let (status, body) = naive.get(path)?;
            ensure!(status == 200 && body == *bytes, "GET {path}: a wrong answer");
        }
    }
    let saved = 1.0 - cache.received as f64 / naive.received as f64;
    println!(
        "{arch}: revalidation: {} requests, {} bytes on the wire vs {} unconditional and uncompressed ({:.1}% saved)",
        asked as usize + files.len(),
        cache.received,
        naive.received,
        saved * 100.0
    );
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!(
        "{arch}: revalidation: 304 for {not_modified} of {asked} revalidations (target: all: {})",
        verdict(not_modified == asked)
    );
    for (path, wire, plain) in ratios {
        let share = wire as f64 / plain as f64;
        println!(
            "{arch}: gzip: {path}: {wire} of {plain} bytes on the wire ({:.0}%; target <= 40%: {})",
            share * 100.0,
            verdict(share <= 0.40)
        );
    }
    Ok(())
}

/// CPU time (user + system) the process has used, from /proc (in USER_HZ = 100 ticks/s).
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').context("a stat line")?.1.split_whitespace().collect();
    let ticks: u64 =
        fields.get(11).context("utime")?.parse::<u64>()? + fields.get(12).context("stime")?.parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 10))
}
