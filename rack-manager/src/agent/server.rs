//! `rack-manager agent --join <manager>`: a host agent in its own process, serving a
//! [`LocalAgent`] on `/v1/agent/...` over TLS and joining the manager.
//!
//! The agent's certificate is self-signed (`<data-dir>/agent-identity/`); the manager pins its
//! fingerprint, learned in the join request that the operator's join token authenticates. Every
//! route but `invite` (only before the agent has joined) needs the token the manager was given
//! for this agent at join ([`crate::credentials`]); nothing else, not even the manager's admin
//! token, is accepted.

use std::{
    net::TcpListener,
    path::PathBuf,
    sync::{Arc, RwLock},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context;
use rack_api::{
    Host, Invite, JoinReply, JoinRequest,
    agent::{LaunchRequest, RunRef},
};

use super::{AgentError, HostAgent, LocalAgent};
use crate::{
    client::{Client, ClientError},
    credentials::{AgentCredentials, Caller, same_secret},
    http::{self, Authenticator, Handler, HttpError, Method, Reply, Req},
};

/// The agent's side of its link to the manager: where the manager is, and the credentials the
/// join gave (kept in `<data-dir>/credentials`, mode 0600, so a restart needs no new join token).
#[derive(Debug)]
pub struct ManagerLink {
    pub url: String,
    path: PathBuf,
    credentials: RwLock<Option<AgentCredentials>>,
    join_token: Option<String>,
}

impl ManagerLink {
    pub fn open(url: &str, path: PathBuf, join_token: Option<String>) -> anyhow::Result<ManagerLink> {
        let credentials = AgentCredentials::load(&path)?;
        anyhow::ensure!(
            credentials.is_some() || join_token.is_some(),
            "this agent has not joined a manager yet, so it needs a join token: on the manager, run \
             `rack-manager host join-token --out FILE`, copy FILE here (mode 0600) and pass --join-token-file FILE \
             (or set RACK_JOIN_TOKEN)"
        );
        Ok(ManagerLink { url: url.to_owned(), path, credentials: RwLock::new(credentials), join_token })
    }

    fn credentials(&self) -> Option<AgentCredentials> {
        self.credentials.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What this agent presents to the manager (to fetch images), once it has joined.
    pub fn agent_credential(&self) -> Option<String> {
        self.credentials().map(|c| c.agent_credential)
    }

    /// Joins (or re-joins) the manager as `info`: with the credential of an earlier join if
    /// there is one, else (or if the manager no longer accepts it) with the join token.
    fn join(&self, info: &JoinRequest) -> Result<Host, ClientError> {
        let mut bearers: Vec<String> = self.credentials().map(|c| c.agent_credential).into_iter().collect();
        bearers.extend(self.join_token.clone());
        let mut last = None;
        for bearer in bearers {
            let client = Client::new(&self.url, &bearer, Duration::from_secs(10));
            match client.post::<_, JoinReply>("/hosts", info) {
                Ok(reply) => {
                    let credentials = AgentCredentials {
                        name: info.name.clone(),
                        manager_token: reply.manager_token,
                        agent_credential: reply.agent_credential,
                    };
                    if let Err(e) = credentials.save(&self.path) {
                        eprintln!("rack-manager agent: warning: {e:#}; a restart will need a new join token");
                    }
                    *self.credentials.write().unwrap_or_else(|p| p.into_inner()) = Some(credentials);
                    return Ok(reply.host);
                }
                Err(e @ ClientError::Api { status: 401 | 403, .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::NoManager("no credential to join with".into())))
    }
}

/// Serves `agent` on `listener` (TLS with `tls`), after joining the manager now (`join_now`) or
/// when `host add` invites it; never returns unless joining fails.
pub fn run(
    agent: LocalAgent,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    link: Arc<ManagerLink>,
    join_now: bool,
    info: JoinRequest,
    metrics_token: Option<String>,
) -> anyhow::Result<()> {
    let agent = Arc::new(agent);
    let handler: Arc<Handler> = {
        let (link, info) = (link.clone(), info.clone());
        Arc::new(move |req: &Req| route(&agent, &link, &info, req))
    };
    let authenticate: Arc<Authenticator> = {
        let link = link.clone();
        Arc::new(move |bearer: Option<&str>| authenticate(&link, metrics_token.as_deref(), bearer))
    };
    let serving = thread::spawn(move || http::serve_tls(listener, LIMITS, tls, authenticate, body_limit, handler));
    if !join_now {
        let fingerprint = info.fingerprint.as_deref().unwrap_or_default();
        eprintln!(
            "rack-manager agent: serving on {}; add it with `rack-manager host add NAME {}#sha256={fingerprint}`",
            info.address, info.address
        );
    } else {
        let manager = link.url.clone();
        // The manager may still be starting: keep trying for a while before giving up.
        let deadline = Instant::now() + Duration::from_secs(30);
        let host = loop {
            match link.join(&info) {
                Ok(host) => break host,
                Err(ClientError::Unreachable { .. }) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e).with_context(|| format!("joining the manager at {manager}")),
            }
        };
        eprintln!(
            "rack-manager agent: joined {manager} as host {} ({} MiB, {})",
            host.name,
            host.memory_mib,
            host.arches.join(", ")
        );
    }
    match serving.join() {
        Ok(error) => anyhow::bail!("the agent's HTTPS server stopped: {error}"),
        Err(_) => anyhow::bail!("the agent's HTTPS server stopped"),
    }
}

/// The agent's API is the manager's to call: one caller, a few requests at a time. The caps
/// leave room for the manager's reconciler, log follows and stats together, and bound what a
/// stranger on the network can hold open.
const LIMITS: http::Limits = http::Limits {
    max_connections: 128,
    max_per_address: 64,
    max_unproven: 64,
    // Launches and stops wait on processes; four at once matched the old worker pool.
    handlers: 4,
};

/// Every agent request is a small JSON document (a launch request names its image, it does
/// not carry it).
fn body_limit(_method: &Method, _path: &[String]) -> u64 {
    1 << 20
}

/// Only the manager's token for this agent is accepted; before the agent has joined, a request
/// without a token is let through to reach `invite` (the only route that takes one).
/// The metrics token (`agent --metrics-token-file`) reads `/metrics` and nothing else.
fn authenticate(link: &ManagerLink, metrics_token: Option<&str>, bearer: Option<&str>) -> Result<Caller, HttpError> {
    match (bearer, link.credentials()) {
        (None, None) => Ok(Caller::Anonymous),
        (Some(bearer), Some(c)) if same_secret(bearer, &c.manager_token) => Ok(Caller::Admin),
        (Some(bearer), _) if metrics_token.is_some_and(|m| same_secret(bearer, m)) => {
            Ok(Caller::Token(rack_api::tokens::TokenInfo {
                id: "metrics".into(),
                name: "agent --metrics-token-file".into(),
                scope: rack_api::tokens::Scope::ReadOnly,
                created_ms: 0,
            }))
        }
        _ => Err(HttpError::new(
            401,
            "unauthorized",
            "this agent accepts only the token its manager was given for it at join",
            "agents are driven by their manager; use the manager's API (`rack-manager ps`, `host ls`…)",
        )),
    }
}

fn failed(e: AgentError) -> HttpError {
    match e {
        AgentError::NotLaunchedHere(message) => HttpError::new(
            403,
            "not_launched_here",
            message,
            "an agent stops and reports only runs it launched itself (see <data-dir>/launches)",
        ),
        AgentError::Impossible(message) => HttpError::new(
            422,
            "launch_impossible",
            message,
            "deploy an image built for this host's launcher and architecture",
        ),
        e => HttpError::new(422, "agent_failed", e.to_string(), "see the agent's output on its host"),
    }
}

fn route(agent: &LocalAgent, link: &ManagerLink, info: &JoinRequest, req: &Req) -> Result<Reply, HttpError> {
    let segments: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    if let (Method::Get, ["metrics"]) = (&req.method, segments.as_slice())
        && matches!(req.caller, Caller::Admin | Caller::Token(_))
    {
        let body = crate::metrics::agent::render(info, &agent.run_stats()).into_bytes();
        return Ok(Reply { status: 200, content_type: crate::metrics::CONTENT_TYPE, headers: Vec::new(), body });
    }
    if req.caller != Caller::Admin {
        // Only an invitation to join may come without the manager's token, and only before the
        // agent has joined (so nobody can make a joined agent join under another name).
        if (&req.method, segments.as_slice()) == (&Method::Post, ["v1", "agent", "invite"].as_slice())
            && link.credentials().is_none()
        {
            let invite: Invite = req.json("invite")?;
            let host = link
                .join(&JoinRequest { name: invite.name, ..info.clone() })
                .map_err(|e| HttpError::new(422, "join_failed", format!("joining {}: {e}", link.url), ""))?;
            return Ok(Reply::json(&host));
        }
        return Err(HttpError::new(
            401,
            "unauthorized",
            "the request carries no token",
            "agents are driven by their manager; use the manager's API",
        ));
    }
    match (&req.method, segments.as_slice()) {
        (Method::Get, ["v1", "agent", "info"]) => Ok(Reply::json(info)),
        (Method::Post, ["v1", "agent", "launch"]) => {
            let request: LaunchRequest = req.json("launch request")?;
            Ok(Reply::json(&agent.launch(&request).map_err(failed)?))
        }
        (Method::Post, ["v1", "agent", "state"]) => {
            Ok(Reply::json(&agent.state(&req.json::<RunRef>("run")?).map_err(failed)?))
        }
        (Method::Post, ["v1", "agent", "stop"]) => {
            agent.stop(&req.json::<RunRef>("run")?).map_err(failed)?;
            Ok(Reply::json(&serde_json::json!({})))
        }
        (Method::Post, ["v1", "agent", "stats"]) => {
            Ok(Reply::json(&agent.stats(&req.json::<RunRef>("run")?).map_err(failed)?))
        }
        (Method::Post, ["v1", "agent", "remove-volume"]) => {
            agent.remove_volume(&req.json::<rack_api::agent::VolumeRef>("volume")?).map_err(failed)?;
            Ok(Reply::json(&serde_json::json!({})))
        }
        (Method::Get, ["v1", "agent", "logs", instance]) => {
            let offset = req.query_u64("offset")?.unwrap_or(0);
            Ok(Reply::json(&agent.logs(instance, offset).map_err(failed)?))
        }
        _ => Err(HttpError::not_found(
            format!("{} /{} is not part of the agent API", req.method, req.segments.join("/")),
            "agents serve /v1/agent/{info,launch,state,stop,stats,logs,remove-volume,invite}",
        )),
    }
}
