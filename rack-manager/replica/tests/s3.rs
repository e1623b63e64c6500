//! Replication through a real S3 server (`moto_server`, started per test on a loopback port).

mod common;

use std::{fs, io::Write, sync::Arc};

use common::{Rack, Wire, assert_fetched_once, httpd_image, id_of, key, new_bytes, stored_bytes};
use images::{artifact, keys::SigningKey};
use replica::{ChunkId, Remote, RemoteError, S3Remote, StoreRemote, VOLUME_CHUNK, meta, moto::MotoServer};

/// A moto server with a bucket, and rack `rack`'s view of it.
fn s3(test: &str, rack: &str) -> Option<(MotoServer, Arc<S3Remote>)> {
    let server = MotoServer::start_for(test)?;
    server.create_bucket("mast").expect("bucket created");
    let remote = S3Remote::new(&server.config("mast", rack)).expect("S3 configured");
    Some((server, Arc::new(remote)))
}

#[test]
fn an_image_pushed_to_s3_is_pulled_into_an_empty_store_byte_for_byte() {
    let Some((_server, cloud)) = s3("an_image_pushed_to_s3_is_pulled_into_an_empty_store_byte_for_byte", "a") else {
        return;
    };
    let image = httpd_image("1", false, &key());
    let (a, b) = (Rack::unlimited(), Rack::unlimited());
    let id = a.replicator.import_image(&image).expect("imported").id;
    let pushed = a.replicator.push_image(&id, &*cloud).expect("pushed");
    assert_eq!(pushed.bytes, stored_bytes(&image), "every chunk goes up once");
    assert_eq!(cloud.list_images().expect("lists"), [id]);
    let again = a.replicator.push_image(&id, &*cloud).expect("pushed again");
    assert_eq!(again.chunks, 0, "a second push finds every chunk there (batch has_chunks)");

    // Rack B sees rack A's namespace; it learns the image eagerly, then fetches its chunks.
    b.replicator.add_remote(Arc::new(cloud.for_rack("a")));
    let pulled = b.replicator.pull_metas();
    assert_eq!(pulled.new, [id], "{pulled:?}");
    let state = b.replicator.image_state(&id).expect("meta stored");
    assert_eq!((state.local_bytes, state.name.as_str()), (0, "httpd"), "metas only, no chunks yet");
    let fetched = b.replicator.ensure_local(&id).expect("fetched");
    assert_eq!(fetched.bytes, stored_bytes(&image));
    let assembled = b.replicator.assemble(&id).expect("assembled");
    assert_eq!(assembled, image, "identical bytes");
    artifact::verify(&assembled, &common::trusted()).expect("verifies end to end");
    assert!(b.replicator.image_state(&id).expect("state").is_complete());
}

#[test]
fn a_new_version_with_one_page_changed_moves_only_the_changed_chunks() {
    let Some((_server, cloud)) = s3("a_new_version_with_one_page_changed_moves_only_the_changed_chunks", "a") else {
        return;
    };
    let v1 = httpd_image("1", false, &key());
    let v2 = httpd_image("2", true, &key());
    let expected = new_bytes(&v1, &v2);
    assert!(expected > 0 && expected * 4 <= stored_bytes(&v2), "the fixture shares most chunks");

    let (a, b) = (Rack::unlimited(), Rack::unlimited());
    let (id1, id2) = (id_of(&v1), id_of(&v2));
    a.replicator.import_image(&v1).expect("v1");
    a.replicator.import_image(&v2).expect("v2");
    a.replicator.push_image(&id1, &*cloud).expect("push v1");
    let up = a.replicator.push_image(&id2, &*cloud).expect("push v2");
    assert_eq!(up.bytes, expected, "pushing v2 uploads only what v1 lacks");

    let wire = Arc::new(Wire::new(Arc::new(cloud.for_rack("a"))));
    b.replicator.add_remote(wire.clone());
    b.replicator.pull_metas();
    b.replicator.ensure_local(&id1).expect("v1 local");
    let before = wire.fetched_bytes.load(std::sync::atomic::Ordering::SeqCst);
    let down = b.replicator.ensure_local(&id2).expect("v2 local");
    let moved = wire.fetched_bytes.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!((down.bytes, moved), (expected, expected), "v2 moves only its new chunks");
    println!(
        "v2 moved {moved} of {} bytes ({:.1}%)",
        stored_bytes(&v2),
        100.0 * moved as f64 / stored_bytes(&v2) as f64
    );
    assert!(moved * 4 <= stored_bytes(&v2), "at most 25% of the image");
    assert_eq!(b.replicator.assemble(&id2).expect("assembled"), v2);
    assert_fetched_once(&wire.fetched());
}

#[test]
fn a_chunk_corrupted_on_the_server_is_caught_and_fetched_again_elsewhere() {
    let Some((_server, cloud)) = s3("a_chunk_corrupted_on_the_server_is_caught_and_fetched_again_elsewhere", "a")
    else {
        return;
    };
    let image = httpd_image("1", false, &key());
    let a = Rack::unlimited();
    let id = a.replicator.import_image(&image).expect("imported").id;
    a.replicator.push_image(&id, &*cloud).expect("pushed");

    // Flip a byte of one chunk's object on the server.
    let split = meta::split(&image, &common::trusted()).expect("splits");
    let (victim, good) = split.chunks[3];
    let mut bad = good.to_vec();
    bad[100] ^= 0x01;
    cloud.put_chunk(&victim, &bad).expect("overwritten");

    // With the cloud alone, the chunk cannot be had: the fetch fails, and the bad bytes are not kept.
    let b = Rack::unlimited();
    b.replicator.add_remote(Arc::new(cloud.for_rack("a")));
    let error = b.replicator.ensure_local(&id).expect_err("only corrupt copies exist");
    assert!(error.to_string().contains("corrupt"), "{error}");
    assert!(!b.store().has(&victim), "a corrupt chunk is never stored");
    assert_eq!(b.replicator.stats().corrupt_chunks, 2, "counted at each of the 2 attempts");
    let stored_before = b.store().chunk_count();
    assert_eq!(stored_before as usize, split.chunks.len() - 1, "every other chunk arrived");

    // With a peer that has a good copy, the next fetch gets it from there.
    let peer = Arc::new(StoreRemote::new("peer a", a.replicator.store().clone(), common::trusted()));
    let peer_wire = Arc::new(Wire::new(peer));
    b.replicator.add_remote(peer_wire.clone());
    b.replicator.ensure_local(&id).expect("fetched from the peer");
    assert_eq!(peer_wire.fetched(), [victim], "only the corrupt chunk came from the peer");
    assert_eq!(b.replicator.assemble(&id).expect("assembled"), image);

    // The same remote can also heal: on a wire that corrupts once, the retry gets good bytes.
    let c = Rack::unlimited();
    let wire =
        Arc::new(Wire::new(Arc::new(StoreRemote::new("peer a", a.replicator.store().clone(), common::trusted()))));
    wire.corrupt_once(split.chunks[0].0);
    c.replicator.add_remote(wire.clone());
    c.replicator.pull_metas();
    c.replicator.ensure_local(&id).expect("fetched after one corrupt answer");
    assert_eq!(c.replicator.stats().corrupt_chunks, 1);
    assert_eq!(wire.fetched().iter().filter(|c| **c == split.chunks[0].0).count(), 2, "fetched again once");
}

#[test]
fn an_interrupted_transfer_resumes_and_fetches_nothing_twice() {
    let Some((_server, cloud)) = s3("an_interrupted_transfer_resumes_and_fetches_nothing_twice", "a") else {
        return;
    };
    let image = httpd_image("1", false, &key());
    let a = Rack::unlimited();
    let id = a.replicator.import_image(&image).expect("imported").id;
    a.replicator.push_image(&id, &*cloud).expect("pushed");
    let total = meta::split(&image, &common::trusted()).expect("splits").chunks.len();

    let b = Rack::unlimited();
    let broken = Arc::new(Wire::failing_after(Arc::new(cloud.for_rack("a")), 20));
    b.replicator.add_remote(broken.clone());
    let error = b.replicator.ensure_local(&id).expect_err("the wire breaks after 20 chunks");
    assert!(error.to_string().contains("connection reset"), "{error}");
    assert_eq!(b.store().chunk_count(), 20, "the chunks that arrived are kept");

    // A crash now would leave nothing torn: reopen the store as a restarted rack would.
    drop(b.replicator);
    let store = Arc::new(replica::ChunkStore::open(&b.dir.path().join("store")).expect("reopens"));
    assert_eq!(store.chunk_count(), 20);
    let replicator = replica::Replicator::new(store, common::trusted(), replica::ReplicatorConfig::default());
    let wire = Arc::new(Wire::new(Arc::new(cloud.for_rack("a"))));
    replicator.add_remote(wire.clone());
    replicator.ensure_local(&id).expect("resumed");
    assert_eq!(wire.fetched().len(), total - 20, "only the missing chunks");
    let everything: Vec<ChunkId> = broken.fetched().into_iter().chain(wire.fetched()).collect();
    assert_fetched_once(&everything);
    assert_eq!(replicator.assemble(&id).expect("assembled"), image);
}

#[test]
fn an_image_signed_by_an_untrusted_key_is_refused_and_nothing_is_stored() {
    let Some((_server, cloud)) = s3("an_image_signed_by_an_untrusted_key_is_refused_and_nothing_is_stored", "x") else {
        return;
    };
    // Rack X trusts its own key; rack B does not trust it.
    let stranger = SigningKey::from_seed([99; 32]);
    let image = httpd_image("1", false, &stranger);
    let x = Rack::unlimited();
    x.replicator.set_trusted(images::keys::TrustedKeys::new([stranger.public()]));
    let id = x.replicator.import_image(&image).expect("imported at X").id;
    x.replicator.push_image(&id, &*cloud).expect("pushed");

    let b = Rack::unlimited();
    b.replicator.add_remote(Arc::new(cloud.for_rack("x")));
    let pulled = b.replicator.pull_metas();
    assert!(pulled.new.is_empty(), "{pulled:?}");
    assert_eq!(pulled.refused.len(), 1, "{pulled:?}");
    assert!(pulled.refused[0].1.contains("not a trusted key"), "{pulled:?}");
    let error = b.replicator.ensure_local(&id).expect_err("refused");
    assert!(error.to_string().contains("untrusted"), "{error}");
    assert!(b.store().image_ids().expect("lists").is_empty(), "no meta stored");
    assert_eq!(b.store().chunk_count(), 0, "no chunk fetched");
    assert_eq!(b.replicator.stats().refused_images, 2);

    // A peer receiving the push refuses it too.
    let peer = StoreRemote::new("rack b", b.replicator.store().clone(), common::trusted());
    let error = x.replicator.push_meta(&id, &peer).expect_err("the peer refuses");
    assert!(matches!(error, replica::ReplicateError::Remote(RemoteError::Untrusted(_))), "{error}");
    assert!(b.store().image_ids().expect("lists").is_empty());
}

#[test]
fn a_volume_replicates_its_changed_chunks_and_restores_elsewhere() {
    let Some((_server, cloud)) = s3("a_volume_replicates_its_changed_chunks_and_restores_elsewhere", "a") else {
        return;
    };
    let a = Rack::unlimited();
    a.replicator.add_remote(cloud.clone());
    let volume = a.dir.path().join("kv.log");
    let chunk = VOLUME_CHUNK as usize;
    let record = |n: usize| format!("{n:08} set key-{n} value-{}\n", n * 7919).into_bytes();
    let mut file = fs::File::create(&volume).expect("volume");
    for n in 0..20_000 {
        file.write_all(&record(n)).expect("append");
    }
    file.flush().expect("flush");
    let size = fs::metadata(&volume).expect("size").len();
    let first = a.replicator.snapshot_volume("kv", &volume, 1_000).expect("first snapshot");
    assert_eq!(first.sent.bytes, size, "the first snapshot sends everything");

    // 100 appends: only the last chunk (and any new one) changes.
    for n in 20_000..20_100 {
        file.write_all(&record(n)).expect("append");
    }
    file.flush().expect("flush");
    assert!(a.replicator.volume_bytes_behind("kv", &volume).expect("behind") <= 2 * chunk as u64);
    let second = a.replicator.snapshot_volume("kv", &volume, 2_000).expect("second snapshot");
    assert!(second.changed_chunks <= 2 && second.sent.bytes <= 2 * chunk as u64, "{second:?}");
    assert_eq!(second.snapshot.seq, 2);
    assert_eq!(a.replicator.volume_bytes_behind("kv", &volume).expect("behind"), 0);
    assert_eq!(cloud.list_volume_snapshots("kv").expect("lists"), [1, 2]);
    assert_eq!(cloud.list_volumes().expect("lists"), ["kv"]);

    // Rack B restores it, then restores a later snapshot fetching only what changed.
    let b = Rack::unlimited();
    let wire = Wire::new(Arc::new(cloud.for_rack("a")));
    let restored = b.dir.path().join("kv.log");
    let (snapshot, fetched) = b.replicator.restore_volume(&wire, "kv", Some(1), &restored).expect("restored");
    assert_eq!((snapshot.seq, fetched.bytes), (1, size));
    let (_, fetched) = b.replicator.restore_volume(&wire, "kv", None, &restored).expect("restored");
    assert!(fetched.bytes <= 2 * chunk as u64, "only changed chunks: {fetched:?}");
    assert_eq!(fs::read(&restored).expect("read"), fs::read(&volume).expect("read"), "identical volume");
}
