//! The keys whose images a rack (or an agent) accepts, shared by everything that verifies, and
//! changed live: `trust add|rm` rewrites `<data-dir>/trusted-keys` and the next push, launch or
//! replicated meta is checked against the new set, without a restart.
//!
//! Also: finding the workspace's signing key when `serve` is started from a Mast checkout, so a
//! developer's first `image push` of a `cargo xtask image build` output is accepted.

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use anyhow::Context;
use images::keys::{KeyConfig, PublicKey, TrustedKeys};

use crate::datadir::DataDir;

/// The trusted keys of one data directory: the file is the record (the tender launcher reads it
/// for each launch), this is its copy in memory. Clones share the set.
#[derive(Debug, Clone)]
pub struct Trust {
    file: PathBuf,
    keys: Arc<RwLock<TrustedKeys>>,
}

impl Trust {
    /// The keys in `<data-dir>/trusted-keys`, after adding `extra` (`--trust`) to the file.
    pub fn open(dir: &DataDir, extra: &[PublicKey]) -> anyhow::Result<Trust> {
        let keys = dir.trusted_keys(extra)?;
        Ok(Trust { file: dir.trusted_keys_file(), keys: Arc::new(RwLock::new(keys)) })
    }

    /// The keys trusted now.
    pub fn current(&self) -> TrustedKeys {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Trusts `key` from now on; false if it already was.
    pub fn add(&self, key: PublicKey) -> anyhow::Result<bool> {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if keys.contains(&key) {
            return Ok(false);
        }
        let mut next = keys.clone();
        next.add(key);
        self.write(&next)?;
        *keys = next;
        Ok(true)
    }

    /// Stops trusting `key`; false if it was not trusted. Images already pushed stay, but are
    /// verified again before each launch, so their instances no longer start.
    pub fn remove(&self, key: &PublicKey) -> anyhow::Result<bool> {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if !keys.contains(key) {
            return Ok(false);
        }
        let next = TrustedKeys::new(keys.keys().iter().copied().filter(|k| k != key));
        self.write(&next)?;
        *keys = next;
        Ok(true)
    }

    /// Replaces the file with `keys`, written aside and renamed so a reader never sees half.
    fn write(&self, keys: &TrustedKeys) -> anyhow::Result<()> {
        let aside = self.file.with_extension(format!("{}.tmp", std::process::id()));
        let mut text = String::from("# public keys whose images this rack accepts (rack-manager trust add|rm)\n");
        for key in keys.keys() {
            text.push_str(&format!("{key}\n"));
        }
        let mut file = std::fs::File::create(&aside).with_context(|| format!("creating {}", aside.display()))?;
        file.write_all(text.as_bytes()).with_context(|| format!("writing {}", aside.display()))?;
        file.sync_all().with_context(|| format!("writing {}", aside.display()))?;
        std::fs::rename(&aside, &self.file).with_context(|| format!("replacing {}", self.file.display()))
    }
}

/// The Mast checkout `serve` was started from, if any: the first directory above the current
/// directory, then above the binary (`target/debug/rack-manager`), that holds the workspace's
/// `Cargo.toml` with `images/` and `rack-manager/` beside it.
pub fn checkout_root() -> Option<PathBuf> {
    let from_cwd = std::env::current_dir().ok();
    let from_exe = std::env::current_exe().ok();
    [from_cwd, from_exe].into_iter().flatten().find_map(|start| {
        start
            .ancestors()
            .find(|dir| {
                dir.join("Cargo.toml").is_file() && dir.join("images").is_dir() && dir.join("rack-manager").is_dir()
            })
            .map(Path::to_path_buf)
    })
}

/// The public key `cargo xtask image build` signs with in the checkout at `root`
/// (`$MAST_SIGNING_KEY`, else `.mast/signing.key`), creating the development key there if the
/// workspace has none yet (as the first build would), and the file it is in.
pub fn workspace_key(root: &Path) -> anyhow::Result<(PublicKey, PathBuf)> {
    let config = KeyConfig::for_workspace(root);
    let (key, _generated) = config
        .signing_key()
        .with_context(|| format!("reading the workspace's signing key {}", config.signing_key.display()))?;
    Ok((key.public(), config.signing_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_added_and_removed_are_kept_in_the_file() {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let dir = DataDir::open(tmp.path()).expect("opens");
        let trust = Trust::open(&dir, &[]).expect("opens");
        let key = images::keys::SigningKey::from_seed([7; 32]).public();
        assert!(trust.add(key).expect("adds"));
        assert!(!trust.add(key).expect("again"), "already trusted");
        assert!(Trust::open(&dir, &[]).expect("reopens").current().contains(&key), "kept in the file");
        assert!(trust.remove(&key).expect("removes"));
        assert!(!trust.current().contains(&key));
        assert!(!Trust::open(&dir, &[]).expect("reopens").current().contains(&key), "gone from the file");
        assert!(!trust.remove(&key).expect("again"), "no longer trusted");
    }
}
