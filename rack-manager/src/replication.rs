//! The rack's content-addressed image store and its replication to the cloud and to peers
//! (crate `replica`), wired into the manager.
//!
//! - `image push` stores the image's meta and chunks in `<data-dir>/replica/` (as well as the
//!   verified `.mast` file the agents boot from).
//! - With `serve --cloud s3://BUCKET?endpoint=…&rack=NAME`, a background thread pushes every
//!   image to the bucket, learns (eagerly) the metas of every image other racks pushed there and
//!   registers them here, trickles their chunks in under `--replicate-rate`, and snapshots the
//!   rack's volumes (`<data-dir>/volumes/*.img`, and `--replicate-volume NAME=PATH`) every
//!   `--volume-snapshot-every` seconds, moving only changed chunks.
//! - Launching an image whose `.mast` file is not here yet assembles it from the store, fetching
//!   the missing chunks first ([`materialize`]); it is verified again before it is written.
//! - `GET /v1/replication` ([`status`]) is `rack-manager replicate status`.
//!
//! Peer racks add their remotes with `rack.replication.replicator.add_remote(…)`.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use images::artifact::{self, ImageId, VerifiedHeader};
use rack_api::{
    Image, ListenPort, RestartPolicy, RestartWhen,
    replication::{ImageReplication, ReplicationStatus, ReplicationTotals, VolumeReplication},
};
use replica::{ChunkStore, Remote, Replicator, ReplicatorConfig, S3Config, S3Remote};

use crate::{
    daemon::Rack,
    datadir::{DataDir, now_ms},
};

/// How often the background thread trickles chunks (and checks whether other work is due).
const BACKGROUND_TICK: Duration = Duration::from_secs(1);

/// How often the remotes are asked for new images (one listing per remote) and the cloud bucket
/// for racks this one has not seen yet.
const META_PULL: Duration = Duration::from_secs(5);

/// `serve`'s replication flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplicationArgs {
    /// The cloud tier: an S3 bucket, `s3://BUCKET[?endpoint=URL&region=REGION&rack=NAME]`.
    /// Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the usual AWS
    /// sources); `rack` names this rack's namespace in the bucket [default: the host's name].
    /// See docs/replication.md for AWS and MinIO examples.
    #[arg(long, env = "RACK_CLOUD", value_name = "URL")]
    pub cloud: Option<String>,
    /// Cap on background transfers of image chunks (the fetch from remotes and the push to the
    /// cloud share it), in bytes per second (0: no cap). Launches are not held back by it.
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES_PER_S")]
    pub replicate_rate: u64,
    /// A volume file to snapshot to the remotes, as NAME=PATH (repeat for more). Every
    /// `<data-dir>/volumes/NAME.img` is replicated too.
    #[arg(long, value_name = "NAME=PATH", value_parser = parse_volume)]
    pub replicate_volume: Vec<(String, PathBuf)>,
    /// How often volumes are snapshotted, in seconds: the bound on their replication lag.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub volume_snapshot_every: u64,
}

fn parse_volume(text: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = text.split_once('=').ok_or_else(|| format!("{text:?} is not NAME=PATH"))?;
    replica::volume::check_volume_name(name).map_err(|e| e.to_string())?;
    Ok((name.to_owned(), PathBuf::from(path)))
}

/// The rack's replication state, shared by the API, the reconciler and the background thread.
#[derive(Debug)]
pub struct Replication {
    pub replicator: Arc<Replicator>,
    /// This rack's namespace in the cloud bucket, where its images and volumes are pushed.
    cloud: Option<Arc<S3Remote>>,
    volumes_dir: PathBuf,
    volume_every: Duration,
    /// Images already pushed to the cloud by this process.
    pushed: Mutex<HashSet<ImageId>>,
}

impl Replication {
    /// Opens `<data-dir>/replica/`, imports `.mast` files pushed before it existed, and connects
    /// the cloud remote if one is configured.
    pub fn open(
        dir: &DataDir,
        trusted: images::keys::TrustedKeys,
        args: &ReplicationArgs,
    ) -> anyhow::Result<Replication> {
        let root = dir.root().join("replica");
        let store = ChunkStore::open(&root).with_context(|| format!("opening the image store {}", root.display()))?;
        let config = ReplicatorConfig {
            trickle_rate: (args.replicate_rate > 0).then_some(args.replicate_rate),
            ..ReplicatorConfig::default()
        };
        let replicator = Arc::new(Replicator::new(Arc::new(store), trusted, config));
        import_existing(&replicator, &dir.root().join("images"));
        let cloud = match &args.cloud {
            None => None,
            Some(url) => {
                let config = S3Config::from_url(url, &host_name()).map_err(|e| anyhow::anyhow!("--cloud: {e}"))?;
                let remote = Arc::new(S3Remote::new(&config).map_err(|e| anyhow::anyhow!("--cloud: {e}"))?);
                replicator.add_remote(remote.clone());
                Some(remote)
            }
        };
        for (name, path) in &args.replicate_volume {
            replicator.register_volume(name, path)?;
        }
        Ok(Replication {
            replicator,
            cloud,
            volumes_dir: dir.root().join("volumes"),
            volume_every: Duration::from_secs(args.volume_snapshot_every.max(1)),
            pushed: Mutex::new(HashSet::new()),
        })
    }

    /// Stores a pushed image (already verified by the caller) in the chunk store.
    pub fn import(&self, bytes: &[u8]) -> Result<VerifiedHeader, artifact::VerifyError> {
        self.replicator.import_image(bytes)
    }
}

/// The host's name: the default namespace of this rack in the cloud bucket.
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    if replica::volume::check_volume_name(name).is_ok() { name.to_owned() } else { "rack".to_owned() }
}

/// Imports the `.mast` files in `images` whose metas the store lacks (images pushed before the
/// store existed). A file that does not verify is left alone: the agent refuses it too.
fn import_existing(replicator: &Replicator, images: &Path) {
    for entry in std::fs::read_dir(images).into_iter().flatten().flatten() {
        let path = entry.path();
        let Some(id) =
            path.file_stem().and_then(|s| s.to_str()).filter(|_| path.extension().is_some_and(|e| e == "mast"))
        else {
            continue;
        };
        let mut raw = [0u8; 32];
        if hex::decode_to_slice(id, &mut raw).is_err() || replicator.store().has_image_meta(&ImageId(raw)) {
            continue;
        }
        if let Ok(bytes) = std::fs::read(&path)
            && let Err(e) = replicator.import_image(&bytes)
        {
            eprintln!("rack-manager: {} was not imported into the image store: {e}", path.display());
        }
    }
}

/// The API's record of an image, from its verified header; `size` is the `.mast` file's.
pub fn image_record(header: &VerifiedHeader, size: u64) -> Image {
    let manifest = &header.body.manifest;
    Image {
        id: header.id.to_string(),
        name: manifest.name.clone(),
        version: manifest.version.clone(),
        description: manifest.description.clone(),
        arch: header.body.arch.name().to_owned(),
        signer: header.signer.to_string(),
        size,
        memory_mib: manifest.memory_mib,
        vcpus: u32::from(manifest.vcpus),
        args: manifest.args.clone(),
        listen: manifest
            .listen
            .iter()
            .filter(|l| l.protocol == images::manifest::Protocol::Tcp)
            .map(|l| ListenPort { port: l.port, protocol: l.protocol.to_string() })
            .collect(),
        restart: RestartPolicy {
            when: match manifest.restart.when {
                images::manifest::Restart::Always => RestartWhen::Always,
                images::manifest::Restart::OnFailure => RestartWhen::OnFailure,
                images::manifest::Restart::Never => RestartWhen::Never,
            },
            max_restarts: manifest.restart.max_restarts,
            backoff_ms: manifest.restart.backoff_ms,
        },
        pushed_ms: now_ms(),
    }
}

/// Makes sure `<data-dir>/images/<id>.mast` exists, assembling it from the image store (and
/// fetching the chunks it lacks from the remotes) when it does not. Called before a launch.
pub fn materialize(rack: &Rack, id: &str) -> Result<(), String> {
    let path = rack.dir.image(id);
    if path.exists() {
        return Ok(());
    }
    let mut raw = [0u8; 32];
    hex::decode_to_slice(id, &mut raw).map_err(|_| format!("{id:?} is not an image id"))?;
    let replicator = &rack.replication.replicator;
    let started = Instant::now();
    let before = replicator.stats().bytes_fetched;
    let bytes = replicator.assemble(&ImageId(raw)).map_err(|e| format!("assembling image {id}: {e}"))?;
    // Every chunk was checked on its way in; the whole file is checked again like any push.
    artifact::verify(&bytes, &rack.trusted).map_err(|e| format!("the assembled image {id} was refused: {e}"))?;
    let aside = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&aside, &bytes)
        .and_then(|()| std::fs::rename(&aside, &path))
        .map_err(|e| format!("storing image {id}: {e}"))?;
    eprintln!(
        "rack-manager: image {} assembled for launch in {:.2} s ({} bytes fetched)",
        crate::datadir::short_id(id),
        started.elapsed().as_secs_f64(),
        replicator.stats().bytes_fetched - before
    );
    Ok(())
}

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
            register_volume_files(replication);
            for (name, error) in replication.replicator.snapshot_all_volumes() {
                eprintln!("rack-manager: snapshot of volume {name}: {error}");
            }
        }
        if let Err(e) = replication.replicator.trickle_tick(Instant::now()) {
            eprintln!("rack-manager: background image fetch: {e}");
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
        Err(e) => eprintln!("rack-manager: listing racks in the cloud bucket: {e}"),
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
            eprintln!("rack-manager: refused image {id}: {why}");
        }
    }
    for id in report.new {
        register_learned(rack, &id, "a remote");
    }
}

/// Registers image `id`, whose verified meta the image store holds, in the rack's store, so it
/// can be deployed before its chunks are here (a launch fetches them; the trickle fills them in).
pub fn register_learned(rack: &Rack, id: &ImageId, from: &str) {
    let replicator = &rack.replication.replicator;
    let Ok(header) = replicator.local_header(id) else { return };
    let meta_len = replicator.store().image_meta(id).map(|m| m.len() as u64).unwrap_or(0);
    let record = image_record(&header, meta_len + artifact::stored_bytes(&header.body));
    let mut store = rack.store();
    let known = store.images().map(|images| images.iter().any(|i| i.id == record.id)).unwrap_or(true);
    if !known && let Err(e) = store.put_image(&record) {
        eprintln!("rack-manager: registering replicated image {id}: {e}");
    } else if !known {
        eprintln!("rack-manager: learned image {} {} ({}) from {from}", record.name, record.version, header.id.short());
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
                eprintln!("rack-manager: pushing image {} to {}: {e}", state.id.short(), cloud.name());
                return;
            }
        }
    }
}

/// Registers every `<data-dir>/volumes/NAME.img`.
fn register_volume_files(replication: &Replication) {
    for entry in std::fs::read_dir(&replication.volumes_dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "img")
            && let Some(name) = path.file_stem().and_then(|s| s.to_str())
            && replica::volume::check_volume_name(name).is_ok()
        {
            let _ = replication.replicator.register_volume(name, &path);
        }
    }
}

/// `GET /v1/replication`.
pub fn status(rack: &Rack) -> Result<ReplicationStatus, String> {
    let replication = &rack.replication;
    let replicator = &replication.replicator;
    let now = now_ms();
    let images = replicator
        .images()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|state| {
            let since = replicator.store().image_meta_stored_ms(&state.id).unwrap_or(now);
            ImageReplication {
                id: state.id.to_string(),
                name: state.name.clone(),
                version: state.version.clone(),
                total_bytes: state.total_bytes,
                local_bytes: state.local_bytes,
                behind_bytes: state.total_bytes - state.local_bytes,
                lag_ms: if state.is_complete() { 0 } else { now.saturating_sub(since) },
            }
        })
        .collect();
    register_volume_files(replication);
    let mut volumes = Vec::new();
    for (name, path) in replicator.registered_volumes() {
        let last = replicator.last_snapshot(&name).ok().flatten();
        let behind = replicator.volume_bytes_behind(&name, &path);
        volumes.push(VolumeReplication {
            local_bytes: std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
            behind_bytes: behind.as_ref().copied().unwrap_or(0),
            snapshot_seq: last.as_ref().map(|s| s.seq),
            snapshot_ms: last.as_ref().map(|s| s.captured_ms),
            lag_ms: last.as_ref().map(|s| now.saturating_sub(s.captured_ms)),
            snapshot_every_ms: replication.volume_every.as_millis() as u64,
            error: replicator.volume_error(&name).or(behind.err().map(|e| e.to_string())),
            name,
        });
    }
    let stats = replicator.stats();
    Ok(ReplicationStatus {
        remotes: replicator.remotes().iter().map(|r| r.name()).collect(),
        trickle_rate: replicator.config().trickle_rate,
        images,
        volumes,
        totals: ReplicationTotals {
            chunks_fetched: stats.chunks_fetched,
            bytes_fetched: stats.bytes_fetched,
            chunks_pushed: stats.chunks_pushed,
            bytes_pushed: stats.bytes_pushed,
            corrupt_chunks: stats.corrupt_chunks,
            refused_images: stats.refused_images,
        },
    })
}
