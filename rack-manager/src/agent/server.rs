//! `rack-manager agent --join <manager>`: a host agent in its own process, serving a
//! [`LocalAgent`] on `/v1/agent/...` and announcing itself to the manager.

use std::{
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context;
use rack_api::{
    Host, JoinRequest,
    agent::{LaunchRequest, RunRef},
};

use super::{HostAgent, LocalAgent};
use crate::{
    client::Client,
    http::{self, HttpError, Method, Reply, Req},
};

/// Serves `agent` on `server` after joining the manager at `manager`; never returns unless the
/// server fails.
pub fn run(
    agent: LocalAgent,
    server: std::net::TcpListener,
    manager: &str,
    join_now: bool,
    token: &str,
    join: JoinRequest,
) -> anyhow::Result<()> {
    let info = join.clone();
    let agent = Arc::new(agent);
    let handler = Arc::new(move |req: &Req| route(&agent, &info, req));
    if !join_now {
        eprintln!(
            "rack-manager agent: serving on {}; add it with `rack-manager host add NAME {}`",
            join.address, join.address
        );
        let error = http::serve(server, LIMITS, token.to_owned(), body_limit, handler);
        anyhow::bail!("the agent's HTTP server stopped: {error}");
    }
    let serving = {
        let token = token.to_owned();
        thread::spawn(move || http::serve(server, LIMITS, token, body_limit, handler))
    };
    let client = Client::new(manager, token, Duration::from_secs(10));
    // The manager may still be starting: keep trying for a while before giving up.
    let deadline = Instant::now() + Duration::from_secs(30);
    let host: Host = loop {
        match client.post("/hosts", &join) {
            Ok(host) => break host,
            Err(crate::client::ClientError::Unreachable { .. }) if Instant::now() < deadline => {
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
    match serving.join() {
        Ok(error) => anyhow::bail!("the agent's HTTP server stopped: {error}"),
        Err(_) => anyhow::bail!("the agent's HTTP server stopped"),
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

fn failed(e: super::AgentError) -> HttpError {
    HttpError::new(422, "agent_failed", e.to_string(), "see the agent's output on its host")
}

fn route(agent: &LocalAgent, info: &JoinRequest, req: &Req) -> Result<Reply, HttpError> {
    let segments: Vec<&str> = req.segments.iter().map(String::as_str).collect();
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
            "agents serve /v1/agent/{info,launch,state,stop,stats,logs,remove-volume}",
        )),
    }
}
