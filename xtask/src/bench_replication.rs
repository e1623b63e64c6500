//! `cargo xtask bench replication`: builds httpd and a copy with one HTML file of its site changed,
//! then runs the replica crate's `replication_bench` example on the two images (it starts a real
//! S3 server, `moto_server`). The figures come from that example; this only prepares its input,
//! so xtask itself stays free of the S3 client's dependencies.

use std::{fs, process::Command, process::ExitCode};

use anyhow::{Context, Result};
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

pub fn main() -> Result<ExitCode> {
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
    let status = bench.status().context("running the replication bench")?;
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
