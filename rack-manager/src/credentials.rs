//! Who may talk to whom inside a rack, and with which credential.
//!
//! | credential | held by | lets its holder |
//! |---|---|---|
//! | admin token (`<data-dir>/token`) | the manager (and its operator's CLI) | everything on the manager API; it never leaves the manager's host |
//! | join token (`host join-token`) | an operator, then one agent | `POST /v1/hosts` once, before it expires |
//! | agent credential | one agent (`<agent-data-dir>/credentials`) | fetch image blobs, re-join as that host with that certificate |
//! | manager token for an agent | the manager, derived, never stored | every `/v1/agent/*` route of that one agent |
//! | scoped token (`token create`, [`crate::api_tokens`]) | an operator, a dashboard user, Prometheus | what its scope allows ([`rack_api::tokens`]) |
//!
//! The manager stores no per-agent secret: both per-agent credentials are MACs (BLAKE3 keyed, one
//! key per direction derived from the admin token) of the host's name and its certificate
//! fingerprint (pinned at join), so every manager of an etcd rack that shares the admin token can
//! reach every agent, a restart of either side changes nothing, and a host record written by
//! someone else (with another address or fingerprint) yields a token no real agent accepts.
//! Rotating the admin token revokes them all (agents then join again with a new join token).
//!
//! Join tokens are random, one-use and expiring; the manager keeps only their SHA-256 in
//! `<data-dir>/join-tokens` (mode 0600), so they are valid only at the manager that minted them.

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Mutex,
};

use crate::{api_tokens::ApiTokens, http::Method};
use anyhow::Context;
use rack_api::tokens::Scope;
use sha2::{Digest, Sha256};

use crate::{clock::now_ms, http::HttpError, peer::identity::Fingerprint};

/// Who sent a request, as its bearer token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The manager's admin token (on an agent: the manager's token for that agent).
    Admin,
    /// A joined agent, by its host name and the certificate it joined with.
    Agent { name: String, fingerprint: Fingerprint },
    /// A join token that is minted, unused and unexpired (consumed by the join itself).
    Join(String),
    /// A scoped token minted with `token create`.
    Token(rack_api::tokens::TokenInfo),
    /// A dashboard session (its cookie), signed in with an operator's credential of `scope`.
    /// `csrf_ok`: the request also carried the session's CSRF token in its header; without it
    /// the session only reads (a forged cross-site form or link cannot change anything).
    Session { scope: Scope, name: String, csrf: String, csrf_ok: bool },
    /// No credential was needed (the agent's `invite`, before it has joined).
    Anonymous,
}

impl Caller {
    /// The scope of an operator's credential; `None` for agents, join tokens and anonymous.
    pub fn scope(&self) -> Option<Scope> {
        match self {
            Caller::Admin => Some(Scope::Admin),
            Caller::Token(info) => Some(info.scope),
            Caller::Session { scope, .. } => Some(*scope),
            Caller::Agent { .. } | Caller::Join(_) | Caller::Anonymous => None,
        }
    }
}

const AGENT_PREFIX: &str = "agent:";
const JOIN_PREFIX: &str = "join-";

/// A MAC of `fields` under a key derived from the admin token for `purpose`: BLAKE3 in keyed mode
/// (a keyed hash made to be a MAC), each field length-prefixed so no two lists hash the same input.
fn mac(admin: &str, purpose: &str, fields: &[&[u8]]) -> [u8; 32] {
    let key = blake3::derive_key(&format!("mast rack-manager 2026 {purpose}"), admin.as_bytes());
    let mut hasher = blake3::Hasher::new_keyed(&key);
    for field in fields {
        hasher.update(&(field.len() as u64).to_le_bytes());
        hasher.update(field);
    }
    hasher.finalize().into()
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was right.
pub fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len() && given.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The token the manager presents to the agent `name` whose certificate is `fingerprint`.
pub fn manager_token(admin: &str, name: &str, fingerprint: &Fingerprint) -> String {
    hex::encode(mac(admin, "manager-to-agent token", &[name.as_bytes(), fingerprint]))
}

/// The credential the agent `name` (certificate `fingerprint`) presents to the manager:
/// `agent:<fingerprint>:<mac>:<name>`, checkable by the manager without any stored state.
pub fn agent_credential(admin: &str, name: &str, fingerprint: &Fingerprint) -> String {
    let mac = mac(admin, "agent-to-manager credential", &[name.as_bytes(), fingerprint]);
    format!("{AGENT_PREFIX}{}:{}:{name}", hex::encode(fingerprint), hex::encode(mac))
}

/// Checks a bearer token presented to the manager.
pub fn authenticate(
    admin: &str,
    joins: &JoinTokens,
    tokens: &ApiTokens,
    bearer: Option<&str>,
) -> Result<Caller, HttpError> {
    let refused = || {
        HttpError::new(
            401,
            "unauthorized",
            "the request carries no valid API token",
            "the CLI reads <data-dir>/token on the manager's host; elsewhere set RACK_TOKEN or --token-file",
        )
    };
    let Some(bearer) = bearer else { return Err(refused()) };
    if same_secret(bearer, admin) {
        return Ok(Caller::Admin);
    }
    if ApiTokens::is_scoped(bearer) {
        return tokens.check(bearer).map(Caller::Token).ok_or_else(|| {
            HttpError::new(
                401,
                "unauthorized",
                "the token is unknown or revoked",
                "ask the rack's operator for a new one (`rack-manager token create`)",
            )
        });
    }
    if let Some(rest) = bearer.strip_prefix(AGENT_PREFIX) {
        let mut parts = rest.splitn(3, ':');
        let (Some(fp), Some(_mac), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(refused());
        };
        let fingerprint: Fingerprint = hex::decode(fp).ok().and_then(|b| b.try_into().ok()).ok_or_else(refused)?;
        if same_secret(bearer, &agent_credential(admin, name, &fingerprint)) {
            return Ok(Caller::Agent { name: name.to_owned(), fingerprint });
        }
        return Err(refused());
    }
    if bearer.starts_with(JOIN_PREFIX) {
        if joins.is_valid(bearer) {
            return Ok(Caller::Join(bearer.to_owned()));
        }
        return Err(HttpError::new(
            401,
            "unauthorized",
            "the join token is unknown, used or expired",
            "mint a new one on the manager with `rack-manager host join-token --out FILE`",
        ));
    }
    Err(refused())
}

/// What each kind of caller may do on the manager API (`rest` is the path after `/v1`). Agent
/// credentials and join tokens only join and fetch image blobs; operators' credentials as their
/// scope says ([`scope_allows`]).
pub fn authorize(caller: &Caller, method: &Method, rest: &[&str]) -> Result<(), HttpError> {
    let allowed = match caller {
        Caller::Admin => true,
        Caller::Token(info) => scope_allows(info.scope, method, rest),
        Caller::Session { scope, csrf_ok: true, .. } => scope_allows(*scope, method, rest),
        Caller::Session { csrf_ok: false, .. } => scope_allows(Scope::ReadOnly, method, rest),
        Caller::Agent { .. } => {
            matches!((method, rest), (Method::Post, ["hosts"]) | (Method::Get, ["images", _, "blob"]))
        }
        Caller::Join(_) => matches!((method, rest), (Method::Post, ["hosts"])),
        Caller::Anonymous => false,
    };
    if allowed {
        return Ok(());
    }
    let hint = match caller.scope() {
        _ if matches!(caller, Caller::Session { csrf_ok: false, .. }) => {
            "the dashboard's changes carry its CSRF token: reload the page (a request from another site is refused)"
        }
        Some(Scope::ReadOnly) => "this token is read-only; a deploy or admin token may (`rack-manager token create`)",
        Some(Scope::Deploy) => {
            "a deploy token pushes, deploys and runs instances; hosts, peers, join tokens and tokens need an admin token"
        }
        _ => "agent credentials and join tokens only join and fetch images; use the manager's admin token",
    };
    Err(HttpError::new(403, "forbidden", format!("this credential may not {method} /v1/{}", rest.join("/")), hint))
}

/// The API routes a scope opens (`rest` is the path after `/v1`): the table of
/// [`rack_api::tokens`]. Only the admin scope reaches tokens, join tokens, hosts' changes, peers
/// and failover; anything not named here is admin-only, so a new route is closed until placed.
pub fn scope_allows(scope: Scope, method: &Method, rest: &[&str]) -> bool {
    let reads = matches!(method, Method::Get | Method::Head) && !matches!(rest, ["tokens", ..]);
    let deploys = matches!(
        (method, rest),
        (Method::Post, ["images"] | ["plan"] | ["deployments", ..])
            | (Method::Delete, ["deployments", ..] | ["instances", _])
            | (Method::Post, ["instances", _, "stop" | "start" | "restart"])
    );
    match scope {
        Scope::Admin => true,
        Scope::Deploy => reads || deploys,
        Scope::ReadOnly => reads,
    }
}

/// Whether `caller` may join (or re-join) as `join` says; the certificate fingerprint to pin.
/// A join token is used up here; an agent credential re-joins only its own host with its own
/// certificate.
pub fn admit(joins: &JoinTokens, caller: &Caller, join: &rack_api::JoinRequest) -> Result<Fingerprint, HttpError> {
    let fingerprint = join
        .fingerprint
        .as_deref()
        .ok_or_else(|| {
            HttpError::bad_request(
                "the join request names no certificate fingerprint",
                "this agent is older than its manager: run the same rack-manager version on both",
            )
        })
        .and_then(|fp| {
            crate::peer::identity::parse_fingerprint(fp).map_err(|e| HttpError::bad_request(e, "send 64 hex digits"))
        })?;
    match caller {
        Caller::Admin => Ok(fingerprint),
        Caller::Token(info) if info.scope == Scope::Admin => Ok(fingerprint),
        Caller::Agent { name, fingerprint: joined } if *name == join.name && *joined == fingerprint => Ok(fingerprint),
        Caller::Agent { name, .. } => Err(HttpError::new(
            403,
            "forbidden",
            format!("the credential of host {name:?} re-joins only that host with its own certificate"),
            "a new host, or a host with a new certificate, joins with a new join token",
        )),
        Caller::Join(token) if joins.consume(token) => Ok(fingerprint),
        Caller::Join(_) | Caller::Token(_) | Caller::Session { .. } | Caller::Anonymous => Err(HttpError::new(
            401,
            "unauthorized",
            "the join token is unknown, used or expired",
            "mint a new one on the manager with `rack-manager host join-token --out FILE`",
        )),
    }
}

/// The answer to a join: the host and its two per-agent credentials.
pub fn join_reply(admin: &str, host: rack_api::Host, fingerprint: &Fingerprint) -> rack_api::JoinReply {
    rack_api::JoinReply {
        manager_token: manager_token(admin, &host.name, fingerprint),
        agent_credential: agent_credential(admin, &host.name, fingerprint),
        host,
    }
}

/// An agent's URL with the fingerprint of the certificate it serves, as the manager stores it:
/// `https://HOST:PORT#sha256=<hex>`.
pub fn pinned_address(url: &str, fingerprint: &Fingerprint) -> String {
    format!("{url}#sha256={}", hex::encode(fingerprint))
}

/// Splits a stored agent address into its URL and pinned fingerprint.
pub fn parse_pinned_address(address: &str) -> Result<(String, Fingerprint), String> {
    let (url, fp) = address.split_once("#sha256=").ok_or_else(|| {
        format!(
            "the host address {address:?} pins no certificate (an agent from before per-agent credentials): \
             start the agent again with a join token (`rack-manager host join-token`)"
        )
    })?;
    if !url.starts_with("https://") {
        return Err(format!("the host address {address:?} is not https://HOST:PORT"));
    }
    let fingerprint = crate::peer::identity::parse_fingerprint(fp)?;
    Ok((url.to_owned(), fingerprint))
}

/// Join tokens minted by this manager: SHA-256 of each, with its expiry, in a 0600 file.
#[derive(Debug)]
pub struct JoinTokens {
    path: PathBuf,
    lock: Mutex<()>,
}

/// The longest a join token may live: a join token is for an operator about to start an agent.
pub const MAX_JOIN_TTL_S: u64 = 7 * 24 * 3600;

impl JoinTokens {
    pub fn new(path: PathBuf) -> JoinTokens {
        JoinTokens { path, lock: Mutex::new(()) }
    }

    fn read(&self) -> Vec<(String, u64)> {
        let text = fs::read_to_string(&self.path).unwrap_or_default();
        let now = now_ms();
        text.lines()
            .filter_map(|l| {
                let (hash, expires) = l.split_once(' ')?;
                Some((hash.to_owned(), expires.trim().parse().ok()?))
            })
            .filter(|(_, expires)| *expires > now)
            .collect()
    }

    fn write(&self, tokens: &[(String, u64)]) -> anyhow::Result<()> {
        let text: String = tokens.iter().map(|(hash, expires)| format!("{hash} {expires}\n")).collect();
        write_secret_file(&self.path, &text)
    }

    fn hash(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    /// A new one-use token valid for `ttl_s` seconds, and its expiry (ms since the epoch).
    pub fn mint(&self, ttl_s: u64) -> anyhow::Result<(String, u64)> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a join token: {e}"))?;
        let token = format!("{JOIN_PREFIX}{}", hex::encode(bytes));
        let expires = now_ms() + ttl_s.min(MAX_JOIN_TTL_S) * 1000;
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut tokens = self.read();
        tokens.push((JoinTokens::hash(&token), expires));
        self.write(&tokens)?;
        Ok((token, expires))
    }

    pub fn is_valid(&self, token: &str) -> bool {
        let hash = JoinTokens::hash(token);
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.read().iter().any(|(h, _)| same_secret(h, &hash))
    }

    /// Uses `token` up: true if it was valid (and now is not).
    pub fn consume(&self, token: &str) -> bool {
        let hash = JoinTokens::hash(token);
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut tokens = self.read();
        let before = tokens.len();
        tokens.retain(|(h, _)| !same_secret(h, &hash));
        tokens.len() < before && self.write(&tokens).is_ok()
    }
}

/// Reads a secret from `path`, refusing a file that its group or others may read or write.
pub fn read_secret_file(path: &Path) -> anyhow::Result<String> {
    let meta = fs::metadata(path).with_context(|| format!("reading the token file {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "the token file {} has mode {mode:04o}: others on this machine could read it; run `chmod 600 {}` and start again",
            path.display(),
            path.display()
        );
    }
    let token = fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?
        .trim()
        .to_owned();
    anyhow::ensure!(!token.is_empty(), "the token file {} is empty", path.display());
    Ok(token)
}

/// Writes a secret file readable only by its owner (replacing any previous one atomically).
pub fn write_secret_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let aside = path.with_extension(format!("{}.tmp", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&aside)
        .with_context(|| format!("creating {}", aside.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", aside.display()))?;
    fs::rename(&aside, path).with_context(|| format!("writing {}", path.display()))
}

/// What a joined agent keeps (`<agent-data-dir>/credentials`, mode 0600): the token the
/// manager presents to it, and the credential it presents to the manager.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentCredentials {
    pub name: String,
    pub manager_token: String,
    pub agent_credential: String,
}

impl AgentCredentials {
    pub fn load(path: &Path) -> anyhow::Result<Option<AgentCredentials>> {
        if !path.exists() {
            return Ok(None);
        }
        let text = read_secret_file(path)?;
        let credentials = serde_json::from_str(&text)
            .with_context(|| format!("{} is corrupt: delete it and join again with a join token", path.display()))?;
        Ok(Some(credentials))
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        write_secret_file(path, &serde_json::to_string(self).expect("plain data"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_directions_and_the_fields_give_different_macs() {
        let fp = [7u8; 32];
        assert_ne!(manager_token("admin", "edge-1", &fp), agent_credential("admin", "edge-1", &fp));
        assert_ne!(manager_token("admin", "edge-1", &fp), manager_token("admin", "edge-1", &[8u8; 32]));
        // Length prefixes: moving a byte from one field to the next changes the MAC.
        assert_ne!(mac("admin", "t", &[b"ab", b"c"]), mac("admin", "t", &[b"a", b"bc"]));
        assert_eq!(manager_token("admin", "edge-1", &fp), manager_token("admin", "edge-1", &fp), "deterministic");
    }

    #[test]
    fn an_agent_credential_names_its_host_and_is_bound_to_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let joins = JoinTokens::new(dir.path().join("join-tokens"));
        let tokens = ApiTokens::new(dir.path().join("api-tokens"));
        let fp = [7u8; 32];
        let credential = agent_credential("admin", "edge-1", &fp);
        assert_eq!(
            authenticate("admin", &joins, &tokens, Some(&credential)).expect("valid"),
            Caller::Agent { name: "edge-1".into(), fingerprint: fp }
        );
        let renamed = credential.replace(":edge-1", ":edge-2");
        assert!(authenticate("admin", &joins, &tokens, Some(&renamed)).is_err(), "another name");
        assert!(authenticate("other-admin", &joins, &tokens, Some(&credential)).is_err(), "another rack");
        assert_ne!(manager_token("admin", "edge-1", &fp), manager_token("admin", "edge-1", &[8; 32]));
    }

    #[test]
    fn agents_may_only_join_and_fetch_images() {
        let agent = Caller::Agent { name: "a".into(), fingerprint: [0; 32] };
        assert!(authorize(&agent, &Method::Get, &["images", "ab", "blob"]).is_ok());
        assert!(authorize(&agent, &Method::Post, &["hosts"]).is_ok());
        for (method, path) in [
            (Method::Get, vec!["hosts"]),
            (Method::Post, vec!["deployments"]),
            (Method::Get, vec!["images"]),
            (Method::Post, vec!["join-tokens"]),
        ] {
            assert_eq!(authorize(&agent, &method, &path).expect_err("refused").status, 403, "{path:?}");
        }
        assert!(authorize(&Caller::Join("t".into()), &Method::Get, &["images", "ab", "blob"]).is_err());
    }

    #[test]
    fn scopes_open_what_their_table_says() {
        use Method::{Delete, Get, Post};
        let cases: &[(Method, &[&str], [bool; 3])] = &[
            // (method, path, [read-only, deploy, admin])
            (Get, &["instances"], [true, true, true]),
            (Get, &["stats"], [true, true, true]),
            (Get, &["tokens"], [false, false, true]),
            (Post, &["instances", "x", "stop"], [false, true, true]),
            (Delete, &["instances", "x"], [false, true, true]),
            (Post, &["deployments"], [false, true, true]),
            (Post, &["images"], [false, true, true]),
            (Post, &["hosts", "h", "drain"], [false, false, true]),
            (Post, &["join-tokens"], [false, false, true]),
            (Post, &["tokens"], [false, false, true]),
            (Delete, &["peers", "p"], [false, false, true]),
        ];
        for (method, path, expected) in cases {
            for (scope, allowed) in [Scope::ReadOnly, Scope::Deploy, Scope::Admin].into_iter().zip(expected) {
                assert_eq!(scope_allows(scope, method, path), *allowed, "{scope} {method} {path:?}");
            }
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let (joins, tokens) = (JoinTokens::new(dir.path().join("j")), ApiTokens::new(dir.path().join("api-tokens")));
        let reader = tokens.create(Scope::ReadOnly, None).expect("minted");
        let caller = authenticate("admin", &joins, &tokens, Some(&reader.token)).expect("valid");
        let refused = authorize(&caller, &Post, &["instances", "x", "stop"]).expect_err("read-only");
        assert_eq!(refused.status, 403);
        assert!(refused.error.hint.unwrap_or_default().contains("read-only"));
        tokens.revoke(&reader.info.id).expect("revoked");
        assert_eq!(authenticate("admin", &joins, &tokens, Some(&reader.token)).expect_err("revoked").status, 401);
    }

    #[test]
    fn join_tokens_are_used_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let joins = JoinTokens::new(dir.path().join("join-tokens"));
        let tokens = ApiTokens::new(dir.path().join("api-tokens"));
        let (token, _) = joins.mint(60).expect("minted");
        assert!(matches!(authenticate("admin", &joins, &tokens, Some(&token)), Ok(Caller::Join(_))));
        assert!(joins.consume(&token));
        assert!(!joins.consume(&token), "used");
        assert_eq!(authenticate("admin", &joins, &tokens, Some(&token)).expect_err("used").status, 401);
        let (expired, _) = joins.mint(0).expect("minted");
        assert!(!joins.is_valid(&expired), "expired at once");
        let mode = fs::metadata(dir.path().join("join-tokens")).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_token_file_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("token");
        fs::write(&path, "secret\n").expect("writes");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = read_secret_file(&path).expect_err("refused").to_string();
        assert!(error.contains(&format!("chmod 600 {}", path.display())), "{error}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read_secret_file(&path).expect("read"), "secret");
    }

    #[test]
    fn pinned_addresses_round_trip() {
        let address = pinned_address("https://127.0.0.1:7879", &[9; 32]);
        assert_eq!(parse_pinned_address(&address), Ok(("https://127.0.0.1:7879".into(), [9; 32])));
        assert!(parse_pinned_address("http://127.0.0.1:7879").is_err());
    }
}
