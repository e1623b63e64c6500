//! `cargo xtask bench image`: how fast images verify, and how much two builds share.

use std::{fs, process::ExitCode, time::Instant};

use anyhow::{Context, Result};
use clap::Args;
use images::{
    Arch,
    artifact::{self, KERNEL_PART},
    build::{self, Profile},
    keys::{SigningKey, TrustedKeys},
    manifest,
};

use super::report::{Summary, us};

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Timed verifications of the 1 MiB image.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
}

const ONE_MIB: usize = 1 << 20;

pub fn main(args: ImageArgs) -> Result<ExitCode> {
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

/// Builds an appliance, then a copy of the workspace with one edit, and reports what the second
/// image shares with the first in identical chunks: the bytes a peer holding the first would not
/// need to fetch. Two cases: httpd with one HTML file of its site changed (data, which travels in
/// its own image part), and hello with one string of its code changed (for contrast).
fn sharing() -> Result<()> {
    let cases: [(&str, &str, &str, &str, &str); 2] = [
        (
            "httpd",
            "kernel-apps/httpd/site/index.html",
            "</body>",
            "<p>One more paragraph.</p>\n</body>",
            "one HTML file of its site edited",
        ),
        (
            "hello",
            "kernel-apps/hello/src/main.rs",
            "Hello from Mast on",
            "Greetings from a Mast appliance on",
            "one string in its code edited",
        ),
    ];
    let root = build::workspace_root();
    for (app, file, from, to, what) in cases {
        let scratch = tempfile::tempdir().context("temp dir")?;
        let variant = scratch.path().join("variant");
        build::copy_source_tree(&root, &variant)?;
        let path = variant.join(file);
        let source = fs::read_to_string(&path)?;
        let edited = source.replacen(from, to, 1);
        anyhow::ensure!(edited != source, "{file} no longer contains {from:?}: update the bench");
        fs::write(&path, edited)?;
        println!("chunk sharing: {app} vs {app} with {what} (release)");
        for arch in Arch::ALL {
            let a = build::build(&root, app, arch, Profile::Release)?;
            let b = build::build(&variant, app, arch, Profile::Release)?;
            let body_a = artifact::read_unverified(&fs::read(&a.artifact)?)?.2;
            let body_b = artifact::read_unverified(&fs::read(&b.artifact)?)?.2;
            let (shared, total) = (artifact::shared_bytes(&body_a, &body_b), artifact::stored_bytes(&body_b));
            println!(
                "  {arch:<8} {shared} of {total} bytes shared ({:.1}%), {} to move",
                100.0 * shared as f64 / total.max(1) as f64,
                total - shared
            );
        }
    }
    Ok(())
}
