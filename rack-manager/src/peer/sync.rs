//! The loops that keep peers in step: heartbeats (and, in their replies, news of takeovers), and
//! replication of images and volume snapshots.
//!
//! Images are pulled, not pushed: a rack lists each peer's images and fetches those it lacks.
//! For each, it first fetches the signed header alone and checks the signature against its own
//! trusted keys (an image from an untrusted key costs one header and is never stored), then only
//! the chunks none of its own images already has, checking each chunk's BLAKE3 hash and fetching
//! a damaged one again. The assembled image then goes through the rack API's `image push`, which
//! verifies it in full once more before storing it.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    thread,
    time::Duration,
};

use images::artifact;
use rack_api::{Desired, InstanceState};

use images::artifact::ImageId;
use replica::{ChunkId, Remote};

use super::{Heartbeat, HeartbeatReply, Node, PeerEntry, PlanSpec, local::LocalChunks, remote::PeerRemote};
use crate::{datadir::now_ms, reconcile::run_ref};

/// Chunks per round of fetching (and of refetching damaged ones).
const CHUNK_BATCH: usize = super::remote::CHUNK_BATCH;
/// Attempts at a chunk whose bytes do not match its hash.
const CHUNK_ATTEMPTS: u32 = 4;

pub fn spawn(node: Arc<Node>) {
    let beats = node.clone();
    thread::spawn(move || {
        // At a fixed rate, not a fixed pause: peers bound the data-loss window by one interval.
        let mut next = std::time::Instant::now();
        loop {
            // In parallel: a peer that does not answer must not delay the others' heartbeats
            // past their lease.
            let peers = beats.peers();
            thread::scope(|scope| {
                for peer in &peers {
                    let beats = &beats;
                    scope.spawn(move || beat(beats, peer, beats.heartbeat));
                }
            });
            next += beats.heartbeat;
            let now = std::time::Instant::now();
            match next.checked_duration_since(now) {
                Some(pause) => thread::sleep(pause),
                None => next = now,
            }
        }
    });
    thread::spawn(move || {
        loop {
            for peer in node.peers() {
                if node.partitioned() {
                    break;
                }
                let reachable = node.runtime().get(&peer.name).is_some_and(|r| r.last_error.is_none());
                if reachable && let Err(error) = replicate(&node, &peer) {
                    eprintln!("rack-manager: replicating from peer {}: {error:#}", peer.name);
                }
            }
            thread::sleep(node.heartbeat.max(Duration::from_millis(500)));
        }
    });
}

/// One heartbeat round with every peer, before the reconciler's first pass: a rack that was away
/// learns which of its deployments were taken over, and stops them before it could restart them.
/// Peers that cannot be reached are skipped (they cannot have taken over what they cannot see
/// as down... unless they are partitioned from us, which the heartbeat loop handles on heal).
pub fn fence_at_start(node: &Node) {
    for peer in node.peers() {
        beat(node, &peer, Duration::from_secs(2));
    }
}

/// The plans of this rack's deployments that name `peer`.
fn plans_for(node: &Node, peer: &str) -> Vec<PlanSpec> {
    let plans = node.plans();
    let Ok(deployments) = node.rack.store().deployments() else { return Vec::new() };
    deployments
        .into_iter()
        .filter_map(|d| {
            let racks = plans.get(&d.id)?;
            racks.iter().any(|r| r == peer).then(|| PlanSpec {
                has_volume: node.volume_path(&d.id).is_some(),
                deployment: d.id,
                image_id: d.image_id,
                image_name: d.image_name,
                replicas: d.replicas,
                memory_mib: d.memory_mib,
                vcpus: d.vcpus,
                args: d.args,
                restart: d.restart.when,
                failover_to: racks.clone(),
            })
        })
        .collect()
}

fn beat(node: &Node, peer: &PeerEntry, timeout: Duration) {
    let result = (|| -> anyhow::Result<HeartbeatReply> {
        anyhow::ensure!(!node.partitioned(), "partitioned (test hook {})", node.dir.join("partitioned").display());
        let client = node.client(peer, timeout)?;
        let beat =
            Heartbeat { rack: node.identity.name.clone(), sent_ms: now_ms(), plans: plans_for(node, &peer.name) };
        let body = serde_json::to_vec(&beat)?;
        let reply: HeartbeatReply = serde_json::from_slice(&client.call("POST", "/peer/v1/heartbeat", &body)?.body)?;
        anyhow::ensure!(reply.rack == peer.name, "the peer at {} calls itself {:?}", peer.url, reply.rack);
        Ok(reply)
    })();
    let reply = {
        let mut runtime = node.runtime();
        let entry = runtime.entry(peer.name.clone()).or_default();
        match result {
            Ok(reply) => {
                entry.last_reply_ms = Some(now_ms());
                entry.last_error = None;
                reply
            }
            Err(error) => {
                entry.last_error = Some(format!("{error:#}"));
                return;
            }
        }
    };
    if !reply.takeovers.is_empty() {
        fence(node, &peer.name, &reply);
    }
}

/// Stops this rack's instances of deployments that `peer` has taken over, for good: they stay
/// listed, stopped, with a message that says why; nothing restarts them.
fn fence(node: &Node, peer: &str, reply: &HeartbeatReply) {
    let rack = &node.rack;
    let mut store = rack.store();
    let Ok(records) = store.instances() else { return };
    let mut fenced = Vec::new();
    for mut record in records {
        let Some(notice) = reply.takeovers.iter().find(|n| n.deployment == record.deployment) else { continue };
        if record.desired != Desired::Running {
            continue;
        }
        if record.state == InstanceState::Running
            && let Some(agent) = rack.agent(&record.host)
            && let Err(error) = agent.stop(&run_ref(&record))
        {
            eprintln!("rack-manager: stopping {} (taken over by {peer}): {error}", record.id);
        }
        record.desired = Desired::Stopped;
        record.state = InstanceState::Stopped;
        record.pid = None;
        record.message = Some(format!(
            "rack {peer} took this deployment over (epoch {}) while this rack was down; not started here again",
            notice.epoch
        ));
        fenced.push(record);
    }
    if fenced.is_empty() {
        return;
    }
    eprintln!("rack-manager: {} instance(s) stay stopped: rack {peer} took their deployments over", fenced.len());
    if let Err(error) = store.update_instances(&fenced) {
        eprintln!("rack-manager: recording the takeover by {peer}: {error}");
    }
}

/// One replication pass from `peer`: volume snapshots of the deployments that fail over here,
/// then every image this rack lacks.
fn replicate(node: &Node, peer: &PeerEntry) -> anyhow::Result<()> {
    let remote = PeerRemote::new(&peer.name, node.client(peer, Duration::from_secs(60))?);
    let plans = node.runtime().get(&peer.name).map(|r| r.plans.clone()).unwrap_or_default();
    for plan in plans.iter().filter(|p| p.has_volume) {
        // The replica crate's restore: the peer takes a snapshot, and only the chunks that differ
        // from this rack's copy are fetched (each verified), then the copy is replaced at once.
        let path = node.snapshot_path(&peer.name, &plan.deployment);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let (snapshot, fetched) =
            node.rack.replication.replicator.restore_volume(&remote, &plan.deployment, None, &path)?;
        super::save_json(&path.with_extension("json"), &snapshot.captured_ms)?;
        let mut runtime = node.runtime();
        let entry = runtime.entry(peer.name.clone()).or_default();
        entry.snapshots.insert(plan.deployment.clone(), snapshot.captured_ms);
        entry.volume_bytes_fetched += fetched.bytes;
    }
    let theirs = remote.list_images()?;
    let _one_at_a_time = node.fetching.lock().unwrap_or_else(|p| p.into_inner());
    // Complete images only: one registered from its meta alone still lacks chunks this rack
    // would need if the peer went down.
    let mine: HashSet<String> =
        node.rack.store().images()?.into_iter().map(|i| i.id).filter(|id| node.image_complete(id)).collect();
    for image in theirs.iter().filter(|i| !mine.contains(&i.to_string())) {
        if let Err(error) = fetch_image(node, &peer.name, &remote, image) {
            eprintln!("rack-manager: image {image} from peer {}: {error:#}", peer.name);
        }
    }
    Ok(())
}

/// Fetches one image from a peer: header (signature checked), then only the missing chunks.
pub fn fetch_image(node: &Node, peer: &str, remote: &dyn Remote, id: &ImageId) -> anyhow::Result<()> {
    let header = remote.get_image_meta(id)?;
    let verified = match artifact::verify_header(&header, &node.rack.trusted) {
        Ok(verified) => verified,
        Err(error) => {
            node.runtime().entry(peer.to_owned()).or_default().refused_images += 1;
            anyhow::bail!("refused: {error}");
        }
    };
    anyhow::ensure!(verified.id == *id, "the peer sent the header of {} for {id}", verified.id);
    anyhow::ensure!(verified.chunks_offset as usize == header.len(), "the header has trailing bytes");
    let chunks = verified.body.distinct_chunks();
    let local = LocalChunks::new(&node.rack);
    let missing: Vec<_> = chunks.iter().filter(|c| !local.has(&c.hash)).copied().collect();
    let mut fetched: HashMap<[u8; 32], Vec<u8>> = HashMap::new();
    let (mut bytes_fetched, mut corrupt) = (0u64, 0u64);
    for batch in missing.chunks(CHUNK_BATCH) {
        let mut pending: Vec<_> = batch.to_vec();
        for attempt in 1..=CHUNK_ATTEMPTS {
            let ids: Vec<ChunkId> = pending.iter().map(|c| ChunkId(c.hash)).collect();
            let answers = remote.get_chunks(&ids);
            let mut damaged = Vec::new();
            for (chunk, answer) in pending.iter().zip(answers) {
                let bytes = answer?;
                bytes_fetched += bytes.len() as u64;
                if bytes.len() == chunk.len as usize && ChunkId(chunk.hash).matches(&bytes) {
                    fetched.insert(chunk.hash, bytes);
                } else {
                    damaged.push(*chunk);
                }
            }
            corrupt += damaged.len() as u64;
            if !damaged.is_empty() {
                eprintln!(
                    "rack-manager: {} chunk(s) of image {id} from {peer} did not match their hash (attempt {attempt}); fetching them again",
                    damaged.len()
                );
            }
            pending = damaged;
            if pending.is_empty() {
                break;
            }
        }
        anyhow::ensure!(
            pending.is_empty(),
            "{} chunk(s) stayed corrupt after {CHUNK_ATTEMPTS} attempts",
            pending.len()
        );
    }
    let mut assembled = header;
    for chunk in &chunks {
        match fetched.get(&chunk.hash) {
            Some(bytes) => assembled.extend_from_slice(bytes),
            None => {
                let bytes = local.get(&chunk.hash).ok_or_else(|| anyhow::anyhow!("a local chunk vanished"))?;
                assembled.extend_from_slice(&bytes);
            }
        }
    }
    let _: serde_json::Value = node.api.post_raw("/images", "application/octet-stream", &assembled)?;
    let mut runtime = node.runtime();
    let entry = runtime.entry(peer.to_owned()).or_default();
    entry.images_replicated += 1;
    entry.chunks_fetched += missing.len() as u64;
    entry.chunks_reused += (chunks.len() - missing.len()) as u64;
    entry.bytes_fetched += bytes_fetched;
    entry.corrupt_chunks += corrupt;
    eprintln!(
        "rack-manager: replicated image {id} from {peer}: {} of {} chunks fetched ({bytes_fetched} bytes), {corrupt} refetched",
        missing.len(),
        chunks.len()
    );
    Ok(())
}
