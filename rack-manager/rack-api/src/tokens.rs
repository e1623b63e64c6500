//! Scoped API tokens (`rack-manager token create|ls|revoke`): `POST /v1/tokens`,
//! `GET /v1/tokens`, `DELETE /v1/tokens/{id}`, admin only.
//!
//! | scope | may |
//! |---|---|
//! | `read-only` | every `GET` of the API, `/metrics` and the dashboard's pages; nothing that changes state |
//! | `deploy` | what `read-only` may, and push images, plan, deploy, and stop/start/restart/remove instances and deployments |
//! | `admin` | everything the manager's admin token may (hosts, join tokens, peers, failover, tokens) |

use serde::{Deserialize, Serialize};

/// What a token lets its holder do; see the module's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    ReadOnly,
    Deploy,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ReadOnly => "read-only",
            Scope::Deploy => "deploy",
            Scope::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTokenRequest {
    pub scope: Scope,
    /// A label for people (`token ls`); the manager picks one if absent.
    #[serde(default)]
    pub name: Option<String>,
}

/// A token as `token ls` shows it: never its secret, which the manager does not keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Short and public: what `token revoke` takes.
    pub id: String,
    pub name: String,
    pub scope: Scope,
    /// When it was minted, in ms since the Unix epoch.
    pub created_ms: u64,
}

/// The answer to `POST /v1/tokens`: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    pub token: String,
}
