//! `cargo xtask bench dashboard`: the dashboard's first meaningful paint and a `/metrics` scrape
//! with 2,000 simulated instances (issue #15's targets).
//!
//! One release `rack-manager serve --launcher sim` on 127.0.0.1 with `--hosts` simulated hosts
//! runs `--instances` hello instances (no VM boots). A read-only token signs in as a browser
//! does (`POST /login`, the session cookie), then, `--runs` times, each on a new connection:
//!
//! - first meaningful paint: `GET /` (the page, whose overview the server renders: host and
//!   instance counts, memory, watts) plus `GET /app.css` (the only render-blocking asset), from
//!   the first byte sent to the last byte received: what a browser needs before it paints the
//!   numbers. The script's first refresh (`/v1/hosts`, `/v1/instances?all=true`, `/v1/stats`)
//!   is timed and printed too, without a target;
//! - a `/metrics` scrape with the token as Prometheus sends it.
//!
//! The median and the slowest run are printed, each target `met` or `MISSED` on the slowest
//! (exit 1 when one is missed). The browser test (`tests/dashboard.rs`) prints Chromium's own
//! first-contentful-paint for a small rack.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use images::{
    Arch,
    build::{self, Profile},
};

use super::{
    failover::{Rack, build_manager, wait_until},
    report::{Summary, ms},
};

const TARGET_PAINT: Duration = Duration::from_millis(300);
const TARGET_SCRAPE: Duration = Duration::from_millis(100);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Simulated instances.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    pub instances: u32,
    /// Simulated hosts they spread over.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub hosts: u32,
    /// Timed runs of each measurement.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(3..=1000))]
    pub runs: u32,
}

/// One request on a new connection (`Connection: close`): status, head, body, and the time from
/// connecting to the last byte.
fn request(port: u16, method: &str, path: &str, headers: &str, body: &str) -> Result<(u16, String, Vec<u8>, Duration)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&std::net::SocketAddr::from(([127, 0, 0, 1], port)), IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: bench\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let took = started.elapsed();
    let at = response.windows(4).position(|w| w == b"\r\n\r\n").context("a response without a head")? + 4;
    let head = String::from_utf8_lossy(&response[..at]).into_owned();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).context("a malformed status line")?;
    Ok((status, head, response[at..].to_vec(), took))
}

pub fn main(args: DashboardArgs) -> Result<ExitCode> {
    let root = build::workspace_root();
    let manager = build_manager(&root)?;
    let hello = build::build(&root, "hello", Arch::Aarch64, Profile::Release)?.artifact;
    let trust = super::failover::workspace_trust_args(&root)?;
    let hosts = args.hosts.to_string();
    let rack =
        Rack::start(&manager, "dash", &trust, &["--launcher", "sim", "--sim-hosts", &hosts, "--memory-mib", "4096"])?;
    rack.cli(&["image", "push", &hello.display().to_string()])?;
    let replicas = args.instances.to_string();
    rack.cli(&["deploy", "hello", "--replicas", &replicas, "--detach"])?;
    let expected = args.instances as usize;
    wait_until("the instances to run", Duration::from_secs(120), || {
        let running = rack.json(&["ps"])?.as_array().into_iter().flatten().filter(|i| i["state"] == "running").count();
        Ok((running == expected).then_some(()))
    })?;
    let token = rack.cli(&["token", "create", "--read-only", "--name", "bench"])?.trim().to_owned();
    let url = std::fs::read_to_string(rack.dir().join("address")).context("the manager's address")?;
    let port: u16 = url.trim().rsplit(':').next().and_then(|p| p.parse().ok()).context("the manager's port")?;
    println!(
        "dashboard bench: release rack-manager --launcher sim, {} hosts, {expected} running hello instances, \
         127.0.0.1; {} runs each, a new connection per request, a read-only token",
        args.hosts, args.runs
    );

    let (status, head, _, _) = request(
        port,
        "POST",
        "/login",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        &format!("token={token}"),
    )?;
    ensure!(status == 303, "signing in answered {status}:\n{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().starts_with("set-cookie:").then(|| l[11..].trim().to_owned()))
        .and_then(|c| c.split(';').next().map(str::to_owned))
        .context("signing in set no cookie")?;
    let session = format!("Cookie: {cookie}\r\n");
    let bearer = format!("Authorization: Bearer {token}\r\n");

    let (mut paint, mut refresh, mut scrape) = (Vec::new(), Vec::new(), Vec::new());
    let mut page_bytes = 0;
    let mut metrics_bytes = 0;
    for _ in 0..args.runs {
        let (status, _, page, took_page) = request(port, "GET", "/", &session, "")?;
        ensure!(status == 200, "GET / answered {status}");
        let text = String::from_utf8_lossy(&page);
        ensure!(
            text.contains(&format!(r#"id="ov-instances">{expected}<"#)),
            "the page's overview does not show {expected} instances"
        );
        let (status, _, _, took_css) = request(port, "GET", "/app.css", "", "")?;
        ensure!(status == 200, "GET /app.css answered {status}");
        paint.push(took_page + took_css);
        page_bytes = page.len();

        let mut took = Duration::ZERO;
        for path in ["/v1/hosts", "/v1/instances?all=true", "/v1/stats"] {
            let (status, _, _, t) = request(port, "GET", path, &session, "")?;
            ensure!(status == 200, "GET {path} answered {status}");
            took += t;
        }
        refresh.push(took);

        let (status, _, body, took) = request(port, "GET", "/metrics", &bearer, "")?;
        if status != 200 {
            bail!("GET /metrics answered {status}");
        }
        metrics_bytes = body.len();
        scrape.push(took);
    }
    let line = |what: &str, samples: &[Duration]| -> Duration {
        let s = Summary::of(samples).expect("at least three runs");
        println!("{what}: median {}, min {}, max {}", ms(s.median), ms(s.min), ms(s.max));
        s.max
    };
    let paint_max = line(&format!("first meaningful paint (GET / {} KiB + GET /app.css)", page_bytes / 1024), &paint);
    line("the page's first data refresh (hosts, instances, stats)", &refresh);
    let scrape_max = line(&format!("/metrics scrape ({} KiB)", metrics_bytes / 1024), &scrape);
    let targets = [
        (
            format!("first meaningful paint <= {} ms (slowest run): {}", TARGET_PAINT.as_millis(), ms(paint_max)),
            paint_max <= TARGET_PAINT,
        ),
        (
            format!("/metrics scrape <= {} ms (slowest run): {}", TARGET_SCRAPE.as_millis(), ms(scrape_max)),
            scrape_max <= TARGET_SCRAPE,
        ),
    ];
    for (what, met) in &targets {
        println!("target: {what} {}", if *met { "met" } else { "MISSED" });
    }
    Ok(if targets.iter().all(|(_, met)| *met) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
