//! Replicator behaviour that needs no S3 server: one rack's store serves as the other's peer.

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::{Rack, Wire, assert_fetched_once, httpd_image, key, stored_bytes};
use replica::{ReplicatorConfig, StoreRemote, meta};

fn peer_of(rack: &Rack) -> Arc<StoreRemote> {
    Arc::new(StoreRemote::new("peer a", rack.replicator.store().clone(), common::trusted()))
}

#[test]
fn concurrent_callers_fetch_each_chunk_once() {
    let image = httpd_image("1", false, &key());
    let a = Rack::unlimited();
    let id = a.replicator.import_image(&image).expect("imported").id;
    let b = Rack::unlimited();
    // A slow wire, so the callers overlap for the whole transfer.
    let wire = Arc::new(Wire::slow(peer_of(&a), Duration::from_millis(2)));
    b.replicator.add_remote(wire.clone());
    std::thread::scope(|scope| {
        let callers: Vec<_> = (0..8).map(|_| scope.spawn(|| b.replicator.ensure_local(&id))).collect();
        for caller in callers {
            caller.join().expect("no panic").expect("every caller gets the image");
        }
    });
    let total = meta::split(&image, &common::trusted()).expect("splits").chunks.len();
    assert_eq!(wire.fetched().len(), total, "each chunk crossed the wire once");
    assert_fetched_once(&wire.fetched());
    assert_eq!(b.replicator.stats().bytes_fetched, stored_bytes(&image));
    assert_eq!(b.replicator.assemble(&id).expect("assembled"), image);
}

#[test]
fn the_background_trickle_stays_within_the_cap_at_each_tick() {
    let image = httpd_image("1", false, &key());
    let a = Rack::unlimited();
    let id = a.replicator.import_image(&image).expect("imported").id;
    let rate = 20_000u64; // bytes per second; the bucket holds one second's worth
    let b = Rack::new(ReplicatorConfig { trickle_rate: Some(rate), attempts: 1 });
    b.replicator.add_remote(peer_of(&a));
    assert_eq!(b.replicator.pull_metas().new, [id]);

    // Time is ours: the bucket starts full, then earns `rate` bytes per simulated second.
    let start = Instant::now();
    let first = b.replicator.trickle_tick(start).expect("tick");
    assert!(first.bytes <= rate && first.bytes > 0, "the first tick spends at most the burst: {first:?}");
    assert_eq!(b.replicator.trickle_tick(start).expect("tick").bytes, 0, "nothing left at the same instant");
    let mut earned = first.bytes;
    let mut now = start;
    let mut ticks = 0;
    while !b.replicator.image_state(&id).expect("state").is_complete() {
        now += Duration::from_secs(1);
        let moved = b.replicator.trickle_tick(now).expect("tick").bytes;
        // A tick may spend what a second earns plus what the previous ticks left unspent (less
        // than one chunk, 16 KiB at most).
        assert!(moved <= rate + (16 << 10), "tick moved {moved} bytes with a cap of {rate} B/s");
        earned += moved;
        ticks += 1;
        assert!(ticks < 1000, "the trickle stalled");
    }
    assert_eq!(earned, stored_bytes(&image));
    let seconds = (now - start).as_secs();
    assert!(earned <= rate + rate * seconds, "{earned} bytes in {seconds} simulated seconds at {rate} B/s");
    assert_eq!(b.replicator.assemble(&id).expect("assembled"), image);
}

#[test]
fn a_peer_that_receives_a_push_verifies_what_it_stores() {
    let image = httpd_image("1", false, &key());
    let a = Rack::unlimited();
    let id = a.replicator.import_image(&image).expect("imported").id;
    let b = Rack::unlimited();
    let into_b = StoreRemote::new("rack b", b.replicator.store().clone(), common::trusted());
    let sent = a.replicator.push_image(&id, &into_b).expect("pushed");
    assert_eq!(sent.bytes, stored_bytes(&image));
    assert!(b.replicator.image_state(&id).expect("meta stored").is_complete());
    // Bytes that are not the chunk they claim to be are refused.
    let chunk = replica::ChunkId::of(b"real");
    let error = replica::Remote::put_chunk(&into_b, &chunk, b"fake").expect_err("refused");
    assert!(matches!(error, replica::RemoteError::Corrupt(_)), "{error}");
    // A meta whose id does not match its contents is refused.
    let meta_bytes = a.replicator.store().image_meta(&id).expect("meta");
    let error = replica::Remote::put_image_meta(&into_b, &images::artifact::ImageId([1; 32]), &meta_bytes)
        .expect_err("wrong id");
    assert!(matches!(error, replica::RemoteError::Corrupt(_)), "{error}");
}

#[test]
fn a_chunk_damaged_on_disk_is_fetched_again_when_assembling() {
    let image = httpd_image("1", false, &key());
    let a = Rack::unlimited();
    let id = a.replicator.import_image(&image).expect("imported").id;
    let b = Rack::unlimited();
    let wire = Arc::new(Wire::new(peer_of(&a)));
    b.replicator.add_remote(wire.clone());
    b.replicator.ensure_local(&id).expect("local");
    let victim = meta::split(&image, &common::trusted()).expect("splits").chunks[5].0;
    let path = b.dir.path().join("store/chunks").join(victim.shard()).join(victim.hex());
    let mut bytes = std::fs::read(&path).expect("chunk file");
    bytes[0] ^= 1;
    std::fs::write(&path, bytes).expect("damaged");
    assert_eq!(b.replicator.assemble(&id).expect("assembled"), image);
    assert_eq!(wire.fetched().iter().filter(|c| **c == victim).count(), 2, "the damaged chunk was fetched again");
}

#[test]
fn an_image_no_remote_can_complete_does_not_hold_up_the_trickle() {
    let (v1, v2) = (httpd_image("1", false, &key()), common::httpd_image("2", true, &SigningKeyForOther::key()));
    let a = Rack::unlimited();
    a.replicator.set_trusted(images::keys::TrustedKeys::new([key().public(), SigningKeyForOther::key().public()]));
    let (id1, id2) = (a.replicator.import_image(&v1).expect("v1").id, a.replicator.import_image(&v2).expect("v2").id);
    // The peer has lost a chunk that only v1 has.
    let split1 = meta::split(&v1, &common::trusted()).expect("splits");
    let v2_chunks: std::collections::HashSet<_> =
        meta::split(&v2, &a.replicator.trusted()).expect("splits").chunks.iter().map(|(c, _)| *c).collect();
    let lost = split1.chunks.iter().map(|(c, _)| *c).find(|c| !v2_chunks.contains(c)).expect("v1 has its own chunks");
    a.store().remove(&lost);

    let b = Rack::unlimited();
    b.replicator.set_trusted(a.replicator.trusted());
    b.replicator.add_remote(peer_of(&a));
    b.replicator.pull_metas();
    let moved = b.replicator.trickle_tick(Instant::now()).expect("the tick moves what it can");
    assert!(moved.bytes > 0);
    assert!(b.replicator.image_state(&id2).expect("v2").is_complete(), "v2 arrived despite v1's lost chunk");
    let v1_state = b.replicator.image_state(&id1).expect("v1");
    assert_eq!(v1_state.missing_chunks, 1, "{v1_state:?}");
}

/// A second signer, so the two images of a test do not share a trust decision by accident.
struct SigningKeyForOther;

impl SigningKeyForOther {
    fn key() -> images::keys::SigningKey {
        images::keys::SigningKey::from_seed([12; 32])
    }
}

#[test]
fn a_capped_push_takes_at_least_as_long_as_the_cap_demands() {
    let image = httpd_image("1", false, &key());
    let rate = 200_000u64;
    let a = Rack::new(ReplicatorConfig { trickle_rate: Some(rate), attempts: 1 });
    let id = a.replicator.import_image(&image).expect("imported").id;
    let b = Rack::unlimited();
    let into_b = StoreRemote::new("rack b", b.replicator.store().clone(), common::trusted());
    let started = Instant::now();
    let sent = a.replicator.push_image_capped(&id, &into_b).expect("pushed");
    let elapsed = started.elapsed();
    assert_eq!(sent.bytes, stored_bytes(&image));
    // The bucket starts with one second's worth; the rest must be earned. A lower bound on time
    // cannot fail by the machine being slow.
    let earned_seconds = (sent.bytes - rate) as f64 / rate as f64;
    assert!(elapsed.as_secs_f64() >= earned_seconds * 0.99, "{sent:?} in {elapsed:?} at {rate} B/s");
    assert!(b.replicator.image_state(&id).expect("pushed meta").is_complete());
}

/// A remote that serves but takes no pushes, as a peer rack does.
#[derive(Debug)]
struct PullOnly(Arc<StoreRemote>);

impl replica::Remote for PullOnly {
    fn name(&self) -> String {
        "pull-only".into()
    }
    fn list_images(&self) -> Result<Vec<images::artifact::ImageId>, replica::RemoteError> {
        self.0.list_images()
    }
    fn get_image_meta(&self, id: &images::artifact::ImageId) -> Result<Vec<u8>, replica::RemoteError> {
        self.0.get_image_meta(id)
    }
    fn put_image_meta(&self, _: &images::artifact::ImageId, _: &[u8]) -> Result<(), replica::RemoteError> {
        Err(replica::RemoteError::Unauthorized("no pushes".into()))
    }
    fn has_chunks(&self, ids: &[replica::ChunkId]) -> Result<Vec<bool>, replica::RemoteError> {
        self.0.has_chunks(ids)
    }
    fn get_chunk(&self, id: &replica::ChunkId) -> Result<Vec<u8>, replica::RemoteError> {
        self.0.get_chunk(id)
    }
    fn put_chunk(&self, _: &replica::ChunkId, _: &[u8]) -> Result<(), replica::RemoteError> {
        Err(replica::RemoteError::Unauthorized("no pushes".into()))
    }
    fn list_volumes(&self) -> Result<Vec<String>, replica::RemoteError> {
        self.0.list_volumes()
    }
    fn list_volume_snapshots(&self, volume: &str) -> Result<Vec<u64>, replica::RemoteError> {
        self.0.list_volume_snapshots(volume)
    }
    fn get_volume_snapshot(&self, volume: &str, seq: u64) -> Result<replica::VolumeSnapshot, replica::RemoteError> {
        self.0.get_volume_snapshot(volume, seq)
    }
    fn put_volume_snapshot(&self, _: &replica::VolumeSnapshot) -> Result<(), replica::RemoteError> {
        Err(replica::RemoteError::Unauthorized("no pushes".into()))
    }
    fn accepts_pushes(&self) -> bool {
        false
    }
}

#[test]
fn volume_snapshots_go_to_the_remotes_that_take_pushes_and_skip_pull_only_ones() {
    use replica::Remote;
    let a = Rack::unlimited();
    let cloud = Rack::unlimited();
    let other = Rack::unlimited();
    a.replicator.add_remote(Arc::new(PullOnly(peer_of(&other))));
    let cloud_remote = Arc::new(StoreRemote::new("cloud", cloud.replicator.store().clone(), common::trusted()));
    a.replicator.add_remote(cloud_remote.clone());
    let volume = a.dir.path().join("kv.img");
    std::fs::write(&volume, vec![7u8; 200_000]).expect("the volume");
    let pushed = a.replicator.snapshot_volume("kv", &volume, 1_000).expect("a pull-only remote does not fail it");
    assert_eq!(cloud_remote.list_volume_snapshots("kv").expect("listed"), [pushed.snapshot.seq]);
    assert!(other.replicator.store().volume_snapshots("kv").expect("listed").is_empty(), "nothing pushed to it");
}
