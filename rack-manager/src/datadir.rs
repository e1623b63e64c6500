//! The data directory of a manager or agent, and where each thing lives in it.
//!
//! ```text
//! <data-dir>/state.sqlite          the store (manager only)
//! <data-dir>/token                 the admin token (manager), generated at first start, mode 0600
//! <data-dir>/join-tokens           SHA-256 and expiry of unused join tokens (manager)
//! <data-dir>/credentials           an agent's per-agent credentials, from its join (agent)
//! <data-dir>/agent-identity/       an agent's TLS key and self-signed certificate (agent)
//! <data-dir>/launches              the runs this agent launched: the only ones it stops (agent)
//! <data-dir>/address               the URL the daemon listens on, written once it listens
//! <data-dir>/trusted-keys          public keys whose images are accepted, one per line
//! <data-dir>/images/<id>.mast      verified images, by image id
//! <data-dir>/kernels/              kernels unpacked from verified images, for QEMU to load
//! <data-dir>/instances/<id>/console.log   the instance's console, every run appended
//! <data-dir>/volumes/<deployment>/<instance>.img   an instance's volume (agents; images with
//!                                   `[[block]]`): created sparse at first launch, kept across
//!                                   restarts of the instance and of the daemon, deleted only when
//!                                   the instance is removed (`rm`)
//! ```

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::Context;
use images::keys::{PublicKey, TrustedKeys};

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Opens (creating it if needed) the data directory at `root`, for a daemon or agent.
    ///
    /// Everything in it is private to its owner: the process's umask becomes 077 (so the store,
    /// images, kernels, logs and volumes it creates are 0600, directories 0700), the directory
    /// itself is made 0700 if it was looser (with a note on stderr), and a store or images left
    /// readable by others by an older version are made 0600.
    pub fn open(root: &Path) -> anyhow::Result<DataDir> {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
        for dir in [root.to_owned(), root.join("images"), root.join("kernels"), root.join("instances")] {
            fs::create_dir_all(&dir).with_context(|| format!("creating the data directory {}", dir.display()))?;
        }
        let dir = DataDir { root: root.to_owned() };
        dir.tighten()?;
        Ok(dir)
    }

    fn tighten(&self) -> anyhow::Result<()> {
        let mode =
            fs::metadata(&self.root).with_context(|| format!("reading {}", self.root.display()))?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::info!(
                "the data directory {} had mode {:04o}; making it 0700 (it holds tokens and images)",
                self.root.display(),
                mode & 0o777
            );
            fs::set_permissions(&self.root, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("making {} private (chmod 700)", self.root.display()))?;
        }
        let db = self.state_db();
        let mut files = vec![db.with_extension("sqlite-wal"), db.with_extension("sqlite-shm"), db];
        files.extend(fs::read_dir(self.root.join("images")).into_iter().flatten().flatten().map(|e| e.path()));
        for file in files {
            if let Ok(meta) = fs::metadata(&file)
                && meta.is_file()
                && meta.permissions().mode() & 0o077 != 0
            {
                fs::set_permissions(&file, fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("making {} private (chmod 600)", file.display()))?;
            }
        }
        Ok(())
    }

    /// The data directory `root` as the CLI sees it: nothing is created.
    pub fn at(root: &Path) -> DataDir {
        DataDir { root: root.to_owned() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn state_db(&self) -> PathBuf {
        self.root.join("state.sqlite")
    }

    pub fn token_file(&self) -> PathBuf {
        self.root.join("token")
    }

    pub fn join_tokens_file(&self) -> PathBuf {
        self.root.join("join-tokens")
    }

    pub fn api_tokens_file(&self) -> PathBuf {
        self.root.join("api-tokens")
    }

    pub fn credentials_file(&self) -> PathBuf {
        self.root.join("credentials")
    }

    pub fn agent_identity_dir(&self) -> PathBuf {
        self.root.join("agent-identity")
    }

    pub fn launches_file(&self) -> PathBuf {
        self.root.join("launches")
    }

    pub fn address_file(&self) -> PathBuf {
        self.root.join("address")
    }

    pub fn trusted_keys_file(&self) -> PathBuf {
        self.root.join("trusted-keys")
    }

    pub fn image(&self, id: &str) -> PathBuf {
        self.root.join("images").join(format!("{id}.mast"))
    }

    pub fn kernels(&self) -> PathBuf {
        self.root.join("kernels")
    }

    pub fn instance_dir(&self, id: &str) -> PathBuf {
        self.root.join("instances").join(id)
    }

    /// The volume of `instance` of `deployment`. Its path depends on nothing that changes while
    /// the instance exists, so every run (and a replicator) finds the same file.
    pub fn volume(&self, deployment: &str, instance: &str) -> PathBuf {
        self.root.join("volumes").join(deployment).join(format!("{instance}.img"))
    }

    pub fn console_log(&self, id: &str) -> PathBuf {
        self.instance_dir(id).join("console.log")
    }

    /// Takes the data directory for this process: one daemon or agent per directory, or two
    /// supervisors would each start every instance. The lock is the OS's (`flock`), so it is
    /// released when the process dies, however it dies. Keep the returned file open.
    pub fn lock(&self) -> anyhow::Result<fs::File> {
        let path = self.root.join("lock");
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if file.try_lock().is_err() {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "another rack-manager (pid {}) is using the data directory {}: stop it, or give this one another --data-dir",
                holder.trim(),
                self.root.display()
            );
        }
        file.set_len(0)
            .and_then(|()| write!(file, "{}", std::process::id()))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(file)
    }

    /// The admin token, generated (32 random bytes, hex) on first use and kept readable only by
    /// its owner; an existing one that others may read is refused, with the `chmod` that fixes it.
    pub fn token(&self) -> anyhow::Result<String> {
        let path = self.token_file();
        if path.exists() {
            return crate::credentials::read_secret_file(&path)
                .with_context(|| format!("{} is the manager's admin token", path.display()));
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for the API token: {e}"))?;
        let token = hex::encode(bytes);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating the token file {}", path.display()))?;
        writeln!(file, "{token}").with_context(|| format!("writing {}", path.display()))?;
        Ok(token)
    }

    /// The keys in `trusted-keys`, after adding `extra` to the file (so a restart without the
    /// flags trusts the same keys).
    pub fn trusted_keys(&self, extra: &[PublicKey]) -> anyhow::Result<TrustedKeys> {
        let path = self.trusted_keys_file();
        let mut trusted = if path.exists() {
            TrustedKeys::load(&path).context("reading the trusted keys")?
        } else {
            TrustedKeys::default()
        };
        let new: Vec<&PublicKey> = extra.iter().filter(|k| !trusted.contains(k)).collect();
        if !new.is_empty() {
            let mut file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            for key in new {
                writeln!(file, "{key}").with_context(|| format!("writing {}", path.display()))?;
                trusted.add(*key);
            }
        }
        Ok(trusted)
    }

    /// Records the URL the daemon listens on, for the CLI to find.
    pub fn write_address(&self, url: &str) -> anyhow::Result<()> {
        let path = self.address_file();
        let aside = self.root.join(format!(".address.{}.tmp", std::process::id()));
        fs::write(&aside, format!("{url}\n"))
            .and_then(|()| fs::rename(&aside, &path))
            .with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_is_private_and_a_loose_one_is_tightened() {
        let parent = tempfile::tempdir().expect("temp dir");
        let root = parent.path().join("rack");
        fs::create_dir(&root).expect("created");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::write(root.join("state.sqlite"), b"").expect("writes");
        fs::set_permissions(root.join("state.sqlite"), fs::Permissions::from_mode(0o644)).expect("chmod");
        let dir = DataDir::open(&root).expect("opens");
        let mode = |p: &Path| fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&dir.state_db()), 0o600);
        assert_eq!(mode(&root.join("images")), 0o700);
        dir.write_address("http://x").expect("written");
        assert_eq!(mode(&dir.address_file()), 0o600, "files made later are private too");
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = DataDir::open(root.path()).expect("opens");
        dir.token().expect("generated");
        fs::set_permissions(dir.token_file(), fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = format!("{:#}", dir.token().expect_err("refused"));
        assert!(error.contains(&format!("chmod 600 {}", dir.token_file().display())), "{error}");
    }

    #[test]
    fn the_token_is_generated_once_and_private() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = DataDir::open(root.path()).expect("opens");
        let token = dir.token().expect("generated");
        assert_eq!(token.len(), 64);
        assert_eq!(dir.token().expect("read back"), token);
        let mode = fs::metadata(dir.token_file()).expect("exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn trusted_keys_given_once_are_remembered() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = DataDir::open(root.path()).expect("opens");
        let key = images::keys::SigningKey::from_seed([3; 32]).public();
        assert!(dir.trusted_keys(&[key]).expect("adds").contains(&key));
        assert!(dir.trusted_keys(&[]).expect("reads").contains(&key), "kept in the file");
        assert_eq!(dir.trusted_keys(&[key]).expect("again").keys().len(), 1, "not added twice");
    }

    #[test]
    fn one_process_per_data_directory() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = DataDir::open(root.path()).expect("opens");
        let held = dir.lock().expect("first");
        let error = dir.lock().expect_err("second");
        assert!(error.to_string().contains(&format!("pid {}", std::process::id())), "{error}");
        drop(held);
        dir.lock().expect("free again");
    }
}
