//! A rack's identity: an ECDSA P-256 key and a self-signed certificate, generated at first start
//! and kept in `<data-dir>/peer/`. Peers pin the certificate by its SHA-256 fingerprint, so no
//! certificate authority is involved and a rack's name in the certificate is informational.

use std::{
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject};
use sha2::{Digest, Sha256};

/// A certificate's SHA-256 fingerprint.
pub type Fingerprint = [u8; 32];

/// The fingerprint of a DER certificate.
pub fn fingerprint(der: &[u8]) -> Fingerprint {
    Sha256::digest(der).into()
}

/// Parses 64 hex digits (colons allowed, as `openssl x509 -fingerprint` prints them).
pub fn parse_fingerprint(text: &str) -> Result<Fingerprint, String> {
    let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&digits).map_err(|e| format!("{text:?} is not a SHA-256 fingerprint: {e}"))?;
    bytes.try_into().map_err(|_| format!("{text:?} is not a SHA-256 fingerprint: it needs 64 hex digits"))
}

/// This rack's name, key and certificate.
#[derive(Debug)]
pub struct Identity {
    pub name: String,
    pub cert: CertificateDer<'static>,
    key_pkcs8: Vec<u8>,
}

impl Identity {
    pub fn fingerprint(&self) -> Fingerprint {
        fingerprint(&self.cert)
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }

    /// Reads the identity in `dir`, creating it (named `name`, or `rack` when none is given) if
    /// there is none. A name given for an existing identity must match it.
    pub fn load_or_create(dir: &Path, name: Option<&str>) -> anyhow::Result<Identity> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (name_file, key_file, cert_file) = paths(dir);
        if cert_file.exists() {
            let identity = Identity::load(dir)?;
            if let Some(wanted) = name
                && wanted != identity.name
            {
                anyhow::bail!(
                    "this data directory belongs to rack {:?}, not {wanted:?}: drop --rack-name, or use another --data-dir",
                    identity.name
                );
            }
            return Ok(identity);
        }
        let name = name.unwrap_or("rack");
        validate_name(name).map_err(anyhow::Error::msg)?;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("generating the rack key")?;
        let mut params = rcgen::CertificateParams::new(vec![format!("{name}.rack.mast")])
            .context("building the rack certificate")?;
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let cert = params.self_signed(&key).context("signing the rack certificate")?;
        // The key first, so a crash in between leaves no certificate without its key.
        write_private(&key_file, key.serialize_pem().as_bytes())?;
        write_private(&name_file, format!("{name}\n").as_bytes())?;
        write_private(&cert_file, cert.pem().as_bytes())?;
        Identity::load(dir)
    }

    /// Reads an existing identity.
    pub fn load(dir: &Path) -> anyhow::Result<Identity> {
        let (name_file, key_file, cert_file) = paths(dir);
        let name = fs::read_to_string(&name_file)
            .with_context(|| format!("reading {} (has this rack ever run `serve`?)", name_file.display()))?
            .trim()
            .to_owned();
        let cert = CertificateDer::from_pem_file(&cert_file)
            .map_err(|e| anyhow::anyhow!("reading the certificate {}: {e}", cert_file.display()))?;
        let key = PrivatePkcs8KeyDer::from_pem_file(&key_file)
            .map_err(|e| anyhow::anyhow!("reading the key {}: {e}", key_file.display()))?;
        Ok(Identity { name, cert, key_pkcs8: key.secret_pkcs8_der().to_vec() })
    }
}

/// Rack names appear in paths and URLs: letters, digits, '-', '_' and '.', starting with a letter
/// or digit (so never `.` or `..`).
pub fn validate_name(name: &str) -> Result<(), String> {
    super::policy::check_name("rack", name)
}

fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (dir.join("name"), dir.join("identity.key"), dir.join("identity.crt"))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn an_identity_is_created_once_and_its_key_is_private() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = Identity::load_or_create(dir.path(), Some("rack-a")).expect("created");
        let again = Identity::load_or_create(dir.path(), None).expect("read back");
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert_eq!(again.name, "rack-a");
        let mode = fs::metadata(dir.path().join("identity.key")).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let error = Identity::load_or_create(dir.path(), Some("rack-b")).expect_err("another name");
        assert!(error.to_string().contains("belongs to rack \"rack-a\""), "{error}");
    }

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&hex), parse_fingerprint(&colons));
        assert!(parse_fingerprint("abcd").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }
}
