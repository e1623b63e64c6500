//! The peer listener: mutual TLS, then HTTP/1.1 on the hardened server of [`crate::http`]
//! (handshake deadline, caps on connections and on handshakes in progress, body limits).
//! Every route answers only the configured peer whose certificate the handshake proved; an
//! unknown or missing certificate never gets this far.

use std::{
    net::TcpListener,
    sync::{Arc, atomic::Ordering},
};

use http1::request::Method;
use images::artifact::ImageId;
use rack_api::peers::PeerImage;
use replica::{ChunkId, VolumeSnapshot};

use super::{
    Heartbeat, HeartbeatReply, Node, ServedVolume, TakeoverNotice, identity::fingerprint, local::LocalChunks, policy,
    wire,
};
use crate::{clock::now_ms, http};

/// The peer port's caps. Real peers are a handful of racks, each with at most a few requests
/// at once (heartbeat, image and chunk fetches, volume pulls): 128 connections is ample.
/// Handshakes in progress are capped lower and make room oldest first, so clients that
/// trickle TLS bytes cannot keep a real peer's handshake out; a proven peer is never evicted.
const LIMITS: http::Limits = http::Limits {
    max_connections: 128,
    max_per_address: 32,
    max_unproven: 64,
    // Chunk and snapshot handlers read files; eight at once keep a heartbeat from waiting.
    handlers: 8,
};
/// The most chunks one request may ask for.
const MAX_CHUNKS_PER_REQUEST: usize = 4096;

pub fn spawn(node: Arc<Node>, listener: TcpListener, config: Arc<rustls::ServerConfig>) {
    let gate = http::TlsGate {
        refuse_all: Box::new({
            let node = node.clone();
            move || node.partitioned()
        }),
        peer_of: Box::new({
            let node = node.clone();
            move |connection, from| {
                connection
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(|cert| node.peer_named_by(&fingerprint(cert)))
                    .ok_or_else(|| format!("{from} completed the handshake without a peer certificate"))
            }
        }),
    };
    let handler = Arc::new(move |req: &http::Req| Ok(serve_connection(&node, req)));
    http::spawn_tls(listener, LIMITS, config, gate, |_, _| wire::MAX_REQUEST_BODY, handler);
}

/// One request from a proven peer, translated to the peer protocol's types and back.
fn serve_connection(node: &Node, req: &http::Req) -> http::Reply {
    let response = match (peer_method(&req.method), &req.peer) {
        (Some(method), Some(peer)) => {
            let request =
                wire::Request { method, path: format!("/{}", req.segments.join("/")), body: req.body.clone() };
            route(node, peer, &request)
        }
        (None, _) => wire::Response::error(405, format!("{} is not part of the peer protocol", req.method)),
        // The listener only hands over requests of proven peers.
        (_, None) => wire::Response::error(403, "no peer certificate"),
    };
    http::Reply {
        status: response.status,
        content_type: "application/octet-stream",
        headers: response.headers,
        body: response.body,
    }
}

fn peer_method(method: &http::Method) -> Option<Method> {
    Some(match method {
        http::Method::Get => Method::Get,
        http::Method::Head => Method::Head,
        http::Method::Post => Method::Post,
        http::Method::Put => Method::Put,
        http::Method::Delete => Method::Delete,
        http::Method::Options => Method::Options,
        http::Method::Patch => Method::Patch,
        http::Method::Trace => Method::Trace,
        http::Method::Connect => Method::Connect,
        http::Method::NonStandard(_) => return None,
    })
}

fn route(node: &Node, peer: &str, request: &wire::Request) -> wire::Response {
    let segments: Vec<&str> = request.path.split('/').filter(|s| !s.is_empty()).collect();
    let result = match (request.method, segments.as_slice()) {
        (Method::Post, ["peer", "v1", "heartbeat"]) => heartbeat(node, peer, &request.body),
        (Method::Get, ["peer", "v1", "images"]) => images(node),
        (Method::Get, ["peer", "v1", "images", id, "header"]) => header(node, id),
        (Method::Post, ["peer", "v1", "chunks"]) => chunks(node, &request.body),
        (Method::Post, ["peer", "v1", "chunks", "has"]) => has_chunks(node, &request.body),
        (Method::Get, ["peer", "v1", "volumes", deployment, "snapshots"]) => snapshot_volume(node, peer, deployment),
        (Method::Get, ["peer", "v1", "volumes", deployment, "snapshots", seq]) => {
            served_snapshot(node, peer, deployment, seq)
        }
        _ => Err(wire::Response::error(404, format!("{} is not part of the peer protocol", request.path))),
    };
    result.unwrap_or_else(|refusal| refusal)
}

type Answer = Result<wire::Response, wire::Response>;

fn internal(error: impl std::fmt::Display) -> wire::Response {
    wire::Response::error(500, error.to_string())
}

/// A peer's heartbeat: it is alive, and these of its deployments may fail over here. Everything
/// in it is checked before it is kept ([`policy::check_plan`]): a heartbeat with a plan that is
/// malformed (a name with a path in it, too many arguments...) is refused whole, with why.
/// Whether a kept plan would be run here is decided when the peer is down ([`policy::judge`]).
fn heartbeat(node: &Node, peer: &str, body: &[u8]) -> Answer {
    let beat: Heartbeat =
        serde_json::from_slice(body).map_err(|e| wire::Response::error(400, format!("not a heartbeat: {e}")))?;
    if beat.rack != peer {
        return Err(wire::Response::error(
            403,
            format!("the certificate is peer {peer:?}'s, but the heartbeat claims to be from {:?}", beat.rack),
        ));
    }
    if beat.plans.len() > policy::MAX_PLANS {
        return Err(wire::Response::error(
            413,
            format!("a heartbeat carries at most {} failover plans", policy::MAX_PLANS),
        ));
    }
    if let Some(error) = beat.plans.iter().find_map(|p| policy::check_plan(p).err()) {
        tracing::info!("refused a heartbeat of rack {peer}: {error}");
        return Err(wire::Response::error(400, format!("refused: {error}")));
    }
    let me = node.identity.name.clone();
    {
        let mut runtime = node.runtime();
        let entry = runtime.entry(peer.to_owned()).or_default();
        entry.last_heartbeat_ms = Some(now_ms());
        entry.plans = beat.plans.into_iter().filter(|p| p.failover_to.contains(&me)).collect();
    }
    // A refused takeover ran nothing here: the peer keeps its own copies.
    let takeovers = node
        .takeovers()
        .iter()
        .filter(|t| t.peer == peer && t.state != super::failover::REFUSED)
        .map(|t| TakeoverNotice { deployment: t.deployment.clone(), epoch: t.epoch, at_ms: t.lease_expired_ms })
        .collect();
    Ok(wire::Response::json(&HeartbeatReply { rack: me, takeovers }))
}

fn images(node: &Node) -> Answer {
    let images = node.rack.store().images().map_err(internal)?;
    let list: Vec<PeerImage> = images.into_iter().map(|i| PeerImage { id: i.id, name: i.name }).collect();
    Ok(wire::Response::json(&list))
}

fn image_id(node: &Node, id: &str) -> Result<ImageId, wire::Response> {
    let known = node.rack.store().images().map_err(internal)?.iter().any(|i| i.id == id);
    let parsed = hex::decode(id).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).map(ImageId);
    match parsed {
        Some(parsed) if known => Ok(parsed),
        _ => Err(wire::Response::error(404, format!("this rack has no image {id}"))),
    }
}

/// The image's meta: preamble and signed header, everything but the chunks.
fn header(node: &Node, id: &str) -> Answer {
    let id = image_id(node, id)?;
    let meta = LocalChunks::new(&node.rack)
        .meta(&id)
        .ok_or_else(|| wire::Response::error(404, format!("the meta of image {id} is not readable here")))?;
    Ok(wire::Response::ok(meta))
}

/// A JSON list of chunk hashes.
fn wanted_chunks(body: &[u8]) -> Result<Vec<[u8; 32]>, wire::Response> {
    let wanted: Vec<String> =
        serde_json::from_slice(body).map_err(|e| wire::Response::error(400, format!("not a chunk list: {e}")))?;
    if wanted.len() > MAX_CHUNKS_PER_REQUEST {
        return Err(wire::Response::error(413, format!("ask for at most {MAX_CHUNKS_PER_REQUEST} chunks at once")));
    }
    wanted
        .iter()
        .map(|text| {
            hex::decode(text)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| wire::Response::error(400, format!("{text:?} is not a chunk hash")))
        })
        .collect()
}

fn has_chunks(node: &Node, body: &[u8]) -> Answer {
    let wanted = wanted_chunks(body)?;
    let local = LocalChunks::new(&node.rack);
    Ok(wire::Response::json(&wanted.iter().map(|h| local.has(h)).collect::<Vec<bool>>()))
}

/// The asked-for chunks in the order asked, each as a u32 LE length and its bytes; the client
/// checks each against its hash.
fn chunks(node: &Node, body: &[u8]) -> Answer {
    let wanted = wanted_chunks(body)?;
    let local = LocalChunks::new(&node.rack);
    let mut out = Vec::new();
    for hash in &wanted {
        let mut chunk = local
            .get(hash)
            .or_else(|| served_volume_chunk(node, hash))
            .ok_or_else(|| wire::Response::error(404, format!("this rack has no chunk {}", hex::encode(hash))))?;
        // Test hook (serve --test-corrupt-chunks N): damage the next N chunks sent, as a bad link would.
        let damaged = node
            .corrupt_budget
            .fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |n| {
                n.checked_sub(1)
            })
            .is_ok();
        if damaged && let Some(first) = chunk.first_mut() {
            *first ^= 0xff;
        }
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        out.extend_from_slice(&chunk);
    }
    Ok(wire::Response::ok(out))
}

fn served_volume_chunk(node: &Node, hash: &[u8; 32]) -> Option<Vec<u8>> {
    let id = ChunkId(*hash);
    let served = node.served_volumes.lock().unwrap_or_else(|p| p.into_inner());
    served.values().find_map(|v| v.chunks.get(&id).cloned())
}

/// One latest snapshot per peer and deployment, so two peers pulling at once do not replace
/// each other's snapshot between listing it and reading it.
fn served_key(peer: &str, deployment: &str) -> String {
    format!("{peer}/{deployment}")
}

fn check_volume_peer(node: &Node, peer: &str, deployment: &str) -> Result<(), wire::Response> {
    policy::check_name("deployment", deployment).map_err(|e| wire::Response::error(400, e))?;
    let allowed = node.plans().get(deployment).is_some_and(|racks| racks.iter().any(|r| r == peer));
    if allowed {
        Ok(())
    } else {
        Err(wire::Response::error(
            403,
            format!("deployment {deployment} does not fail over to {peer}, so its volume is not shared with it"),
        ))
    }
}

/// Takes a snapshot of a deployment's volume now, for a peer the deployment fails over to, and
/// answers its sequence number (a JSON list of one). The time is taken before the file is read,
/// so every write acknowledged before it is in the snapshot.
fn snapshot_volume(node: &Node, peer: &str, deployment: &str) -> Answer {
    check_volume_peer(node, peer, deployment)?;
    let taken_ms = now_ms();
    let seq = node.volume_seq.fetch_add(1, Ordering::SeqCst) + 1;
    let path = node
        .volume_path(deployment)
        .ok_or_else(|| wire::Response::error(404, format!("deployment {deployment} has no volume on this rack")))?;
    let (snapshot, bytes) = VolumeSnapshot::capture(deployment, &path, seq, taken_ms)
        .map_err(|e| wire::Response::error(404, format!("deployment {deployment} has no volume: {e}")))?;
    let chunks = snapshot.chunks.iter().copied().zip(bytes).collect();
    node.served_volumes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(served_key(peer, deployment), Arc::new(ServedVolume { snapshot, chunks }));
    Ok(wire::Response::json(&[seq]))
}

fn served_snapshot(node: &Node, peer: &str, deployment: &str, seq: &str) -> Answer {
    check_volume_peer(node, peer, deployment)?;
    let served =
        node.served_volumes.lock().unwrap_or_else(|p| p.into_inner()).get(&served_key(peer, deployment)).cloned();
    match served {
        Some(served) if seq.parse() == Ok(served.snapshot.seq) => Ok(wire::Response::ok(served.snapshot.encode())),
        _ => Err(wire::Response::error(404, format!("no snapshot {seq} of deployment {deployment}'s volume"))),
    }
}
