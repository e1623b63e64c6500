//! `cargo xtask bench replication`: builds httpd and a copy with one HTML file of its site changed,
//! then runs the replica crate's `replication_bench` example on the two images (it starts a real
//! S3 server, `moto_server`). The figures come from that example; this only prepares its input,
//! so xtask itself stays free of the S3 client's dependencies. Then the failover figures
//! ([`super::failover`]).

use std::{fs, process::Command, process::ExitCode};

use anyhow::{Context, Result};
use clap::Args;
use images::{
    Arch,
    build::{self, Profile},
    keys::KeyConfig,
};

use crate::deps;

/// The edit: one more paragraph in the site's index page.
const FILE: &str = "kernel-apps/httpd/site/index.html";
const FROM: &str = "</body>";
const TO: &str = "<p>One more paragraph.</p>\n</body>";

#[derive(Debug, Args)]
pub struct ReplicationArgs {
    /// Failover runs (kvlog on rack a killed, rack b takes over); the median, min and max are reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub failover_runs: u32,
    /// Leave out the failover part.
    #[arg(long, conflicts_with = "skip_update")]
    pub skip_failover: bool,
    /// Leave out the image-update part (httpd v1 then v2 through S3).
    #[arg(long)]
    pub skip_update: bool,
}

pub fn main(args: ReplicationArgs) -> Result<ExitCode> {
    let updated = args.skip_update || update()?;
    let failover_held = args.skip_failover || super::failover::main(args.failover_runs)?;
    Ok(if updated && failover_held { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The image-update part; false when the example failed.
fn update() -> Result<bool> {
    deps::ensure_moto()?;
    let root = build::workspace_root();
    let scratch = tempfile::tempdir().context("temp dir")?;
    let variant = scratch.path().join("variant");
    build::copy_source_tree(&root, &variant)?;
    let path = variant.join(FILE);
    let source = fs::read_to_string(&path)?;
    let edited = source.replacen(FROM, TO, 1);
    anyhow::ensure!(edited != source, "{FILE} no longer contains {FROM:?}: update the bench");
    fs::write(&path, edited)?;
    // Both versions signed by the workspace's key, as a real release would be.
    let keys = KeyConfig::for_workspace(&root);
    keys.signing_key()?;
    let variant_keys = KeyConfig::for_workspace(&variant);
    if let Some(dir) = variant_keys.signing_key.parent() {
        fs::create_dir_all(dir)?;
    }
    if !variant_keys.signing_key.exists() {
        fs::copy(&keys.signing_key, &variant_keys.signing_key)?;
    }
    let arch = Arch::Aarch64;
    let v1 = build::build(&root, "httpd", arch, Profile::Release)?.artifact;
    let v2 = build::build(&variant, "httpd", arch, Profile::Release)?.artifact;
    let trusted = keys.trusted()?;
    let key = trusted.keys().first().context("the workspace has no signing key: build an image first")?;

    let mut bench = Command::new("cargo");
    bench
        .args(["run", "--quiet", "--release", "-p", "replica", "--example", "replication_bench", "--"])
        .arg(&v1)
        .arg(&v2)
        .arg(key.to_string());
    eprintln!("$ {}", images::command::display(&bench));
    Ok(bench.status().context("running the replication bench")?.success())
}
