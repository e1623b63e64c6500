//! `cargo xtask bench …`: figures, not pass/fail tests. One module per bench, each with its
//! arguments and its `main`; [`report`] holds what their reports share (summaries, percentiles,
//! units).

mod boot;
mod cache;
mod control_plane;
mod dashboard;
mod density;
mod failover;
mod http;
mod image;
mod kvlog;
mod placement;
mod replication;
mod report;
mod summon;
mod tender_boot;

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// hello per architecture: image size, start → first console line and → exit (QEMU, or the tender).
    Boot(boot::BootArgs),
    /// Image verification speed, and how many bytes two builds share in identical chunks.
    Image(image::ImageArgs),
    /// Placement speed and hosts used against the lower bound, per heuristic (release build).
    Placement(placement::PlacementArgs),
    /// httpd per architecture: start → first 200, requests/s and latency under load, idle CPU, image size.
    Http(http::HttpArgs),
    /// kvlog per architecture: append and read latency on a virtio-blk volume, recovery time, image size.
    Kvlog(kvlog::KvlogArgs),
    /// The cache appliance in front of nginx: hit throughput and latency (wrk), misses vs straight
    /// to the origin, memory at the store's limit, image size.
    Cache(cache::CacheArgs),
    /// N idle httpd under the tender, each on its own tap: memory (RSS, PSS, host), starts/s, idle CPU.
    Density(density::DensityArgs),
    /// httpd v1 then v2 (one HTML file changed) from rack A to rack B through S3: bytes moved,
    /// time until v2 boots on B; volume snapshots after appends; the background fetch's cap.
    /// Then failover: kvlog on rack a killed, rack b serving it (recovery time, lag, lost writes).
    Replication(replication::ReplicationArgs),
    /// Rack a (simulated instances, failover plan to rack b) under a flood of slow and idle
    /// connections on its API and peer ports: authenticated `ps` latency, the daemon's RSS and
    /// threads, takeovers and stopped instances, each against issue #12's targets.
    ControlPlane(control_plane::ControlPlaneArgs),
    /// The dashboard's first meaningful paint and a `/metrics` scrape with 2,000 simulated
    /// instances, against issue #15's targets.
    Dashboard(dashboard::DashboardArgs),
    /// On-demand httpd and kvlog under the tender (root): cold start p50/p99, warm-path overhead,
    /// N asleep services' memory and CPU, a burst of wakes, idle-timeout accuracy, energy.
    Summon(summon::SummonArgs),
}

/// Runs one bench.
pub fn main(command: BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Boot(args) => boot::main(args),
        BenchCommand::Image(args) => image::main(args),
        BenchCommand::Placement(args) => placement::main(args),
        BenchCommand::Http(args) => http::main(args),
        BenchCommand::Kvlog(args) => kvlog::main(args),
        BenchCommand::Cache(args) => cache::main(args),
        BenchCommand::Density(args) => density::main(args),
        BenchCommand::Replication(args) => replication::main(args),
        BenchCommand::ControlPlane(args) => control_plane::main(args),
        BenchCommand::Dashboard(args) => dashboard::main(args),
        BenchCommand::Summon(args) => summon::main(args),
    }
}
