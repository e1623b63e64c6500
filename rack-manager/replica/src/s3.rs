//! [`S3Remote`]: the cloud tier, on any S3-compatible object store (AWS S3, MinIO, moto, …)
//! through the `object_store` crate.
//!
//! Key layout in the bucket:
//! ```text
//! chunks/<aa>/<64 hex>                      chunks, shared by every rack (content addressed)
//! racks/<rack>/images/<image id>.meta       image metas each rack pushed
//! racks/<rack>/volumes/<name>/<seq>.snap    volume snapshots each rack pushed
//! ```
//! An `S3Remote` stands for one rack's namespace ([`S3Config::rack`]); [`S3Remote::for_rack`]
//! gives a view of another rack's (to pull the images rack A pushed into rack B), sharing the
//! connection pool and runtime.
//!
//! `object_store` is async; the rack manager is not. Each `S3Remote` owns a small tokio runtime
//! and blocks on it, so its methods must not be called from inside another tokio runtime.

use std::{fmt, sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use images::artifact::ImageId;
use object_store::{ObjectStore, PutPayload, RetryConfig, aws::AmazonS3Builder, path::Path as ObjectPath};

use crate::{ChunkId, Remote, RemoteError, VolumeSnapshot, volume::check_volume_name};

/// How many requests `has_chunks` and `get_chunks` keep in flight at once.
const CONCURRENT_REQUESTS: usize = 32;

/// Where the cloud tier is and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// The S3 API's URL, for servers other than AWS (`http://127.0.0.1:9000` for a local MinIO).
    /// `None`: AWS, at the region's endpoint.
    pub endpoint: Option<String>,
    pub region: String,
    /// Credentials; when absent, the usual AWS sources are used (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, instance metadata, …).
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Allow `http://` endpoints (a local test server or a MinIO without TLS).
    pub allow_http: bool,
    /// This rack's namespace in the bucket.
    pub rack: String,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("allow_http", &self.allow_http)
            .field("rack", &self.rack)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// Parses `s3://BUCKET[?endpoint=URL&region=REGION&rack=NAME]`. An `http://` endpoint turns
    /// on `allow_http`. Credentials come from the environment (see [`S3Config::access_key_id`]).
    pub fn from_url(url: &str, default_rack: &str) -> Result<S3Config, String> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| format!("{url:?} is not an s3:// URL"))?;
        let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
        let bucket = bucket.trim_end_matches('/');
        if bucket.is_empty() || bucket.contains('/') {
            return Err(format!("{url:?}: name the bucket alone, as s3://BUCKET"));
        }
        let mut config = S3Config {
            bucket: bucket.to_owned(),
            endpoint: None,
            region: std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()).unwrap_or_else(|| "us-east-1".into()),
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
            rack: default_rack.to_owned(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "endpoint" => {
                    config.allow_http = value.starts_with("http://");
                    config.endpoint = Some(value.to_owned());
                }
                "region" => config.region = value.to_owned(),
                "rack" => config.rack = value.to_owned(),
                other => return Err(format!("{url:?}: unknown option {other:?} (known: endpoint, region, rack)")),
            }
        }
        check_volume_name(&config.rack).map_err(|_| format!("{:?} is not a usable rack name", config.rack))?;
        Ok(config)
    }
}

/// One rack's namespace in an S3 bucket, as a [`Remote`].
pub struct S3Remote {
    store: Arc<dyn ObjectStore>,
    runtime: Arc<tokio::runtime::Runtime>,
    bucket: String,
    rack: String,
}

impl fmt::Debug for S3Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Remote").field("bucket", &self.bucket).field("rack", &self.rack).finish_non_exhaustive()
    }
}

impl S3Remote {
    /// Connects lazily: nothing is sent until the first call.
    pub fn new(config: &S3Config) -> Result<S3Remote, RemoteError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http)
            .with_retry(RetryConfig {
                backoff: Default::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
            });
        if let Some(endpoint) = &config.endpoint {
            // Servers other than AWS are addressed by path (http://host/bucket/key).
            builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
        }
        let store = builder.build().map_err(|e| RemoteError::Transport(format!("configuring S3: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-remote")
            .enable_all()
            .build()
            .map_err(|e| RemoteError::Transport(format!("starting the S3 client's runtime: {e}")))?;
        Ok(S3Remote {
            store: Arc::new(store),
            runtime: Arc::new(runtime),
            bucket: config.bucket.clone(),
            rack: config.rack.clone(),
        })
    }

    /// The same bucket, seen as rack `rack`'s namespace.
    pub fn for_rack(&self, rack: &str) -> S3Remote {
        S3Remote {
            store: self.store.clone(),
            runtime: self.runtime.clone(),
            bucket: self.bucket.clone(),
            rack: rack.to_owned(),
        }
    }

    /// The rack names that have pushed anything to the bucket.
    pub fn racks(&self) -> Result<Vec<String>, RemoteError> {
        let prefix = ObjectPath::from("racks");
        let listed =
            self.block_on(self.store.list_with_delimiter(Some(&prefix))).map_err(|e| map_error(e, "racks/"))?;
        Ok(listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_owned)).collect())
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    fn chunk_key(id: &ChunkId) -> ObjectPath {
        ObjectPath::from(format!("chunks/{}/{}", id.shard(), id.hex()))
    }

    fn meta_key(&self, id: &ImageId) -> ObjectPath {
        ObjectPath::from(format!("racks/{}/images/{id}.meta", self.rack))
    }

    fn volumes_prefix(&self) -> ObjectPath {
        ObjectPath::from(format!("racks/{}/volumes", self.rack))
    }

    fn snapshot_key(&self, volume: &str, seq: u64) -> ObjectPath {
        ObjectPath::from(format!("racks/{}/volumes/{volume}/{seq}.snap", self.rack))
    }

    async fn get_bytes(&self, key: &ObjectPath) -> Result<Vec<u8>, RemoteError> {
        let result = self.store.get(key).await.map_err(|e| map_error(e, key.as_ref()))?;
        let bytes = result.bytes().await.map_err(|e| map_error(e, key.as_ref()))?;
        Ok(bytes.to_vec())
    }

    async fn put_bytes(&self, key: &ObjectPath, bytes: &[u8]) -> Result<(), RemoteError> {
        self.store.put(key, PutPayload::from(bytes.to_vec())).await.map_err(|e| map_error(e, key.as_ref()))?;
        Ok(())
    }

    async fn exists(&self, key: &ObjectPath) -> Result<bool, RemoteError> {
        match self.store.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(map_error(e, key.as_ref())),
        }
    }
}

fn map_error(error: object_store::Error, key: &str) -> RemoteError {
    match error {
        object_store::Error::NotFound { .. } => RemoteError::NotFound(key.to_owned()),
        e @ (object_store::Error::Unauthenticated { .. } | object_store::Error::PermissionDenied { .. }) => {
            RemoteError::Unauthorized(format!("{key}: {e}"))
        }
        e => RemoteError::Transport(format!("{key}: {e}")),
    }
}

impl Remote for S3Remote {
    fn name(&self) -> String {
        format!("s3://{}/racks/{}", self.bucket, self.rack)
    }

    fn list_images(&self) -> Result<Vec<ImageId>, RemoteError> {
        let prefix = ObjectPath::from(format!("racks/{}/images", self.rack));
        let objects: Vec<_> = self
            .block_on(self.store.list(Some(&prefix)).try_collect::<Vec<_>>())
            .map_err(|e| map_error(e, prefix.as_ref()))?;
        let mut ids: Vec<ImageId> = objects
            .iter()
            .filter_map(|o| o.location.filename()?.strip_suffix(".meta").map(str::to_owned))
            .filter_map(|hex_id| {
                let mut id = [0u8; 32];
                hex::decode_to_slice(&hex_id, &mut id).ok().map(|()| ImageId(id))
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn get_image_meta(&self, id: &ImageId) -> Result<Vec<u8>, RemoteError> {
        self.block_on(self.get_bytes(&self.meta_key(id)))
    }

    fn put_image_meta(&self, id: &ImageId, meta: &[u8]) -> Result<(), RemoteError> {
        self.block_on(self.put_bytes(&self.meta_key(id), meta))
    }

    fn has_chunks(&self, ids: &[ChunkId]) -> Result<Vec<bool>, RemoteError> {
        // S3 has no batch HEAD: keep many in flight on one connection pool instead.
        self.block_on(
            futures::stream::iter(ids.iter().map(|id| async move { self.exists(&Self::chunk_key(id)).await }))
                .buffered(CONCURRENT_REQUESTS)
                .try_collect(),
        )
    }

    fn get_chunk(&self, id: &ChunkId) -> Result<Vec<u8>, RemoteError> {
        self.block_on(self.get_bytes(&Self::chunk_key(id)))
    }

    fn get_chunks(&self, ids: &[ChunkId]) -> Vec<Result<Vec<u8>, RemoteError>> {
        self.block_on(
            futures::stream::iter(ids.iter().map(|id| async move { self.get_bytes(&Self::chunk_key(id)).await }))
                .buffered(CONCURRENT_REQUESTS)
                .collect(),
        )
    }

    fn put_chunk(&self, id: &ChunkId, bytes: &[u8]) -> Result<(), RemoteError> {
        self.block_on(self.put_bytes(&Self::chunk_key(id), bytes))
    }

    fn list_volumes(&self) -> Result<Vec<String>, RemoteError> {
        let prefix = self.volumes_prefix();
        let listed =
            self.block_on(self.store.list_with_delimiter(Some(&prefix))).map_err(|e| map_error(e, prefix.as_ref()))?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .filter(|n| check_volume_name(n).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    fn list_volume_snapshots(&self, volume: &str) -> Result<Vec<u64>, RemoteError> {
        if check_volume_name(volume).is_err() {
            return Ok(Vec::new());
        }
        let prefix = ObjectPath::from(format!("racks/{}/volumes/{volume}", self.rack));
        let objects: Vec<_> = self
            .block_on(self.store.list(Some(&prefix)).try_collect::<Vec<_>>())
            .map_err(|e| map_error(e, prefix.as_ref()))?;
        let mut seqs: Vec<u64> =
            objects.iter().filter_map(|o| o.location.filename()?.strip_suffix(".snap")?.parse().ok()).collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    fn get_volume_snapshot(&self, volume: &str, seq: u64) -> Result<VolumeSnapshot, RemoteError> {
        check_volume_name(volume).map_err(|e| RemoteError::NotFound(e.to_string()))?;
        let key = self.snapshot_key(volume, seq);
        let bytes = self.block_on(self.get_bytes(&key))?;
        VolumeSnapshot::decode(&bytes).map_err(|e| RemoteError::Corrupt(format!("{key}: {e}")))
    }

    fn put_volume_snapshot(&self, snapshot: &VolumeSnapshot) -> Result<(), RemoteError> {
        check_volume_name(&snapshot.volume).map_err(|e| RemoteError::Corrupt(e.to_string()))?;
        self.block_on(self.put_bytes(&self.snapshot_key(&snapshot.volume, snapshot.seq), &snapshot.encode()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_urls_parse_and_mistakes_are_named() {
        let config = S3Config::from_url("s3://mast?endpoint=http://127.0.0.1:9000&region=eu-west-1&rack=lisbon-1", "x")
            .expect("valid");
        assert_eq!(config.bucket, "mast");
        assert_eq!(config.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(config.allow_http, "an http:// endpoint is allowed");
        assert_eq!((config.region.as_str(), config.rack.as_str()), ("eu-west-1", "lisbon-1"));
        let aws = S3Config::from_url("s3://mast-images/", "rack-a").expect("valid");
        assert_eq!((aws.endpoint.as_deref(), aws.allow_http, aws.rack.as_str()), (None, false, "rack-a"));
        for (bad, why) in [
            ("http://mast", "not an s3:// URL"),
            ("s3://", "name the bucket"),
            ("s3://a/b", "name the bucket"),
            ("s3://mast?colour=red", "unknown option \"colour\""),
            ("s3://mast?rack=../x", "not a usable rack name"),
        ] {
            let error = S3Config::from_url(bad, "x").expect_err(bad);
            assert!(error.contains(why), "{bad}: {error}");
        }
        assert!(!format!("{:?}", S3Config { secret_access_key: Some("hush".into()), ..aws }).contains("hush"));
    }
}
