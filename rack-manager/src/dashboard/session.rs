//! Dashboard sessions: a random id in an HttpOnly, SameSite=Strict cookie, mapped in the
//! manager's memory to the credential the user signed in with and a CSRF token the page sends
//! back in a header for every change. Each request checks that credential again, so revoking a
//! token ends its sessions at once; sessions end after [`TTL_MS`], at sign-out, or when the
//! manager restarts. Only SHA-256 of the ids is kept.

use std::{collections::HashMap, sync::Mutex};

use sha2::{Digest, Sha256};

use crate::{clock::now_ms, credentials::same_secret};

/// A session lasts a working day.
pub const TTL_MS: u64 = 12 * 3600 * 1000;
/// Sessions kept at most; the oldest makes room (bounded memory whatever signs in).
const MAX_SESSIONS: usize = 1024;

struct Session {
    bearer: String,
    csrf: String,
    expires_ms: u64,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

fn random_hex() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a session: {e}"))?;
    Ok(hex::encode(bytes))
}

fn key(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

impl Sessions {
    /// A new session for `bearer` (already checked): its cookie id and its CSRF token.
    pub fn create(&self, bearer: &str) -> anyhow::Result<(String, String)> {
        let (id, csrf) = (random_hex()?, random_hex()?);
        let now = now_ms();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.expires_ms > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires_ms).map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(key(&id), Session { bearer: bearer.to_owned(), csrf: csrf.clone(), expires_ms: now + TTL_MS });
        Ok((id, csrf))
    }

    /// The credential and CSRF token of the live session `id`.
    pub fn resolve(&self, id: &str) -> Option<(String, String)> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key(id)).filter(|s| s.expires_ms > now_ms()).map(|s| (s.bearer.clone(), s.csrf.clone()))
    }

    /// Ends the session whose CSRF token is `csrf` (sign-out proves it holds it).
    pub fn end(&self, csrf: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| !same_secret(&s.csrf, csrf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_resolve_until_ended() {
        let sessions = Sessions::default();
        let (id, csrf) = sessions.create("mast-ab-cd").expect("created");
        assert_eq!(sessions.resolve(&id), Some(("mast-ab-cd".to_owned(), csrf.clone())));
        assert_eq!(sessions.resolve("guess"), None);
        sessions.end(&csrf);
        assert_eq!(sessions.resolve(&id), None);
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = Sessions::default();
        for _ in 0..MAX_SESSIONS + 10 {
            sessions.create("t").expect("created");
        }
        assert!(sessions.map.lock().expect("lock").len() <= MAX_SESSIONS);
    }
}
