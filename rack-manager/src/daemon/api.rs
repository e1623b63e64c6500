//! The manager's HTTP API: one route per operation of [`rack_api`], each a thin call into the
//! rack core ([`crate::rack`]), whose errors become statuses here. Every operation either changes
//! state completely or not at all and answers 4xx (see the core for the few that say otherwise).

use std::sync::Arc;

use rack_api::{DeployRequest, JoinRequest};

use crate::{
    http::{HttpError, Method, Reply, Req},
    peer::Node,
    rack::{ErrorKind, Rack, RackError, instances::Lifecycle},
};

impl From<RackError> for HttpError {
    fn from(e: RackError) -> HttpError {
        let status = match e.kind {
            ErrorKind::Invalid => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Refused => 422,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        };
        HttpError::new(status, e.code, e.message, e.hint.unwrap_or_default())
    }
}

/// Answers one request of the rack API; `peer` is the rack's peering, when it has any.
pub fn route(rack: &Rack, peer: Option<&Arc<Node>>, req: &Req) -> Result<Reply, HttpError> {
    let segments: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    if let (Method::Get | Method::Head, ["metrics"]) = (&req.method, segments.as_slice()) {
        crate::credentials::authorize(&req.caller, &req.method, &["metrics"])?;
        let snapshot = crate::metrics::Snapshot::read(rack, peer)?;
        let body = crate::metrics::render(&snapshot).into_bytes();
        return Ok(Reply { status: 200, content_type: crate::metrics::CONTENT_TYPE, headers: Vec::new(), body });
    }
    let Some(("v1", rest)) = segments.split_first().map(|(first, rest)| (*first, rest)) else {
        return Err(HttpError::not_found(
            format!("/{} is not an API path", segments.join("/")),
            "every path starts with /v1 (this manager speaks API version 1)",
        ));
    };
    crate::credentials::authorize(&req.caller, &req.method, rest)?;
    match (&req.method, rest) {
        (Method::Get, ["hosts"]) => Ok(Reply::json(&rack.hosts()?)),
        (Method::Post, ["hosts"]) => {
            let join = req.json::<JoinRequest>("join request")?;
            let fingerprint = crate::credentials::admit(&rack.join_tokens, &req.caller, &join)?;
            let host = rack.join(join, &fingerprint)?;
            Ok(Reply::json(&crate::credentials::join_reply(&rack.token, host, &fingerprint)))
        }
        (Method::Post, ["join-tokens"]) => {
            #[derive(serde::Deserialize)]
            struct Ttl {
                ttl_s: u64,
            }
            let ttl = if req.body.is_empty() { 3600 } else { req.json::<Ttl>("join-token request")?.ttl_s };
            let (token, expires_ms) = rack.join_tokens.mint(ttl).map_err(|e| HttpError::internal(format!("{e:#}")))?;
            Ok(Reply::json(&rack_api::JoinToken { token, expires_ms }))
        }
        (Method::Post, ["hosts", "add"]) => {
            let request: rack_api::AddHostRequest = req.json("add-host request")?;
            Ok(Reply::json(&rack.add_host(request.name, request.address)?))
        }
        (Method::Post, ["hosts", name, "drain"]) => Ok(Reply::json(&rack.drain(name)?)),
        (Method::Delete, ["hosts", name]) => Ok(Reply::json(&rack.remove_host(name)?)),
        (Method::Post, ["images"]) => Ok(Reply::json_status(201, &rack.push_image(&req.body)?)),
        (Method::Get, ["images"]) => Ok(Reply::json(&rack.images()?)),
        (Method::Get, ["images", reference]) => Ok(Reply::json(&rack.image(reference)?)),
        (Method::Get, ["images", reference, "blob"]) => {
            let path = rack.image_file(reference)?;
            let bytes =
                std::fs::read(&path).map_err(|e| HttpError::internal(format!("reading {}: {e}", path.display())))?;
            Ok(Reply::bytes(bytes))
        }
        (Method::Delete, ["images", reference]) => Ok(Reply::json(&rack.remove_image(reference)?)),
        (Method::Post, ["deployments"]) => {
            Ok(Reply::json_status(201, &rack.deploy(&req.json::<DeployRequest>("deploy request")?)?))
        }
        (Method::Get, ["deployments"]) => Ok(Reply::json(&rack.deployments()?)),
        (Method::Get, ["deployments", reference]) => Ok(Reply::json(&rack.deployment(reference)?)),
        (Method::Post, ["deployments", reference, "scale"]) => {
            let request: rack_api::ScaleRequest = req.json("scale request")?;
            Ok(Reply::json(&rack.scale(reference, request.replicas)?))
        }
        (Method::Post, ["plan"]) => Ok(Reply::json(&rack.plan(&req.json::<DeployRequest>("deploy request")?)?)),
        (Method::Get, ["instances"]) => {
            Ok(Reply::json(&rack.instances(req.query.get("all").is_some_and(|v| v != "false"))?))
        }
        (Method::Get, ["instances", id]) => Ok(Reply::json(&rack.instance(id)?)),
        (Method::Post, ["instances", id, action @ ("stop" | "start" | "restart")]) => {
            let action = match *action {
                "stop" => Lifecycle::Stop,
                "start" => Lifecycle::Start,
                _ => Lifecycle::Restart,
            };
            Ok(Reply::json(&rack.lifecycle(id, action)?))
        }
        (Method::Delete, ["instances", id]) => Ok(Reply::json(&rack.remove_instance(id)?)),
        (Method::Get, ["instances", id, "logs"]) => {
            Ok(Reply::json(&rack.logs(id, req.query_u64("offset")?.unwrap_or(0))?))
        }
        (Method::Get, ["trust"]) => Ok(Reply::json(&rack.trusted_keys())),
        (Method::Post, ["trust"]) => {
            let request: rack_api::TrustRequest = req.json("trust request")?;
            let added = rack.trust_add(&request.key)?;
            Ok(Reply::json(&rack_api::TrustReply { key: request.key.trim().to_owned(), changed: added }))
        }
        (Method::Delete, ["trust", key]) => {
            rack.trust_remove(key)?;
            Ok(Reply::json(&rack_api::TrustReply { key: (*key).to_owned(), changed: true }))
        }
        (Method::Post, ["tokens"]) => {
            let request: rack_api::tokens::CreateTokenRequest = req.json("token request")?;
            let created = rack
                .api_tokens
                .create(request.scope, request.name.as_deref())
                .map_err(|e| HttpError::bad_request(format!("{e:#}"), ""))?;
            Ok(Reply::json_status(201, &created))
        }
        (Method::Get, ["tokens"]) => Ok(Reply::json(&rack.api_tokens.list())),
        (Method::Delete, ["tokens", id]) => match rack.api_tokens.revoke(id) {
            Ok(Some(info)) => Ok(Reply::json(&info)),
            Ok(None) => Err(HttpError::not_found(format!("no token {id:?}"), "see `rack-manager token ls`")),
            Err(e) => Err(HttpError::internal(format!("{e:#}"))),
        },
        (Method::Get, ["stats"]) => {
            let mut stats = rack.stats()?;
            stats.power = Some(rack.power(Some(&stats))?);
            Ok(Reply::json(&stats))
        }
        (Method::Get, ["power"]) => Ok(Reply::json(&rack.power(None)?)),
        (Method::Post, ["hosts", name, "power"]) => {
            Ok(Reply::json(&rack.set_power(name, req.json::<rack_api::power::PowerModel>("power model")?)?))
        }
        (Method::Get, ["replication"]) => {
            rack.replication.status().map(|s| Reply::json(&s)).map_err(HttpError::internal)
        }
        (_, ["peers", ..] | ["identity"] | ["failover", ..]) => super::peers_api::route(rack, peer, req, rest),
        _ => Err(HttpError::not_found(
            format!("{} /{} is not part of the rack API", req.method, segments.join("/")),
            "see the rack-api crate for the routes, or use the rack-manager CLI",
        )),
    }
}
