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
use tiny_http::Method;

use super::{HostAgent, LocalAgent};
use crate::{
    client::Client,
    daemon::http::{self, HttpError, Reply, Req},
};

/// Serves `agent` on `server` after joining the manager at `manager`; never returns unless the
/// server fails.
pub fn run(
    agent: LocalAgent,
    server: tiny_http::Server,
    manager: &str,
    join_now: bool,
    token: &str,
    join: JoinRequest,
) -> anyhow::Result<()> {
    let info = join.clone();
    let agent = Arc::new(agent);
    let handler = Arc::new(move |req: &Req| route(&agent, &info, req));
    let server = Arc::new(server);
    if !join_now {
        eprintln!(
            "rack-manager agent: serving on {}; add it with `rack-manager host add NAME {}`",
            join.address, join.address
        );
        http::serve(server, 4, token.to_owned(), handler);
        anyhow::bail!("the agent's HTTP server stopped");
    }
    let serving = {
        let (server, token) = (server.clone(), token.to_owned());
        thread::spawn(move || http::serve(server, 4, token, handler))
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
    let _ = serving.join();
    anyhow::bail!("the agent's HTTP server stopped")
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
