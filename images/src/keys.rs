//! Ed25519 keys that sign images, and the set of public keys a verifier trusts.
//!
//! A signing key file holds one line, `mast-signing-key-v1 <64 hex digits>` (the 32-byte secret
//! seed), and is created with mode 0600. A public key is written as 64 hex digits. A trusted-keys
//! file lists public keys one per line; `#` starts a comment.

use std::{
    fmt, fs,
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
    str::FromStr,
};

use ed25519_dalek::{Signature, Signer};

const SECRET_PREFIX: &str = "mast-signing-key-v1 ";

/// A secret key that signs images.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        write!(f, "SigningKey(public {})", self.public())
    }
}

/// A public key that verifies images.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0:?} is not a public key: expected 64 hex digits")]
    BadPublicKey(String),
    #[error("{path} is not a Mast signing key file (expected one line: `{SECRET_PREFIX}<64 hex digits>`)")]
    BadSecretFile { path: String },
    #[error("{path}: line {line}: {text:?} is not a public key (64 hex digits)")]
    BadTrustedLine { path: String, line: usize, text: String },
    #[error("{action} {path}: {source}")]
    Io { action: &'static str, path: String, source: io::Error },
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<PublicKey, KeyError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| KeyError::BadPublicKey(s.to_owned()))?;
        // Reject encodings that are not points on the curve now, rather than at first verification.
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::BadPublicKey(s.to_owned()))?;
        Ok(PublicKey(bytes))
    }
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> Result<SigningKey, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// A key from a fixed seed, for tests and reproducible fixtures.
    pub fn from_seed(seed: [u8; 32]) -> SigningKey {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// Reads a signing key file.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let (shown, text) = read_text(path)?;
        let hex_seed =
            text.trim().strip_prefix(SECRET_PREFIX).ok_or(KeyError::BadSecretFile { path: shown.clone() })?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(hex_seed.trim(), &mut seed).map_err(|_| KeyError::BadSecretFile { path: shown })?;
        Ok(SigningKey::from_seed(seed))
    }

    /// Writes the key to a new file readable only by its owner; refuses to overwrite one.
    ///
    /// The file appears complete or not at all (written aside, then linked into place), so a
    /// concurrent reader never sees half a key and two concurrent writers cannot both win.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let shown = path.display().to_string();
        let io = |action, source| KeyError::Io { action, path: shown.clone(), source };
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|source| KeyError::Io {
            action: "creating",
            path: dir.display().to_string(),
            source,
        })?;
        // Unique per call, not just per process: two threads may generate the first key at once.
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let call = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("key");
        let aside = dir.join(format!(".{name}.{}.{call}.tmp", std::process::id()));
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&aside)
            .and_then(|mut file| writeln!(file, "{SECRET_PREFIX}{}", hex::encode(self.0.to_bytes())));
        let linked = written.and_then(|()| fs::hard_link(&aside, path));
        let _ = fs::remove_file(&aside);
        linked.map_err(|source| io("creating", source))
    }
}

/// The public keys whose signatures a verifier accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys(Vec<PublicKey>);

impl TrustedKeys {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> TrustedKeys {
        let mut trusted = TrustedKeys::default();
        for key in keys {
            trusted.add(key);
        }
        trusted
    }

    pub fn add(&mut self, key: PublicKey) {
        if !self.0.contains(&key) {
            self.0.push(key);
        }
    }

    pub fn contains(&self, key: &PublicKey) -> bool {
        self.0.contains(key)
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.0
    }

    /// Reads a trusted-keys file: one hex public key per line, `#` comments, blank lines ignored.
    pub fn load(path: &Path) -> Result<TrustedKeys, KeyError> {
        let (shown, text) = read_text(path)?;
        let mut trusted = TrustedKeys::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let key = line.parse().map_err(|_| KeyError::BadTrustedLine {
                path: shown.clone(),
                line: i + 1,
                text: line.into(),
            })?;
            trusted.add(key);
        }
        Ok(trusted)
    }

    /// Whether `signature` over `message` is valid for `key` (which must also be trusted).
    pub(crate) fn verify(&self, key: &PublicKey, message: &[u8], signature: &[u8; 64]) -> bool {
        let Ok(verifying) = ed25519_dalek::VerifyingKey::from_bytes(&key.0) else { return false };
        self.contains(key) && verifying.verify_strict(message, &Signature::from_bytes(signature)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("keys/signing.key");
        let key = SigningKey::generate().expect("randomness");
        key.save(&path).expect("saved");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&path).expect("exists").permissions().mode() & 0o777, 0o600);
        assert_eq!(SigningKey::load(&path).expect("loads").public(), key.public());
        assert!(matches!(key.save(&path), Err(KeyError::Io { .. })), "an existing key is never overwritten");
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let key = SigningKey::from_seed([7; 32]);
        assert!(!format!("{key:?}").contains(&hex::encode([7u8; 32])));
    }

    #[test]
    fn public_keys_parse_from_hex_and_bad_ones_are_refused() {
        let public = SigningKey::from_seed([1; 32]).public();
        assert_eq!(public.to_string().parse::<PublicKey>().expect("round trip"), public);
        assert!("abc".parse::<PublicKey>().is_err());
        assert!("zz".repeat(32).parse::<PublicKey>().is_err());
    }

    #[test]
    fn trusted_key_files_allow_comments_and_name_bad_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("trusted");
        let a = SigningKey::from_seed([1; 32]).public();
        fs::write(&path, format!("# rack A\n{a}  # build server\n\n")).expect("write");
        assert_eq!(TrustedKeys::load(&path).expect("valid").keys(), [a]);
        fs::write(&path, format!("{a}\nnot-a-key\n")).expect("write");
        let e = TrustedKeys::load(&path).expect_err("bad line");
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn a_workspace_without_keys_gets_a_development_key_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = KeyConfig {
            signing_key: dir.path().join(".mast/signing.key"),
            trusted_keys: dir.path().join(".mast/trusted-keys"),
        };
        assert!(config.trusted().expect("no files yet").keys().is_empty());
        let (first, warning) = config.signing_key().expect("generated");
        assert!(warning.is_some_and(|w| w.contains("DEVELOPMENT key")));
        let (second, warning) = config.signing_key().expect("loaded");
        assert_eq!((first.public(), warning), (second.public(), None));
        assert_eq!(config.trusted().expect("trusts its own key").keys(), [first.public()]);
    }

    #[test]
    fn concurrent_first_use_agrees_on_one_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config =
            KeyConfig { signing_key: dir.path().join(".mast/signing.key"), trusted_keys: dir.path().join("t") };
        let publics: Vec<PublicKey> = std::thread::scope(|scope| {
            let workers: Vec<_> =
                (0..8).map(|_| scope.spawn(|| config.signing_key().map(|(key, _)| key.public()))).collect();
            workers.into_iter().map(|w| w.join().expect("no panic").expect("every caller gets the key")).collect()
        });
        assert!(publics.windows(2).all(|pair| pair[0] == pair[1]), "callers saw different keys: {publics:?}");
        let leftovers = fs::read_dir(dir.path().join(".mast")).expect("dir").count();
        assert_eq!(leftovers, 1, "only the key file remains, no temporary files");
    }

    #[test]
    fn a_malformed_secret_file_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("k");
        fs::write(&path, "hello").expect("write");
        assert!(matches!(SigningKey::load(&path), Err(KeyError::BadSecretFile { .. })));
    }
}

/// A key file's path (for messages) and contents.
fn read_text(path: &Path) -> Result<(String, String), KeyError> {
    let shown = path.display().to_string();
    match fs::read_to_string(path) {
        Ok(text) => Ok((shown, text)),
        Err(source) => Err(KeyError::Io { action: "reading", path: shown, source }),
    }
}

/// Where a workspace keeps its keys, and how a build finds them.
///
/// - signing key: `$MAST_SIGNING_KEY`, else `<root>/.mast/signing.key`. When neither exists, a
///   development key is generated there on first use, and the build says so loudly.
/// - trusted keys: the signing key's own public key, plus every key in `$MAST_TRUSTED_KEYS`, else
///   `<root>/.mast/trusted-keys`, if that file exists.
#[derive(Debug, Clone)]
pub struct KeyConfig {
    pub signing_key: std::path::PathBuf,
    pub trusted_keys: std::path::PathBuf,
}

impl KeyConfig {
    pub fn for_workspace(root: &Path) -> KeyConfig {
        let from_env = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
        KeyConfig {
            signing_key: from_env("MAST_SIGNING_KEY").unwrap_or_else(|| root.join(".mast/signing.key")),
            trusted_keys: from_env("MAST_TRUSTED_KEYS").unwrap_or_else(|| root.join(".mast/trusted-keys")),
        }
    }

    /// The signing key, generating a development key if none exists. The second value is a
    /// warning to show the user when a key was generated.
    pub fn signing_key(&self) -> Result<(SigningKey, Option<String>), KeyError> {
        if self.signing_key.exists() {
            return Ok((SigningKey::load(&self.signing_key)?, None));
        }
        let key = SigningKey::generate()?;
        match key.save(&self.signing_key) {
            Ok(()) => {
                let warning = format!(
                    "warning: no signing key was configured, so a DEVELOPMENT key was generated at {}\n\
                     warning: images signed with it are trusted only where its public key {} is trusted;\n\
                     warning: use `cargo xtask keygen` and MAST_SIGNING_KEY for keys you deploy with",
                    self.signing_key.display(),
                    key.public()
                );
                Ok((key, Some(warning)))
            }
            // Another build generated it first: use that one.
            Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
                Ok((SigningKey::load(&self.signing_key)?, None))
            }
            Err(e) => Err(e),
        }
    }

    /// The keys this workspace trusts.
    pub fn trusted(&self) -> Result<TrustedKeys, KeyError> {
        let mut trusted =
            if self.trusted_keys.exists() { TrustedKeys::load(&self.trusted_keys)? } else { TrustedKeys::default() };
        if self.signing_key.exists() {
            trusted.add(SigningKey::load(&self.signing_key)?.public());
        }
        Ok(trusted)
    }
}
