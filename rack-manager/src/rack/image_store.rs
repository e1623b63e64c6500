//! The rack's content-addressed image store (crate `replica`): every pushed image's meta and
//! chunks in `<data-dir>/replica/`, the remotes it replicates with (the cloud tier given by
//! `serve --cloud`, peer racks), and the volumes it snapshots. The rack core owns it; the
//! background loop in [`crate::replication`] drives its transfers.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use images::artifact::{self, ImageId, VerifiedHeader};
use rack_api::{
    Image, ListenPort, RestartPolicy, RestartWhen,
    replication::{ImageReplication, ReplicationStatus, ReplicationTotals, VolumeReplication},
};
use replica::{ChunkStore, Replicator, ReplicatorConfig, S3Config, S3Remote};

use crate::{clock::now_ms, datadir::DataDir};

/// `serve`'s replication flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplicationArgs {
    /// The cloud tier: an S3 bucket, `s3://BUCKET[?endpoint=URL&region=REGION&rack=NAME]`.
    /// Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the usual AWS
    /// sources); `rack` names this rack's namespace in the bucket [default: the host's name].
    /// See docs/replication.md for AWS and MinIO examples.
    #[arg(long, env = "RACK_CLOUD", hide_env_values = true, value_name = "URL")]
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

/// The rack's image store and its replication state, shared by the core and the background loop.
#[derive(Debug)]
pub struct Replication {
    pub replicator: Arc<Replicator>,
    /// This rack's namespace in the cloud bucket, where its images and volumes are pushed.
    pub(crate) cloud: Option<Arc<S3Remote>>,
    pub(crate) volumes_dir: PathBuf,
    pub(crate) volume_every: Duration,
    /// Images already pushed to the cloud by this process.
    pub(crate) pushed: Mutex<HashSet<ImageId>>,
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

    /// Registers every `<data-dir>/volumes/NAME.img`.
    pub fn register_volume_files(&self) {
        let replication = self;
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

    /// What is replicated and how far behind: `GET /v1/replication`.
    pub fn status(&self) -> Result<ReplicationStatus, String> {
        let replication = self;
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
        replication.register_volume_files();
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
            tracing::info!("{} was not imported into the image store: {e}", path.display());
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
        platform: String::new(),
    }
}
