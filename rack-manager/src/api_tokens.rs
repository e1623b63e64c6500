//! Scoped API tokens (`token create|ls|revoke`, [`rack_api::tokens`]): minted by the manager,
//! which keeps only their SHA-256 with their id, name and scope in `<data-dir>/api-tokens`
//! (mode 0600, JSON). A token reads `mast-<id>-<64 hex digits>`: the id finds the record, the
//! whole token's hash must match it. Like join tokens, they are valid only at the manager that
//! minted them (an etcd rack's other managers do not know them).

use std::{path::PathBuf, sync::Mutex};

use anyhow::Context;
use rack_api::tokens::{CreatedToken, Scope, TokenInfo};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{clock::now_ms, credentials::same_secret};

const PREFIX: &str = "mast-";
/// Tokens kept at most: a bound on the file and on a listing; far above any operator's need.
pub const MAX_TOKENS: usize = 1000;
/// The longest name kept.
const MAX_NAME: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    info: TokenInfo,
    sha256: String,
}

/// The tokens this manager minted.
#[derive(Debug)]
pub struct ApiTokens {
    path: PathBuf,
    lock: Mutex<()>,
}

impl ApiTokens {
    pub fn new(path: PathBuf) -> ApiTokens {
        ApiTokens { path, lock: Mutex::new(()) }
    }

    fn read(&self) -> Vec<Record> {
        // A missing or unreadable file holds no tokens: every scoped token is then refused,
        // which fails safe; the admin token still works to mint new ones.
        std::fs::read_to_string(&self.path).ok().and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default()
    }

    fn write(&self, records: &[Record]) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(records).context("encoding the API tokens")?;
        crate::credentials::write_secret_file(&self.path, &text)
    }

    fn hash(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    /// Mints a token of `scope`; the returned secret is not kept anywhere.
    pub fn create(&self, scope: Scope, name: Option<&str>) -> anyhow::Result<CreatedToken> {
        let mut id_bytes = [0u8; 4];
        let mut secret = [0u8; 32];
        getrandom::fill(&mut id_bytes)
            .and_then(|()| getrandom::fill(&mut secret))
            .map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
        let id = hex::encode(id_bytes);
        let token = format!("{PREFIX}{id}-{}", hex::encode(secret));
        let name = match name.map(str::trim).filter(|n| !n.is_empty()) {
            Some(name) => {
                anyhow::ensure!(
                    name.len() <= MAX_NAME && name.chars().all(|c| !c.is_control()),
                    "a token's name is at most {MAX_NAME} printable characters"
                );
                name.to_owned()
            }
            None => format!("{scope}-{id}"),
        };
        let info = TokenInfo { id, name, scope, created_ms: now_ms() };
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut records = self.read();
        anyhow::ensure!(
            records.len() < MAX_TOKENS,
            "this manager already holds {MAX_TOKENS} tokens: revoke unused ones (`rack-manager token ls`, `token revoke ID`)"
        );
        records.push(Record { info: info.clone(), sha256: ApiTokens::hash(&token) });
        self.write(&records)?;
        Ok(CreatedToken { info, token })
    }

    pub fn list(&self) -> Vec<TokenInfo> {
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.read().into_iter().map(|r| r.info).collect()
    }

    /// Forgets the token `id` (or the one token whose name is `id`); `None` if there is none.
    pub fn revoke(&self, id: &str) -> anyhow::Result<Option<TokenInfo>> {
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut records = self.read();
        let by_id = records.iter().position(|r| r.info.id == id);
        let by_name = || {
            let named: Vec<usize> =
                records.iter().enumerate().filter(|(_, r)| r.info.name == id).map(|(i, _)| i).collect();
            (named.len() == 1).then(|| named[0])
        };
        let Some(index) = by_id.or_else(by_name) else { return Ok(None) };
        let removed = records.remove(index);
        self.write(&records)?;
        Ok(Some(removed.info))
    }

    /// Whether `bearer` looks like one of these tokens (so no other credential check applies).
    pub fn is_scoped(bearer: &str) -> bool {
        bearer.starts_with(PREFIX)
    }

    /// The token's record, if `bearer` is a live token.
    pub fn check(&self, bearer: &str) -> Option<TokenInfo> {
        let id = bearer.strip_prefix(PREFIX)?.split('-').next()?;
        let hash = ApiTokens::hash(bearer);
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.read().into_iter().find(|r| r.info.id == id && same_secret(&r.sha256, &hash)).map(|r| r.info)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn tokens_check_until_revoked_and_keep_no_secret() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("api-tokens");
        let tokens = ApiTokens::new(path.clone());
        let created = tokens.create(Scope::ReadOnly, Some("grafana")).expect("minted");
        assert_eq!(tokens.check(&created.token).map(|i| i.scope), Some(Scope::ReadOnly));
        let text = std::fs::read_to_string(&path).expect("file");
        assert!(!text.contains(&created.token[10..]), "the secret is not stored");
        assert_eq!(std::fs::metadata(&path).expect("file").permissions().mode() & 0o777, 0o600);
        let mut forged = created.token.clone();
        forged.pop();
        forged.push(if created.token.ends_with('0') { '1' } else { '0' });
        assert!(tokens.check(&forged).is_none(), "one digit off");
        assert!(tokens.check("mast-").is_none());
        assert_eq!(tokens.list().len(), 1);
        assert_eq!(tokens.revoke("grafana").expect("written").map(|i| i.id), Some(created.info.id.clone()));
        assert!(tokens.check(&created.token).is_none(), "revoked");
        assert!(tokens.revoke(&created.info.id).expect("written").is_none());
    }

    #[test]
    fn names_are_bounded_and_default_to_the_scope() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tokens = ApiTokens::new(dir.path().join("api-tokens"));
        assert!(tokens.create(Scope::Deploy, Some(&"x".repeat(65))).is_err());
        assert!(tokens.create(Scope::Deploy, Some("a\nb")).is_err());
        let created = tokens.create(Scope::Deploy, None).expect("minted");
        assert!(created.info.name.starts_with("deploy-"), "{}", created.info.name);
    }
}
