//! The loops that keep peers in step: heartbeats (and, in their replies, news of takeovers), and
//! replication of images and volume snapshots.
//!
//! Images are pulled, not pushed. Metas come eagerly: a rack lists each peer's images and
//! fetches the meta (signed header) of those it lacks, checks the signature against its own
//! trusted keys (an image from an untrusted key costs one meta and is never stored) and
//! registers the image. Chunks come lazily, through the peer's [`PeerRemote`] registered with
//! the rack's replicator: only those no local image has, each checked against its BLAKE3 hash
//! (a damaged one is fetched again), when the image is launched here or by the background
//! trickle under `--replicate-rate`. `failover plan` shows whether an image is complete here.

use std::{sync::Arc, thread, time::Duration};

use images::artifact::ImageId;
use rack_api::peers::PeerEntry;
use replica::{ChunkId, Remote, RemoteError};

use super::{
    Heartbeat, HeartbeatReply, Node, PlanSpec,
    remote::{ChunkTally, PeerRemote},
};
use crate::clock::now_ms;

/// The largest heartbeat reply read: a list of takeover notices, small unless the peer is hostile.
const MAX_HEARTBEAT_REPLY: u64 = 1 << 20;

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
            register_remotes(&node);
            for peer in node.peers() {
                if node.partitioned() {
                    break;
                }
                let reachable = node.runtime().get(&peer.name).is_some_and(|r| r.last_error.is_none());
                if reachable && let Err(error) = replicate(&node, &peer) {
                    tracing::info!("replicating from peer {}: {error:#}", peer.name);
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
        let answer = client.call_limited("POST", "/peer/v1/heartbeat", &body, MAX_HEARTBEAT_REPLY)?;
        let reply: HeartbeatReply = serde_json::from_slice(&answer.body)?;
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
///
/// Only deployments whose failover plan (this rack's `plans.json`) names `peer` can be fenced by
/// it: a peer's word that it took over anything else is ignored (and logged once), so a pinned
/// but hostile or confused peer cannot stop this rack's other deployments.
fn fence(node: &Node, peer: &str, reply: &HeartbeatReply) {
    let plans = node.plans();
    let entitled = |deployment: &str| plans.get(deployment).is_some_and(|racks| racks.iter().any(|r| r == peer));
    let fenced: Vec<(String, String)> = reply
        .takeovers
        .iter()
        .filter(|notice| {
            if entitled(&notice.deployment) {
                return true;
            }
            if node.first_ignored_notice(peer, &notice.deployment) {
                let shown = match super::policy::check_name("deployment", &notice.deployment) {
                    Ok(()) => notice.deployment.clone(),
                    Err(_) => "(an invalid name)".to_owned(),
                };
                tracing::info!(
                    "ignoring rack {peer}'s notice that it took over deployment {shown}: that deployment \
                     does not fail over to {peer} here"
                );
            }
            false
        })
        .map(|notice| {
            let message = format!(
                "rack {peer} took this deployment over (epoch {}) while this rack was down; not started here again",
                notice.epoch
            );
            (notice.deployment.clone(), message)
        })
        .collect();
    if fenced.is_empty() {
        return;
    }
    match node.rack.fence(&fenced) {
        Ok(0) => {}
        Ok(count) => {
            tracing::info!("{count} instance(s) stay stopped: rack {peer} took their deployments over")
        }
        Err(error) => tracing::info!("recording the takeover by {peer}: {error}"),
    }
}

/// One replication pass from `peer`: volume snapshots of the deployments that fail over here,
/// then the metas of the peer's images this rack lacks (eagerly: they are small). Their chunks
/// come lazily, through the peer's remote registered with the rack's replicator: fetched when an
/// image is launched here, and trickled in the background under `--replicate-rate`.
fn replicate(node: &Node, peer: &PeerEntry) -> anyhow::Result<()> {
    let remote = PeerRemote::new(&peer.name, node.client(peer, Duration::from_secs(60))?);
    let plans = node.runtime().get(&peer.name).map(|r| r.plans.clone()).unwrap_or_default();
    for plan in plans.iter().filter(|p| p.has_volume) {
        // The replica crate's restore: the peer takes a snapshot, and only the chunks that differ
        // from this rack's copy are fetched (each verified), then the copy is replaced at once.
        let path = node.snapshot_path(&peer.name, &plan.deployment)?;
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
    let _one_at_a_time = node.fetching.lock().unwrap_or_else(|p| p.into_inner());
    let replicator = &node.rack.replication.replicator;
    for id in remote.list_images()? {
        if replicator.store().has_image_meta(&id) {
            continue;
        }
        if let Err(error) = learn_image(node, &peer.name, &remote, &id) {
            tracing::info!("image {id} from peer {}: {error:#}", peer.name);
        }
    }
    Ok(())
}

/// Learns one image of a peer from its meta alone: the signature is checked against this
/// rack's trusted keys (an image from an untrusted key costs one meta and is never stored), and
/// the image is registered, so it can be deployed at once.
fn learn_image(node: &Node, peer: &str, remote: &dyn Remote, id: &ImageId) -> anyhow::Result<()> {
    let meta = remote.get_image_meta(id)?;
    let replicator = &node.rack.replication.replicator;
    let header = match replicator.accept_meta(id, &meta) {
        Ok(header) => header,
        Err(error) => {
            if matches!(error, RemoteError::Untrusted(_) | RemoteError::Corrupt(_)) {
                node.runtime().entry(peer.to_owned()).or_default().refused_images += 1;
            }
            anyhow::bail!("refused: {error}");
        }
    };
    node.rack.register_learned(id, &format!("peer {peer}"));
    let chunks = header.body.distinct_chunks();
    let local = chunks.iter().filter(|c| replicator.store().has(&ChunkId(c.hash))).count();
    let mut runtime = node.runtime();
    let entry = runtime.entry(peer.to_owned()).or_default();
    entry.images_replicated += 1;
    entry.chunks_reused += local as u64;
    Ok(())
}

/// Keeps one [`PeerRemote`] per configured peer registered with the rack's replicator (launches
/// and the trickle fetch chunks through it), counting what it fetches in the peer's runtime
/// entry; a peer removed or changed is unregistered (and registered again as it is now).
pub fn register_remotes(node: &Arc<Node>) {
    let replicator = &node.rack.replication.replicator;
    let peers = node.peers();
    let mut registered = node.registered_remotes.lock().unwrap_or_else(|p| p.into_inner());
    registered.retain(|name, key| {
        let current = peers.iter().find(|p| &p.name == name).map(|p| format!("{} {}", p.url, p.fingerprint));
        let keep = current.as_ref() == Some(key);
        if !keep {
            replicator.remove_remote(&format!("peer {name}"));
        }
        keep
    });
    for peer in &peers {
        if registered.contains_key(&peer.name) {
            continue;
        }
        let client = match node.client(peer, Duration::from_secs(60)) {
            Ok(client) => client,
            Err(error) => {
                tracing::info!("peer {}: {error:#}", peer.name);
                continue;
            }
        };
        let (tallied, name) = (Arc::downgrade(node), peer.name.clone());
        let sink: super::remote::TallySink = Arc::new(move |tally: ChunkTally| {
            let Some(node) = tallied.upgrade() else { return };
            let mut runtime = node.runtime();
            let entry = runtime.entry(name.clone()).or_default();
            entry.chunks_fetched += tally.chunks;
            entry.bytes_fetched += tally.bytes;
            entry.corrupt_chunks += tally.corrupt;
        });
        replicator.add_remote(Arc::new(PeerRemote::new(&peer.name, client).with_tally(sink)));
        registered.insert(peer.name.clone(), format!("{} {}", peer.url, peer.fingerprint));
    }
}
