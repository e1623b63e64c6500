//! `rack-manager stats`: CPU and memory of running instances *now* (CPU over a short interval,
//! not since boot), per instance and per host, once or `--watch`ed, for all or some instances.

use std::{
    collections::BTreeMap,
    thread,
    time::{Duration, Instant},
};

use clap::Args;
use rack_api::{InstanceStats, Stats, power::RackPower};
use serde::Serialize;

use super::{
    output::{self, Format},
    power, targets,
};
use crate::client::Client;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only these instances, or deployments (by id or image name) [default: every running one].
    #[arg(value_name = "INSTANCE|DEPLOYMENT")]
    pub filter: Vec<String>,
    /// Print again every interval until interrupted (Ctrl-C).
    #[arg(short, long)]
    pub watch: bool,
    /// Seconds over which current CPU use is measured (and between --watch updates).
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    pub interval: f64,
}

/// One instance's use now.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceNow {
    pub id: String,
    pub host: String,
    pub pid: Option<u32>,
    /// CPU use over the last interval, in percent of one core.
    pub cpu_percent: Option<f64>,
    /// CPU time since its run started, in milliseconds.
    pub cpu_ms: Option<u64>,
    pub rss_bytes: Option<u64>,
    /// On-demand instances: time at least one appliance was awake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awake_ms: Option<u64>,
}

/// A host's totals over its instances.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostNow {
    pub host: String,
    pub instances: u32,
    pub cpu_percent: f64,
    pub rss_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatsNow {
    pub interval_s: f64,
    pub instances: Vec<InstanceNow>,
    pub hosts: Vec<HostNow>,
    /// The rack's estimated draw and each deployment's energy, at the second sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power: Option<RackPower>,
}

/// Two samples `interval` apart: CPU use in between, memory at the second.
fn sample(client: &Client, only: Option<&[String]>, interval: Duration) -> anyhow::Result<StatsNow> {
    let keep = |s: &InstanceStats| only.is_none_or(|ids| ids.contains(&s.id));
    let first: Stats = client.get("/stats")?;
    let started = Instant::now();
    thread::sleep(interval);
    let second: Stats = client.get("/stats")?;
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut hosts: BTreeMap<String, HostNow> = BTreeMap::new();
    let mut instances = Vec::new();
    for now in second.instances.iter().filter(|s| keep(s)) {
        // The same run in both samples (a restart in between has another pid).
        let before = first.instances.iter().find(|b| b.id == now.id && b.pid == now.pid);
        let cpu_percent = match (before.and_then(|b| b.cpu_ms), now.cpu_ms) {
            (Some(a), Some(b)) if elapsed_ms > 0.0 => Some(b.saturating_sub(a) as f64 * 100.0 / elapsed_ms),
            _ => None,
        };
        let host =
            hosts.entry(now.host.clone()).or_insert_with(|| HostNow { host: now.host.clone(), ..HostNow::default() });
        host.instances += 1;
        host.cpu_percent += cpu_percent.unwrap_or(0.0);
        host.rss_bytes += now.rss_bytes.unwrap_or(0);
        instances.push(InstanceNow {
            id: now.id.clone(),
            host: now.host.clone(),
            pid: now.pid,
            cpu_percent,
            cpu_ms: now.cpu_ms,
            rss_bytes: now.rss_bytes,
            awake_ms: now.awake_ms,
        });
    }
    Ok(StatsNow {
        interval_s: interval.as_secs_f64(),
        instances,
        hosts: hosts.into_values().collect(),
        power: second.power,
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn print(format: Format, stats: &StatsNow) -> anyhow::Result<()> {
    if format == Format::Json {
        return output::print_json(stats);
    }
    // AWAKE only where some instance is on demand.
    let awake = stats.instances.iter().any(|s| s.awake_ms.is_some());
    let rows: Vec<Vec<String>> = stats
        .instances
        .iter()
        .map(|s| {
            let mut row = vec![
                s.id.clone(),
                s.host.clone(),
                s.pid.map_or("-".into(), |p| p.to_string()),
                s.cpu_percent.map_or("-".into(), |p| format!("{p:.1}%")),
                s.cpu_ms.map_or("-".into(), |ms| format!("{:.2}s", ms as f64 / 1000.0)),
                s.rss_bytes.map_or("-".into(), mib),
            ];
            if awake {
                row.push(s.awake_ms.map_or("-".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0)));
            }
            row
        })
        .collect();
    let header = ["ID", "HOST", "PID", "CPU", "CPU TIME", "RSS", "AWAKE"];
    output::table(&header[..if awake { header.len() } else { header.len() - 1 }], &rows);
    println!();
    let rows: Vec<Vec<String>> = stats
        .hosts
        .iter()
        .map(|h| vec![h.host.clone(), h.instances.to_string(), format!("{:.1}%", h.cpu_percent), mib(h.rss_bytes)])
        .collect();
    output::table(&["HOST", "INSTANCES", "CPU", "RSS"], &rows);
    let rss: u64 = stats.hosts.iter().map(|h| h.rss_bytes).sum();
    println!(
        "{} instance(s), {} resident in all; CPU over the last {:.1} s, in % of one core",
        stats.instances.len(),
        mib(rss),
        stats.interval_s
    );
    if let Some(report) = &stats.power {
        power::print(report);
    }
    Ok(())
}

pub fn run(client: &Client, format: Format, args: &StatsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.interval.is_finite() && (0.1..=3600.0).contains(&args.interval),
        "--interval {} is not between 0.1 and 3600 seconds",
        args.interval
    );
    let interval = Duration::from_secs_f64(args.interval);
    let only = if args.filter.is_empty() { None } else { Some(targets::resolve(client, &args.filter)?) };
    loop {
        let stats = sample(client, only.as_deref(), interval)?;
        if args.watch && format == Format::Table {
            // Clear the terminal and print from its top, like `watch`.
            print!("\x1b[2J\x1b[H");
        }
        print(format, &stats)?;
        if !args.watch {
            return Ok(());
        }
    }
}
