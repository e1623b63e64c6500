//! `cargo xtask bench cache`: the `cache` appliance's figures on x86_64, in front of nginx.
//!
//! - **image**: the kernel and the signed image; target ≤ 256 KiB.
//! - **hits**: wrk (`--connections` keep-alive connections, 2 threads, `--secs` seconds) on one
//!   cached 1 KiB file; requests per second and wrk's median latency. Targets ≥ 15,000 req/s and
//!   p50 ≤ 1 ms.
//! - **misses**: `--misses` GETs one after another, each of a URL not yet cached (a new query),
//!   through the cache and, for comparison, straight to nginx; medians.
//! - **memory at the limit**: a 1 MiB store filled with 2 MiB of 64 KiB objects; the bytes the
//!   store charges against its bound (from `/.cache/stats`), its evictions, and QEMU's RSS.
//!
//! nginx is the origin (started here on 127.0.0.1, reached from the guest at 10.0.2.2 through
//! QEMU's user network); wrk is Debian's.

use std::{
    fs,
    process::{Child, Command, ExitCode, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use images::Arch;
use qemu::{Instance, free_local_port, kvm};

use super::report::{ms, percentile};
use crate::{deps, http_client::Client};

#[derive(Debug, Args)]
pub struct CacheArgs {
    /// wrk's connections for the hit load.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub connections: u32,
    /// Seconds of hit load.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=120))]
    pub secs: u32,
    /// Misses timed (each through the cache and straight to nginx).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub misses: u32,
}

const IMAGE_TARGET: u64 = 256 * 1024;
const HITS_TARGET: f64 = 15_000.0;
const P50_TARGET_MS: f64 = 1.0;

pub fn main(args: CacheArgs) -> Result<ExitCode> {
    deps::ensure_qemu(Arch::X86_64)?;
    deps::ensure_tool(deps::NGINX)?;
    deps::ensure_tool(deps::WRK)?;
    if let Some(reason) = kvm::unavailable_reason() {
        println!("x86_64: skipped: {reason}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "cache bench: release `cache` on x86_64 in front of nginx; hits: wrk -c {} -t 2 -d {}s on a cached 1 KiB \
         file; {} misses through the cache vs straight to nginx; a 1 MiB store filled with 2 MiB",
        args.connections, args.secs, args.misses
    );
    let built = qemu::appliance_image("cache", Arch::X86_64)?;
    let met = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "x86_64: image: kernel {} bytes ({:.1} KiB), signed image {} bytes ({:.1} KiB); target ≤ 256 KiB: {}",
        built.info.file_size,
        built.info.file_size as f64 / 1024.0,
        built.artifact_size,
        built.artifact_size as f64 / 1024.0,
        met(built.artifact_size <= IMAGE_TARGET)
    );

    let dir = tempfile::tempdir()?;
    let nginx = Nginx::start(dir.path())?;
    let (vm, port) = boot(nginx.port, 4096)?;

    // Hits.
    let (status, body) = Client::connect(port)?.get("/hit.txt")?;
    ensure!(status == 200 && body.len() == 1024, "warming /hit.txt answered {status} with {} bytes", body.len());
    let out = Command::new("wrk")
        .args(["-c", &args.connections.to_string(), "-t", "2", "-d", &format!("{}s", args.secs), "--latency"])
        .arg(format!("http://127.0.0.1:{port}/hit.txt"))
        .output()
        .context("running wrk")?;
    let report = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "wrk failed: {report}{}", String::from_utf8_lossy(&out.stderr));
    ensure!(!report.contains("Non-2xx") && !report.contains("Socket errors"), "wrk saw errors:\n{report}");
    let rps: f64 = field(&report, "Requests/sec:").context("wrk's Requests/sec")?;
    let p50 = report.lines().find_map(|l| l.trim().strip_prefix("50%")).map(str::trim).unwrap_or("?");
    let p50_ms = wrk_ms(p50).unwrap_or(f64::MAX);
    println!(
        "x86_64: hits: {rps:.0} requests/s (target ≥ 15000: {}), latency p50 {p50} (target ≤ 1 ms: {})",
        met(rps >= HITS_TARGET),
        met(p50_ms <= P50_TARGET_MS)
    );

    // Misses, through the cache and straight.
    let mut through = timed_gets(port, "cache", args.misses)?;
    let mut straight = timed_gets(nginx.port, "direct", args.misses)?;
    through.sort();
    straight.sort();
    println!(
        "x86_64: misses: through the cache median {}, p90 {}; straight to nginx median {}, p90 {} ({} each)",
        ms(percentile(&through, 50.0)),
        ms(percentile(&through, 90.0)),
        ms(percentile(&straight, 50.0)),
        ms(percentile(&straight, 90.0)),
        args.misses
    );
    drop(vm);

    // Memory at the limit.
    let (vm, port) = boot(nginx.port, 1024)?;
    let mut client = Client::connect(port)?;
    for i in 0..32 {
        let (status, _) = client.get(&format!("/big.bin?fill={i}"))?;
        ensure!(status == 200, "filling answered {status}");
    }
    let (_, stats) = client.get("/.cache/stats")?;
    let stats = String::from_utf8_lossy(&stats).into_owned();
    let number = |name: &str| -> u64 {
        stats
            .split(&format!("\"{name}\":"))
            .nth(1)
            .and_then(|r| r.split([',', '}']).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let rss = fs::read_to_string(format!("/proc/{}/status", vm.pid()))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| "?".into());
    println!(
        "x86_64: memory at the limit: store {} of {} bytes in {} entries after 2 MiB of 64 KiB objects ({} evictions; \
         within the bound: {}); QEMU RSS {rss}",
        number("bytes"),
        number("limit"),
        number("entries"),
        number("evictions"),
        met(number("bytes") <= number("limit") && number("evictions") > 0)
    );
    drop(vm);
    Ok(ExitCode::SUCCESS)
}

/// `count` GETs of distinct URLs on one keep-alive connection; each one's latency.
fn timed_gets(port: u16, tag: &str, count: u32) -> Result<Vec<Duration>> {
    let mut client = Client::connect(port)?;
    let mut times = Vec::new();
    for i in 0..count {
        let started = Instant::now();
        let (status, body) = client.get(&format!("/hit.txt?{tag}={i}"))?;
        times.push(started.elapsed());
        ensure!(status == 200 && body.len() == 1024, "a miss answered {status}");
    }
    Ok(times)
}

fn field(report: &str, name: &str) -> Option<f64> {
    report.lines().find_map(|l| l.trim().strip_prefix(name)).and_then(|v| v.trim().parse().ok())
}

/// wrk's `123.45us` / `1.20ms` / `2.00s` as milliseconds.
fn wrk_ms(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else {
        (text.strip_suffix('s')?, 1000.0)
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

fn boot(origin_port: u16, cache_kib: u32) -> Result<(Instance, u16)> {
    let machine = qemu::appliance_machine("cache", Arch::X86_64)?
        .args(&[format!("origin=10.0.2.2:{origin_port}"), format!("cache_kib={cache_kib}")]);
    for _ in 0..3 {
        let port = free_local_port()?;
        let mut vm = machine.clone().forward_tcp(port, 8080).spawn()?;
        match vm.wait_for("cache: listening on", Duration::from_secs(60)) {
            Ok(_) => return Ok((vm, port)),
            Err(qemu::WaitError::Exited { .. }) => continue,
            Err(e) => bail!("{e}; console: {:?}", vm.console()),
        }
    }
    bail!("QEMU could not forward a free port three times")
}

/// nginx in the foreground on 127.0.0.1, serving `hit.txt` (1 KiB) and `big.bin` (64 KiB) with
/// `Cache-Control: max-age=600`; killed on drop.
struct Nginx {
    child: Child,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn start(dir: &std::path::Path) -> Result<Nginx> {
        let root = dir.join("site");
        fs::create_dir_all(&root)?;
        fs::write(root.join("hit.txt"), vec![b'h'; 1024])?;
        fs::write(root.join("big.bin"), vec![b'b'; 64 * 1024])?;
        let port = free_local_port()?;
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 512; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  \
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  default_type text/plain;\n  \
             server {{ listen 127.0.0.1:{port}; root {}; add_header Cache-Control \"max-age=600\"; }}\n}}\n",
            root.display()
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf)?;
        let mut command = Command::new("nginx");
        command.arg("-c").arg(&conf_path).arg("-p").arg(dir).stdin(Stdio::null());
        eprintln!("$ {}", images::command::display(&command));
        let mut child = command.spawn().context("starting nginx")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "nginx did not listen on {port}: {}",
                    fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(Nginx { child, port })
    }
}
