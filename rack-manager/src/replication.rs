//! Background replication of the rack's image store (see [`crate::rack::image_store`]) to the
//! cloud and from other racks, and its status.
//!
//! - `image push` stores the image's meta and chunks in `<data-dir>/replica/` (as well as the
//!   verified `.mast` file the agents boot from).
//! - With `serve --cloud s3://BUCKET?endpoint=…&rack=NAME`, a background thread pushes every
//!   image to the bucket, learns (eagerly) the metas of every image other racks pushed there and
//!   registers them here, trickles their chunks in under `--replicate-rate`, and snapshots the
//!   rack's volumes (`<data-dir>/volumes/*.img`, and `--replicate-volume NAME=PATH`) every
//!   `--volume-snapshot-every` seconds, moving only changed chunks.
//! - Launching an image whose `.mast` file is not here yet assembles it from the store, fetching
//!   the missing chunks first ([`Rack::materialize`]); it is verified again before it is written.
//! - `GET /v1/replication` (`Replication::status`) is `rack-manager replicate status`.
//!
//! Peer racks add their remotes with `rack.replication.replicator.add_remote(…)`.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use images::artifact::ImageId;
use replica::{Remote, Replicator, S3Remote};

use crate::rack::Rack;

/// How often the background thread trickles chunks (and checks whether other work is due).
const BACKGROUND_TICK: Duration = Duration::from_secs(1);

/// How often the remotes are asked for new images (one listing per remote) and the cloud bucket
/// for racks this one has not seen yet.
const META_PULL: Duration = Duration::from_secs(5);

/// Runs the background replication forever: discover racks in the bucket, pull metas (and
/// register the images), push this rack's images, snapshot volumes, trickle chunks.
pub fn run(rack: &Rack) {
    let replication = &rack.replication;
    let mut last_pull: Option<Instant> = None;
    let mut last_volumes = Instant::now();
    let mut reported: HashSet<ImageId> = HashSet::new();
    loop {
        if last_pull.is_none_or(|t| t.elapsed() >= META_PULL) {
            last_pull = Some(Instant::now());
            if let Some(cloud) = &replication.cloud {
                discover_racks(&replication.replicator, cloud);
            }
            pull(rack, &mut reported);
        }
        if let Some(cloud) = &replication.cloud {
            push_images(rack, cloud);
        }
        if last_volumes.elapsed() >= replication.volume_every && !replication.replicator.remotes().is_empty() {
            last_volumes = Instant::now();
            replication.register_volume_files();
            for (name, error) in replication.replicator.snapshot_all_volumes() {
                tracing::info!("snapshot of volume {name}: {error}");
            }
        }
        if let Err(e) = replication.replicator.trickle_tick(Instant::now()) {
            tracing::info!("background image fetch: {e}");
        }
        std::thread::sleep(BACKGROUND_TICK);
    }
}

/// Adds a remote for every other rack's namespace in the bucket.
fn discover_racks(replicator: &Replicator, cloud: &S3Remote) {
    let known: HashSet<String> = replicator.remotes().iter().map(|r| r.name()).collect();
    match cloud.racks() {
        Ok(racks) => {
            for rack in racks {
                let view = cloud.for_rack(&rack);
                if !known.contains(&view.name()) {
                    replicator.add_remote(Arc::new(view));
                }
            }
        }
        Err(e) => tracing::info!("listing racks in the cloud bucket: {e}"),
    }
}

/// Pulls new metas and registers their images, so they can be deployed (their chunks come when
/// they launch, or sooner by the trickle).
fn pull(rack: &Rack, reported: &mut HashSet<ImageId>) {
    let replicator = &rack.replication.replicator;
    // Peer racks' metas are pulled by the peer loop (crate::peer::sync), which counts them per peer.
    let remotes: Vec<_> = replicator.remotes().into_iter().filter(|r| !r.name().starts_with("peer ")).collect();
    let report = replicator.pull_metas_from(&remotes);
    for (id, why) in report.refused {
        if reported.insert(id) {
            tracing::info!("refused image {id}: {why}");
        }
    }
    for id in report.new {
        rack.register_learned(&id, "a remote");
    }
}

/// Pushes every image this rack holds in full to its cloud namespace (once per process; chunks
/// the bucket already has are not sent again).
fn push_images(rack: &Rack, cloud: &Arc<S3Remote>) {
    let replicator = &rack.replication.replicator;
    let Ok(states) = replicator.images() else { return };
    for state in states.into_iter().filter(|s| s.is_complete()) {
        if rack.replication.pushed.lock().unwrap_or_else(|p| p.into_inner()).contains(&state.id) {
            continue;
        }
        match replicator.push_image_capped(&state.id, &**cloud) {
            Ok(_) => {
                rack.replication.pushed.lock().unwrap_or_else(|p| p.into_inner()).insert(state.id);
            }
            Err(e) => {
                tracing::info!("pushing image {} to {}: {e}", state.id.short(), cloud.name());
                return;
            }
        }
    }
}
