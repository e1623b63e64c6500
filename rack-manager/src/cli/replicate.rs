//! `rack-manager replicate status`: how far images and volumes are replicated.

use clap::Subcommand;
use rack_api::replication::ReplicationStatus;

use super::output::{self, Format};
use crate::client::Client;

#[derive(Debug, Subcommand)]
pub enum ReplicateCommand {
    /// Per image and volume: bytes here, bytes behind, and the lag.
    Status,
}

pub fn run(client: &Client, format: Format, command: &ReplicateCommand) -> anyhow::Result<()> {
    match command {
        ReplicateCommand::Status => status(format, &client.get::<ReplicationStatus>("/replication")?),
    }
}

/// Bytes in the largest unit that keeps the number readable.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn duration(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..120_000 => format!("{:.1} s", ms as f64 / 1000.0),
        120_000..7_200_000 => format!("{} min", ms / 60_000),
        _ => format!("{} h", ms / 3_600_000),
    }
}

fn status(format: Format, status: &ReplicationStatus) -> anyhow::Result<()> {
    if format == Format::Json {
        return output::print_json(status);
    }
    let remotes = if status.remotes.is_empty() { "none".to_owned() } else { status.remotes.join(", ") };
    let cap = status.trickle_rate.map_or_else(|| "no cap".to_owned(), |r| format!("{}/s", bytes(r)));
    println!("remotes: {remotes}; background fetch: {cap}");
    println!();
    let rows: Vec<Vec<String>> = status
        .images
        .iter()
        .map(|i| {
            vec![
                format!("{} {}", i.name, i.version),
                rack_api::short_id(&i.id).to_owned(),
                bytes(i.local_bytes),
                bytes(i.behind_bytes),
                if i.behind_bytes == 0 { "-".into() } else { duration(i.lag_ms) },
            ]
        })
        .collect();
    output::table(&["IMAGE", "ID", "LOCAL", "BEHIND", "LAG"], &rows);
    if !status.volumes.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = status
            .volumes
            .iter()
            .map(|v| {
                vec![
                    v.name.clone(),
                    bytes(v.local_bytes),
                    bytes(v.behind_bytes),
                    v.snapshot_seq.map_or_else(|| "-".into(), |s| format!("#{s}")),
                    v.lag_ms.map_or_else(|| "never".into(), duration),
                    format!("< {}", duration(v.snapshot_every_ms)),
                    v.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        output::table(&["VOLUME", "LOCAL", "BEHIND", "SNAPSHOT", "LAG", "BOUND", "ERROR"], &rows);
    }
    let t = &status.totals;
    println!();
    println!(
        "fetched {} chunks ({}), pushed {} chunks ({}); {} corrupt chunk(s) refetched, {} untrusted image(s) refused",
        t.chunks_fetched,
        bytes(t.bytes_fetched),
        t.chunks_pushed,
        bytes(t.bytes_pushed),
        t.corrupt_chunks,
        t.refused_images
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(duration(250), "250 ms");
        assert_eq!(duration(4_500), "4.5 s");
        assert_eq!(duration(600_000), "10 min");
    }
}
