//! `cargo xtask bench image`: how fast images verify, and how much two builds share.

use std::{
    fs,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use images::{
    Arch,
    artifact::{self, KERNEL_PART},
    build::{self, Profile},
    keys::{SigningKey, TrustedKeys},
    manifest,
};

use crate::bench::{ImageArgs as BenchImageArgs, Summary};

const ONE_MIB: usize = 1 << 20;

pub fn main(args: BenchImageArgs) -> Result<ExitCode> {
    verification(args.runs)?;
    sharing()?;
    Ok(ExitCode::SUCCESS)
}

/// Verifies a 1 MiB image (incompressible, no repeated chunks) `runs` times.
fn verification(runs: u32) -> Result<()> {
    let manifest =
        manifest::parse("bench.toml", "name = \"bench\"\nversion = \"1\"\narches = [\"aarch64\"]\nmemory_mib = 16\n")?;
    let key = SigningKey::from_seed([7; 32]);
    let trusted = TrustedKeys::new([key.public()]);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let kernel: Vec<u8> = (0..ONE_MIB)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let image = artifact::build(Arch::Aarch64, &manifest, &[(KERNEL_PART, &kernel)], &key);
    let mut times = Vec::new();
    for _ in 0..=runs {
        let start = Instant::now();
        let verified = artifact::verify(&image, &trusted)?;
        times.push(start.elapsed());
        assert_eq!(verified.kernel().len(), ONE_MIB);
    }
    times.remove(0); // warm-up
    let s = Summary::of(&times).context("no runs")?;
    let chunks = artifact::read_unverified(&image)?.2.distinct_chunks().len();
    println!(
        "verify 1 MiB image ({} bytes, {chunks} chunks), {runs} runs: median {}, min {}, max {}",
        image.len(),
        us(s.median),
        us(s.min),
        us(s.max)
    );
    Ok(())
}

/// Builds hello, then hello with its greeting changed, and reports what the second shares with
/// the first: the bytes a peer holding the first would not need to fetch.
fn sharing() -> Result<()> {
    let root = build::workspace_root();
    let scratch = tempfile::tempdir().context("temp dir")?;
    let variant = scratch.path().join("variant");
    build::copy_source_tree(&root, &variant)?;
    let main = variant.join("kernel-apps/hello/src/main.rs");
    let source = fs::read_to_string(&main)?;
    let edited = source.replacen("Hello from Mast on", "Greetings from a Mast appliance on", 1);
    anyhow::ensure!(edited != source, "hello's greeting moved: update the bench");
    fs::write(&main, edited)?;
    println!("chunk sharing: hello vs hello with one greeting string changed (release)");
    for arch in Arch::ALL {
        let a = build::build(&root, "hello", arch, Profile::Release)?;
        let b = build::build(&variant, "hello", arch, Profile::Release)?;
        let body_a = artifact::read_unverified(&fs::read(&a.artifact)?)?.2;
        let body_b = artifact::read_unverified(&fs::read(&b.artifact)?)?.2;
        let (shared, total) = (artifact::shared_bytes(&body_a, &body_b), artifact::stored_bytes(&body_b));
        println!(
            "  {arch:<8} {shared} of {total} bytes shared ({:.1}%), {} to move",
            100.0 * shared as f64 / total.max(1) as f64,
            total - shared
        );
    }
    Ok(())
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}
