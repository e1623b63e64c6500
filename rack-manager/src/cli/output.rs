//! How the CLI prints things: aligned tables for people, JSON for scripts.

use anyhow::Context;
use rack_api::{DrainResponse, Host, Image, Instance, Plan};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// JSON, the API's own types.
    Json,
}

pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value).context("serialising the output")?);
    Ok(())
}

/// Prints rows under headers, each column as wide as its widest cell.
pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// A platform for a table: `-` when unknown (an image learned from a peer, not yet fetched).
fn platform(name: &str) -> String {
    if name.is_empty() { "-".into() } else { name.to_owned() }
}

pub(super) fn ago(ms: u64) -> String {
    let seconds = crate::clock::now_ms().saturating_sub(ms) / 1000;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86400),
    }
}

pub fn done<T: Serialize>(format: Format, value: &T, message: &str) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(value),
        Format::Table => {
            println!("{message}");
            Ok(())
        }
    }
}

pub fn hosts(format: Format, hosts: &[Host]) -> anyhow::Result<()> {
    if format == Format::Json {
        return print_json(&hosts);
    }
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            vec![
                h.name.clone(),
                h.state.as_str().into(),
                h.launcher.clone(),
                if h.arches.is_empty() { "-".into() } else { h.arches.join(",") },
                h.instances.to_string(),
                format!("{}/{}", h.memory_used_mib, h.memory_mib),
                format!("{}/{}", h.vcpus_used, h.vcpus),
                h.address.clone().unwrap_or_else(|| "(built in)".into()),
            ]
        })
        .collect();
    table(&["NAME", "STATE", "LAUNCHER", "ARCHES", "INSTANCES", "MEMORY MiB", "VCPUS", "AGENT"], &rows);
    if !hosts.is_empty() {
        println!("(MEMORY MiB and VCPUS: reserved by instances / offered; `serve --help` on overcommit)");
    }
    Ok(())
}

pub fn drained(format: Format, response: &DrainResponse) -> anyhow::Result<()> {
    if format == Format::Json {
        return print_json(response);
    }
    println!("host {} is draining; {} instance(s) moved", response.host.name, response.moved.len());
    for (instance, host) in &response.moved {
        println!("  {instance} -> {host}");
    }
    Ok(())
}

pub fn images(format: Format, images: &[Image]) -> anyhow::Result<()> {
    if format == Format::Json {
        return print_json(&images);
    }
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.version.clone(),
                i.arch.clone(),
                platform(&i.platform),
                rack_api::short_id(&i.id).to_owned(),
                format!("{:.1} KiB", i.size as f64 / 1024.0),
                i.memory_mib.to_string(),
                ago(i.pushed_ms),
            ]
        })
        .collect();
    table(&["NAME", "VERSION", "ARCH", "PLATFORM", "ID", "SIZE", "MEM MiB", "PUSHED"], &rows);
    Ok(())
}

pub fn image(format: Format, image: &Image) -> anyhow::Result<()> {
    if format == Format::Json {
        return print_json(image);
    }
    println!("name:        {} {}", image.name, image.version);
    println!("description: {}", image.description);
    println!("id:          {}", image.id);
    println!("arch:        {}", image.arch);
    println!("platform:    {}", platform(&image.platform));
    println!("signer:      {}", image.signer);
    println!("size:        {} bytes", image.size);
    println!("memory:      {} MiB, {} vCPU", image.memory_mib, image.vcpus);
    println!("args:        {:?}", image.args);
    let listen: Vec<String> = image.listen.iter().map(|l| format!("{}/{}", l.port, l.protocol)).collect();
    println!("listens:     {}", if listen.is_empty() { "nothing".to_owned() } else { listen.join(", ") });
    println!(
        "restart:     {} (at most {} in a row, backoff from {} ms)",
        image.restart.when.as_str(),
        image.restart.max_restarts,
        image.restart.backoff_ms
    );
    Ok(())
}

pub fn plan(format: Format, plan: &Plan) -> anyhow::Result<()> {
    if format == Format::Json {
        return print_json(plan);
    }
    println!(
        "{} replica(s) of {} ({}, {} on {}), {} MiB each, would go to:",
        plan.hosts.len(),
        plan.image_name,
        rack_api::short_id(&plan.image_id),
        plan.arch,
        platform(&plan.platform),
        plan.memory_mib
    );
    let mut counts: Vec<(String, usize)> = Vec::new();
    for host in &plan.hosts {
        match counts.iter_mut().find(|(h, _)| h == host) {
            Some((_, n)) => *n += 1,
            None => counts.push((host.clone(), 1)),
        }
    }
    let rows: Vec<Vec<String>> = counts.into_iter().map(|(h, n)| vec![h, n.to_string()]).collect();
    table(&["HOST", "REPLICAS"], &rows);
    Ok(())
}

pub fn instances(format: Format, instances: &[Instance], quiet: bool) -> anyhow::Result<()> {
    if quiet {
        for instance in instances {
            println!("{}", instance.id);
        }
        return Ok(());
    }
    if format == Format::Json {
        return print_json(&instances);
    }
    // DEMAND (wakes, last wake, idle) only where some instance is on demand.
    let demand = instances.iter().any(|i| i.gate.is_some());
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            // A port or an uptime is shown only while it is true: not for a stopped instance.
            let live = i.state == rack_api::InstanceState::Running;
            let ports: Vec<String> = if live { i.ports.iter().map(|p| p.endpoint()).collect() } else { Vec::new() };
            let mut row = vec![
                i.id.clone(),
                i.deployment.clone(),
                i.image_name.clone(),
                if i.arch.is_empty() { "-".into() } else { i.arch.clone() },
                platform(&i.platform),
                i.host.clone(),
                // An on-demand instance runs its gate: its state says whether the appliance is up.
                i.gate.map_or(i.state.as_str(), |g| g.state.as_str()).into(),
                i.pid.map_or("-".into(), |p| p.to_string()),
                i.restarts.to_string(),
                i.exit_status.map_or("-".into(), |s| s.to_string()),
                if ports.is_empty() { "-".into() } else { ports.join(",") },
                i.started_ms.filter(|_| live).map_or("-".into(), ago),
                i.message.clone().unwrap_or_default(),
            ];
            if demand {
                row.insert(row.len() - 1, super::on_demand::demand_cell(i.gate.as_ref()));
            }
            row
        })
        .collect();
    let mut header = vec![
        "ID",
        "DEPLOYMENT",
        "IMAGE",
        "ARCH",
        "PLATFORM",
        "HOST",
        "STATE",
        "PID",
        "RESTARTS",
        "EXIT",
        "PORTS",
        "UP",
        "MESSAGE",
    ];
    if demand {
        header.insert(header.len() - 1, "DEMAND");
    }
    table(&header, &rows);
    Ok(())
}
