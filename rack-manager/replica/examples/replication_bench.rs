//! The replication bench (run by `cargo xtask bench replication`, which builds its input):
//! `replication_bench V1.mast V2.mast TRUSTED_KEY`.
//!
//! Starts a real S3 server (`moto_server`) on a loopback port; rack A pushes v1 then v2 to it,
//! rack B pulls v1, then v2, and the bench prints what v2 moved (as a share of the image) and how
//! long B took to make v2 bootable. Then a volume: bytes moved by a snapshot after appends and
//! after scattered in-place writes, and the lag. Then the background fetch against its cap.

use std::{
    fs,
    io::{Seek, SeekFrom, Write},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use images::{
    artifact,
    keys::{PublicKey, TrustedKeys},
};
use replica::{ChunkStore, Replicator, ReplicatorConfig, S3Remote, VOLUME_CHUNK, moto::MotoServer};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn rack(dir: &std::path::Path, name: &str, trusted: &TrustedKeys, rate: Option<u64>) -> Result<Arc<Replicator>> {
    let store = Arc::new(ChunkStore::open(&dir.join(name))?);
    Ok(Arc::new(Replicator::new(store, trusted.clone(), ReplicatorConfig { trickle_rate: rate, attempts: 3 })))
}

fn kib(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [v1_path, v2_path, key] = args.as_slice() else {
        return Err(
            "usage: replication_bench V1.mast V2.mast TRUSTED_KEY (cargo xtask bench replication runs it)".into()
        );
    };
    let trusted = TrustedKeys::new([key.parse::<PublicKey>()?]);
    let (v1, v2) = (fs::read(PathBuf::from(v1_path))?, fs::read(PathBuf::from(v2_path))?);
    let server = MotoServer::start()?;
    server.create_bucket("mast")?;
    let cloud = S3Remote::new(&server.config("mast", "a"))?;
    let scratch = tempfile::tempdir()?;

    // Rack A: both versions pushed to the bucket.
    let a = rack(scratch.path(), "a", &trusted, None)?;
    let id1 = a.import_image(&v1)?.id;
    let id2 = a.import_image(&v2)?.id;
    let up1 = a.push_image(&id1, &cloud)?;
    let up2 = a.push_image(&id2, &cloud)?;

    // Rack B: v1, then v2.
    let b = rack(scratch.path(), "b", &trusted, None)?;
    b.add_remote(Arc::new(cloud.for_rack("a")));
    b.pull_metas();
    b.ensure_local(&id1)?;
    let before = b.stats().bytes_fetched;
    let started = Instant::now();
    b.pull_metas();
    let meta_len = b.store().image_meta(&id2)?.len() as u64;
    b.ensure_local(&id2)?;
    let bytes = b.assemble(&id2)?;
    artifact::verify(&bytes, &trusted)?;
    let bootable = started.elapsed();
    let moved = b.stats().bytes_fetched - before + meta_len;
    let share = 100.0 * moved as f64 / v2.len() as f64;
    println!(
        "replication bench: httpd (aarch64, release) v1 -> v2 with one HTML file changed, rack A -> S3 (moto) -> rack B"
    );
    println!("  image v2: {} ({} bytes)", kib(v2.len() as u64), v2.len());
    println!("  A pushes v1: {} of chunks; then v2: {} ({} chunks)", kib(up1.bytes), kib(up2.bytes), up2.chunks);
    println!(
        "  B fetches v2 after v1: {} ({} bytes: meta {} + chunks {}), {share:.1}% of the image (target <= 25%)",
        kib(moved),
        moved,
        meta_len,
        moved - meta_len
    );
    println!("  time until v2 is bootable on B (meta, missing chunks, assemble, verify): {}", ms(bootable));
    if share > 25.0 {
        println!("  TARGET MISSED: v2 moved more than 25% of the image");
    }

    volume(&a, &cloud, scratch.path())?;
    trickle(&cloud, scratch.path(), &trusted, &id2, &v2)?;
    Ok(())
}

/// A 16 MiB log-structured volume: one snapshot, then 1000 appended records, then 100 records
/// rewritten in place at random places.
fn volume(a: &Replicator, cloud: &S3Remote, dir: &std::path::Path) -> Result<()> {
    a.add_remote(Arc::new(cloud.for_rack("a")));
    let path = dir.join("kv.img");
    let mut file = fs::File::create(&path)?;
    let record = |n: u64| format!("{n:010} set key-{n} value-{:016x}\n", n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut n = 0u64;
    while file.metadata()?.len() < 16 << 20 {
        file.write_all(record(n).as_bytes())?;
        n += 1;
    }
    file.flush()?;
    let size = file.metadata()?.len();
    let started = Instant::now();
    let first = a.snapshot_volume("kv", &path, replica::now_ms())?;
    let first_time = started.elapsed();
    println!("volume: {} in {}-KiB chunks ({} chunks)", kib(size), VOLUME_CHUNK / 1024, first.snapshot.chunks.len());
    println!("  first snapshot: {} pushed in {}", kib(first.sent.bytes), ms(first_time));

    let appended_at = Instant::now();
    for _ in 0..1000 {
        file.write_all(record(n).as_bytes())?;
        n += 1;
    }
    file.flush()?;
    let behind = a.volume_bytes_behind("kv", &path)?;
    let second = a.snapshot_volume("kv", &path, replica::now_ms())?;
    let lag = appended_at.elapsed();
    println!(
        "  after 1000 appends ({} of records): {} chunk(s) changed, {} pushed ({} behind before), snapshot in {}",
        kib(1000 * record(0).len() as u64),
        second.changed_chunks,
        kib(second.sent.bytes),
        kib(behind),
        ms(lag)
    );

    let mut state = 0x2545_f491_4f6c_dd1du64;
    let len = file.metadata()?.len();
    for _ in 0..100 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        file.seek(SeekFrom::Start(state % (len - 64)))?;
        file.write_all(b"rewritten")?;
    }
    file.flush()?;
    let started = Instant::now();
    let third = a.snapshot_volume("kv", &path, replica::now_ms())?;
    println!(
        "  after 100 scattered 9-byte writes: {} chunk(s) changed, {} pushed in {}",
        third.changed_chunks,
        kib(third.sent.bytes),
        ms(started.elapsed())
    );
    println!("  lag bound: the snapshot period plus one snapshot's time (figures above)");
    Ok(())
}

/// Rack C trickles v2 in the background under a 32 KiB/s cap, in real time.
fn trickle(
    cloud: &S3Remote,
    dir: &std::path::Path,
    trusted: &TrustedKeys,
    id: &artifact::ImageId,
    v2: &[u8],
) -> Result<()> {
    let cap = 32u64 << 10;
    let c = rack(dir, "c", trusted, Some(cap))?;
    c.add_remote(Arc::new(cloud.for_rack("a")));
    c.pull_metas();
    let started = Instant::now();
    while !c.image_state(id)?.is_complete() {
        c.trickle_tick(Instant::now())?;
        std::thread::sleep(Duration::from_millis(20));
        if started.elapsed() > Duration::from_secs(120) {
            return Err("the trickle did not finish within 2 minutes".into());
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let fetched = c.stats().bytes_fetched;
    println!(
        "background fetch of v2 on an empty rack: cap {}/s (burst: one second's worth): {} in {elapsed:.2} s = {}/s; beyond the burst {}/s",
        kib(cap),
        kib(fetched),
        kib((fetched as f64 / elapsed) as u64),
        kib((fetched.saturating_sub(cap) as f64 / elapsed) as u64),
    );
    assert_eq!(c.assemble(id)?, v2, "trickled image differs");
    Ok(())
}
