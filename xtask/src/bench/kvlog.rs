//! `cargo xtask bench kvlog`: the `kvlog` appliance's figures, per architecture.
//!
//! - **image**: the kernel and the signed image.
//! - **append latency**: `--appends` `POST /append` of a 100-byte value, one after another on
//!   one keep-alive connection; each from writing the request to reading the whole `201`, which
//!   the appliance sends only after the record is written and flushed (QEMU `fdatasync`s the
//!   volume file). Median, 90th percentile and maximum.
//! - **read latency**: as many `GET /log/N` on the same connection.
//! - **recovery**: a volume holding `--records` records (written on the host with the
//!   appliance's own log library, 100-byte values: one sector each) booted; the appliance's own
//!   figure for the scan ("recovered N records … in T us"), and QEMU start → `listening`.

use std::{
    fs::File,
    os::unix::fs::FileExt,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use images::Arch;
use kvlog::{Disk, DiskError, SECTOR_SIZE, Store};
use qemu::{Instance, Machine, free_local_port, kvm};

use super::report::percentile;
use crate::{deps, http_client::Client};

#[derive(Debug, Args)]
pub struct KvlogArgs {
    /// Timed appends (and reads) per architecture, after 5 untimed ones.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub appends: u32,
    /// Records on the volume whose recovery is timed.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..1_000_000))]
    pub records: u64,
    /// Only this architecture (default: both).
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<Arch>,
}

const GUEST_PORT: u16 = 8080;
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const VALUE: [u8; 100] = [b'v'; 100];

pub fn main(args: KvlogArgs) -> Result<ExitCode> {
    let arches: Vec<Arch> = args.arch.map_or(Arch::ALL.to_vec(), |a| vec![a]);
    println!(
        "kvlog bench: release `kvlog`, 64 MiB volume; {} appends of 100 bytes and {} reads on one keep-alive \
         connection; recovery of {} records",
        args.appends, args.appends, args.records
    );
    for arch in arches {
        deps::ensure_qemu(arch)?;
        if arch == Arch::X86_64
            && let Some(reason) = kvm::unavailable_reason()
        {
            println!("{arch}: skipped: {reason}");
            continue;
        }
        bench_arch(arch, &args).with_context(|| format!("benchmarking kvlog on {arch}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_arch(arch: Arch, args: &KvlogArgs) -> Result<()> {
    let built = qemu::appliance_image("kvlog", arch)?;
    let machine = qemu::appliance_machine("kvlog", arch)?;
    println!(
        "{arch}: image: kernel {} bytes ({:.1} KiB), signed image {} bytes ({:.1} KiB)",
        built.info.file_size,
        built.info.file_size as f64 / 1024.0,
        built.artifact_size,
        built.artifact_size as f64 / 1024.0
    );
    let dir = tempfile::tempdir()?;

    let volume = dir.path().join("latency.img");
    File::create(&volume)?.set_len(64 << 20)?;
    let (_vm, port, _) = boot(&machine, &volume)?;
    let mut client = Client::connect(port)?;
    let mut appends = Vec::new();
    for n in 0..args.appends + 5 {
        let start = Instant::now();
        let (status, body) = client.request("POST", &format!("/append?key=k{}", n % 10), &VALUE)?;
        let took = start.elapsed();
        ensure!(status == 201 && body == format!("{{\"seq\":{n}}}\n").as_bytes(), "append {n} answered {status}");
        if n >= 5 {
            appends.push(took);
        }
    }
    let mut reads = Vec::new();
    for n in 0..args.appends {
        let start = Instant::now();
        let (status, body) = client.request("GET", &format!("/log/{n}"), &[])?;
        reads.push(start.elapsed());
        ensure!(status == 200 && body == VALUE, "GET /log/{n} answered {status}");
    }
    report(arch, "append (write + flush, then 201)", &mut appends);
    report(arch, "read GET /log/N", &mut reads);
    drop(client);

    let volume = dir.path().join("recovery.img");
    fill(&volume, args.records)?;
    let (vm, _port, listening) = boot(&machine, &volume)?;
    let line = vm
        .console()
        .iter()
        .find(|line| line.text.contains("kvlog: volume"))
        .map(|line| line.text.clone())
        .context("no recovery line on the console")?;
    ensure!(line.contains(&format!("recovered {} records", args.records)), "unexpected recovery: {line}");
    let micros: u64 = line
        .split(" in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .context("no time in the recovery line")?;
    println!(
        "{arch}: recovery of {} records ({} KiB of log): {:.1} ms in the appliance; QEMU start → listening {:.1} ms",
        args.records,
        args.records * SECTOR_SIZE as u64 / 1024,
        micros as f64 / 1e3,
        listening.as_secs_f64() * 1e3
    );
    Ok(())
}

fn report(arch: Arch, what: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |p: f64| percentile(samples, p * 100.0);
    println!(
        "{arch}: {what}: median {:.2} ms, p90 {:.2} ms, max {:.2} ms over {}",
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        samples.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        samples.len()
    );
}

/// A 64 MiB volume file holding `records` records, written with the appliance's own library.
fn fill(path: &Path, records: u64) -> Result<()> {
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
    file.set_len(64 << 20)?;
    let mut store = Store::open(FileDisk(file), 0x0062_656e_6368).map_err(|e| anyhow::anyhow!("formatting: {e}"))?;
    for n in 0..records {
        store.append(&format!("k{}", n % 100), &VALUE).map_err(|e| anyhow::anyhow!("record {n}: {e:?}"))?;
    }
    Ok(())
}

/// A volume file as the log library's disk. Flushes are left to the end (the host page cache is
/// what the VM reads through anyway).
struct FileDisk(File);

impl Disk for FileDisk {
    fn capacity_sectors(&self) -> u64 {
        self.0.metadata().map_or(0, |m| m.len() / SECTOR_SIZE as u64)
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.0.read_exact_at(buf, sector * SECTOR_SIZE as u64).map_err(|_| DiskError)
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DiskError> {
        self.0.write_all_at(buf, sector * SECTOR_SIZE as u64).map_err(|_| DiskError)
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        Ok(())
    }
}

fn boot(machine: &Machine, volume: &Path) -> Result<(Instance, u16, Duration)> {
    for _ in 0..3 {
        let port = free_local_port()?;
        let mut vm = machine.clone().volume(volume).forward_tcp(port, GUEST_PORT).spawn()?;
        match vm.wait_for("kvlog: listening on", BOOT_TIMEOUT) {
            Ok(listened) => return Ok((vm, port, listened)),
            Err(qemu::WaitError::Exited { .. }) => continue,
            Err(e) => bail!("{e}; console: {:?}", vm.console()),
        }
    }
    bail!("QEMU could not forward a free port three times")
}
