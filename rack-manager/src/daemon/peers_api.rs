//! The rack API's peering routes (`/v1/peers`, `/v1/identity`, `/v1/failover/...`; their types are
//! in [`rack_api::peers`]), for the CLI: thin calls into the peer layer ([`crate::peer`]). They
//! answer 409 on a rack that was started without `--peer-listen`.

use std::sync::Arc;

use rack_api::peers::{
    IdentityView, IncomingPlan, OutgoingPlan, PeerEntry, PeerTrust, PeerView, PlanView, SetPlanRequest,
};

use crate::{
    clock::now_ms,
    http::{HttpError, Method, Reply, Req},
    peer::{Node, failover},
    rack::Rack,
};

fn node(peer: Option<&Arc<Node>>) -> Result<&Node, HttpError> {
    peer.map(|n| &**n).ok_or_else(|| {
        HttpError::conflict("this rack has no peer listener", "restart it with `rack-manager serve --peer-listen ADDR`")
    })
}

pub fn route(rack: &Rack, peer: Option<&Arc<Node>>, req: &Req, rest: &[&str]) -> Result<Reply, HttpError> {
    match (&req.method, rest) {
        (Method::Get, ["identity"]) => {
            let node = node(peer)?;
            Ok(Reply::json(&IdentityView {
                name: node.identity.name.clone(),
                peer_url: Some(node.url.clone()),
                fingerprint: hex::encode(node.identity.fingerprint()),
            }))
        }
        (Method::Get, ["peers"]) => Ok(Reply::json(&peers(node(peer)?))),
        (Method::Post, ["peers"]) => {
            let node = node(peer)?;
            let entry: PeerEntry = req.json("peer")?;
            let name = entry.name.clone();
            node.add_peer(entry).map_err(|e| {
                HttpError::bad_request(format!("{e:#}"), "see `rack-manager identity` on the other rack")
            })?;
            Ok(Reply::json_status(201, &peers(node).into_iter().find(|p| p.name == name)))
        }
        (Method::Delete, ["peers", name]) => {
            let node = node(peer)?;
            if !node.remove_peer(name).map_err(|e| HttpError::new(500, "store", format!("{e:#}"), ""))? {
                return Err(HttpError::not_found(format!("there is no peer {name:?}"), "see `rack-manager peer ls`"));
            }
            Ok(Reply::json(&serde_json::json!({ "removed": name })))
        }
        (Method::Post, ["failover", "plans"]) => {
            let node = node(peer)?;
            let request: SetPlanRequest = req.json("failover plan")?;
            set_plan(rack, node, request)
        }
        (Method::Get, ["failover", "plan"]) => Ok(Reply::json(&plan(rack, node(peer)?)?)),
        (Method::Get, ["failover", "status"]) => Ok(Reply::json(&node(peer)?.takeovers().clone())),
        (Method::Post, ["failover", "release", owner, deployment]) => {
            let released = failover::release(node(peer)?, owner, deployment)
                .map_err(|e| HttpError::conflict(format!("{e:#}"), "see `rack-manager failover status`"))?;
            Ok(Reply::json(&released))
        }
        _ => Err(HttpError::not_found(
            format!("{} /v1/{} is not part of the rack API", req.method, rest.join("/")),
            "see `rack-manager peer --help` and `rack-manager failover --help`",
        )),
    }
}

/// Every configured peer with its health and transfer counters (also read by `/metrics`).
pub fn peers(node: &Node) -> Vec<PeerView> {
    let now = now_ms();
    let runtime = node.runtime().clone();
    node.peers()
        .into_iter()
        .map(|p| {
            let state = runtime.get(&p.name).cloned().unwrap_or_default();
            PeerView {
                up: node.peer_is_up(&p.name, now),
                image_keys: p.image_keys,
                reachable: state.last_reply_ms.is_some() && state.last_error.is_none(),
                last_heartbeat_ms: state.last_heartbeat_ms,
                last_error: state.last_error,
                images_replicated: state.images_replicated,
                chunks_fetched: state.chunks_fetched,
                chunks_reused: state.chunks_reused,
                bytes_fetched: state.bytes_fetched,
                corrupt_chunks: state.corrupt_chunks,
                refused_images: state.refused_images,
                volume_bytes_fetched: state.volume_bytes_fetched,
                name: p.name,
                url: p.url,
                fingerprint: p.fingerprint,
            }
        })
        .collect()
}

fn set_plan(rack: &Rack, node: &Node, request: SetPlanRequest) -> Result<Reply, HttpError> {
    let known = rack.store().deployments()?.iter().any(|d| d.id == request.deployment);
    if !known {
        return Err(HttpError::not_found(
            format!("there is no deployment {:?}", request.deployment),
            "deploy first; `rack-manager deploy ... --failover-to B,C` does both",
        ));
    }
    let peers: Vec<String> = node.peers().into_iter().map(|p| p.name).collect();
    if let Some(unknown) = request.failover_to.iter().find(|r| !peers.contains(r)) {
        return Err(HttpError::bad_request(
            format!("{unknown:?} is not a peer of this rack"),
            format!("add it with `rack-manager peer add`; the peers are: {}", peers.join(", ")),
        ));
    }
    node.set_plan(&request.deployment, request.failover_to.clone())
        .map_err(|e| HttpError::new(500, "store", format!("{e:#}"), ""))?;
    Ok(Reply::json(&request))
}

fn plan(rack: &Rack, node: &Node) -> Result<PlanView, HttpError> {
    let now = now_ms();
    let deployments = rack.store().deployments()?;
    let images: Vec<String> =
        rack.store().images()?.into_iter().map(|i| i.id).filter(|id| node.image_complete(id)).collect();
    let plans = node.plans();
    let outgoing = deployments
        .iter()
        .filter_map(|d| {
            Some(OutgoingPlan {
                deployment: d.id.clone(),
                image_name: d.image_name.clone(),
                failover_to: plans.get(&d.id)?.clone(),
            })
        })
        .collect();
    let me = node.identity.name.clone();
    let all_images = rack.store().images()?;
    let mut incoming = Vec::new();
    // Cloned first: `peer_is_alive` below takes the same lock.
    let runtime = node.runtime().clone();
    for (peer, state) in runtime {
        for p in state.plans {
            let snapshot = state.snapshots.get(&p.deployment).copied();
            let verdict = failover::allowed(node, &peer, &p, &all_images);
            incoming.push(IncomingPlan {
                would_take_over: failover::successor(&p, &peer, &me, |r| node.peer_is_alive(r, now))
                    == Some(me.as_str()),
                peer_up: node.peer_is_up(&peer, now),
                allowed: verdict.is_ok(),
                refused_because: verdict.err(),
                image_complete: images.contains(&p.image_id),
                signer: all_images.iter().find(|i| i.id == p.image_id).map(|i| i.signer.clone()),
                snapshot_taken_ms: snapshot,
                volume_lag_ms: snapshot.map(|t| now.saturating_sub(t)),
                has_volume: p.has_volume,
                peer: peer.clone(),
                deployment: p.deployment,
                image_name: p.image_name,
                image_id: p.image_id,
                replicas: p.replicas,
                memory_mib: p.memory_mib,
                vcpus: p.vcpus,
                args: p.args,
                failover_to: p.failover_to,
            });
        }
    }
    incoming.sort_by(|a, b| (&a.peer, &a.deployment).cmp(&(&b.peer, &b.deployment)));
    let trust = node.peers().into_iter().map(|p| PeerTrust { peer: p.name, image_keys: p.image_keys }).collect();
    Ok(PlanView { outgoing, incoming, policy: Some(node.policy.limits()), trust })
}
