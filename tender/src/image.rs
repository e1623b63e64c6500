//! What to boot: a signed `.mast` image, verified exactly as `cargo xtask run` verifies it, or (for
//! development) a bare kernel ELF.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use images::{
    Arch, artifact,
    build::workspace_root,
    keys::{KeyConfig, PublicKey, TrustedKeys},
};

/// A bootable guest: its kernel, data part, default arguments and memory.
#[derive(Debug)]
pub struct Bootable {
    pub name: String,
    pub kernel: Vec<u8>,
    pub data: Option<Vec<u8>>,
    pub args: Vec<String>,
    pub memory_mib: u32,
}

/// Guest RAM for a bare `--kernel`, which has no manifest to ask for any.
pub const KERNEL_DEFAULT_MIB: u32 = 16;

/// The keys to trust: each `--key` (a public key in hex, or a trusted-keys file), else the
/// workspace's ([`KeyConfig`]: `$MAST_TRUSTED_KEYS` and the signing key's own public key).
pub fn trusted_keys(keys: &[String]) -> Result<TrustedKeys> {
    if keys.is_empty() {
        return Ok(KeyConfig::for_workspace(&workspace_root()).trusted()?);
    }
    let mut trusted = TrustedKeys::default();
    for key in keys {
        match key.parse::<PublicKey>() {
            Ok(public) => trusted.add(public),
            Err(_) if Path::new(key).is_file() => {
                for public in TrustedKeys::load(key.as_ref())?.keys() {
                    trusted.add(*public);
                }
            }
            Err(e) => bail!("--key {key}: {e}, and no such file exists"),
        }
    }
    Ok(trusted)
}

/// Verifies and opens the image at `path`.
pub fn open_image(path: &Path, trusted: &TrustedKeys) -> Result<Bootable> {
    // The error names the file and what is wrong with it (its Display already includes its cause).
    let verified = artifact::verify_file(path, trusted).map_err(|e| anyhow!("{e}"))?;
    let host = Arch::host().context("this host's architecture has no appliances")?;
    if verified.arch() != host {
        bail!("{} is an image for {}; this tender runs {host} guests", path.display(), verified.arch());
    }
    let manifest = verified.manifest();
    Ok(Bootable {
        name: manifest.name.clone(),
        kernel: verified.kernel().to_vec(),
        data: verified.data().map(<[u8]>::to_vec),
        args: manifest.args.clone(),
        memory_mib: manifest.memory_mib,
    })
}

/// Reads a bare kernel ELF (no signature, no manifest: development and tests only).
pub fn open_kernel(path: &PathBuf) -> Result<Bootable> {
    let kernel = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Bootable {
        name: path.file_stem().map_or("kernel".into(), |s| s.to_string_lossy().into_owned()),
        kernel,
        data: None,
        args: Vec::new(),
        memory_mib: KERNEL_DEFAULT_MIB,
    })
}
