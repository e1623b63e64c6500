//! Two racks replicating through a real S3 server (`moto_server`): rack A pushes an image, rack B
//! learns it eagerly, holds only part of it until it launches (with real QEMU), and reports how
//! far behind it is; rack A's volume is snapshotted with changed chunks only.

mod common;

use std::{io::Write, sync::Arc, time::Duration};

use common::{Rack, image};
use images::Arch;
use rack_api::{Image, InstanceState, replication::ReplicationStatus};
use replica::{Remote, Replicator, ReplicatorConfig, S3Remote, moto::MotoServer};

fn status(rack: &Rack) -> ReplicationStatus {
    serde_json::from_str(&rack.ok(&["replicate", "status", "-o", "json"])).expect("status is JSON")
}

/// Polls `probe` until it gives a value; on timeout, fails with `rack`'s daemon log.
fn wait_until<T>(what: &str, timeout: Duration, rack: &Rack, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(rack.data_dir().join("daemon.stderr")).unwrap_or_default();
            panic!("timed out after {timeout:?} waiting for {what}; daemon log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_image_pushed_to_one_rack_reaches_another_through_s3_lazily_and_boots() {
    let Some(server) = MotoServer::start_for("an_image_pushed_to_one_rack_reaches_another_through_s3_lazily_and_boots")
    else {
        return;
    };
    server.create_bucket("mast").expect("bucket");
    // The daemons take S3 credentials from the environment, as they would on a real rack.
    // SAFETY: this binary's only test sets them before it starts any thread or process; nothing
    // reads the environment concurrently.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    }
    let cloud = |rack: &str| format!("s3://mast?endpoint={}&rack={rack}", server.endpoint());
    let volume_dir = tempfile::tempdir().expect("temp dir");
    let volume = volume_dir.path().join("kv.img");
    let mut file = std::fs::File::create(&volume).expect("volume");
    for n in 0..10_000 {
        writeln!(file, "{n:08} set key-{n}").expect("append");
    }
    file.flush().expect("flush");
    let volume_arg = format!("kv={}", volume.display());
    let a = Rack::start(&["--cloud", &cloud("a"), "--replicate-volume", &volume_arg, "--volume-snapshot-every", "1"]);
    // Rack B trickles 1 byte per second: what it holds beyond its first chunks came on demand.
    let b = Rack::start(&["--cloud", &cloud("b"), "--replicate-rate", "1"]);

    let hello = image("hello", Arch::Aarch64);
    let pushed: Vec<Image> =
        serde_json::from_str(&a.ok(&["image", "push", hello.to_str().expect("utf-8"), "-o", "json"])).expect("json");
    let id = pushed[0].id.clone();

    // B learns the image from the bucket without being told, but holds little of it.
    let learned = wait_until("rack B to learn the image", Duration::from_secs(60), &b, || {
        let images: Vec<Image> = serde_json::from_str(&b.ok(&["image", "ls", "-o", "json"])).ok()?;
        images.into_iter().find(|i| i.id == id)
    });
    assert_eq!(learned.name, "hello");
    let before = status(&b);
    let entry = before.images.iter().find(|i| i.id == id).expect("B lists the image");
    assert!(entry.behind_bytes > 0 && entry.local_bytes < entry.total_bytes, "{entry:?}");
    assert!(before.remotes.iter().any(|r| r.ends_with("racks/a")), "{:?}", before.remotes);
    let table = b.ok(&["replicate", "status"]);
    assert!(table.contains("IMAGE") && table.contains("hello"), "{table}");

    // Launching it on B fetches the rest, verified, and boots it.
    b.ok(&["deploy", "hello", "--arg", "replicated"]);
    let instances = b.wait_for("hello to exit on rack B", Duration::from_secs(60), |all| {
        all.first().is_some_and(|i| i.state == InstanceState::Exited)
    });
    assert_eq!(instances[0].exit_status, Some(0), "{instances:?}");
    assert!(b.ok(&["logs", &instances[0].id]).contains("Hello from Mast"));
    let after = status(&b);
    let entry = after.images.iter().find(|i| i.id == id).expect("listed");
    assert_eq!((entry.behind_bytes, entry.local_bytes), (0, entry.total_bytes), "{entry:?}");
    let assembled = std::fs::read(b.data_dir().join("images").join(format!("{id}.mast"))).expect("assembled file");
    assert_eq!(assembled, std::fs::read(&hello).expect("original"), "B booted the very bytes A was given");

    // A's volume reaches the bucket; after appends only the changed chunks follow.
    let first = wait_until("a snapshot of A's volume", Duration::from_secs(30), &a, || {
        let v = status(&a).volumes.into_iter().find(|v| v.name == "kv")?;
        v.snapshot_seq.map(|seq| (seq, v))
    });
    assert!(first.1.lag_ms.is_some() && first.1.error.is_none(), "{:?}", first.1);
    for n in 10_000..10_050 {
        writeln!(file, "{n:08} set key-{n}").expect("append");
    }
    file.flush().expect("flush");
    let size = std::fs::metadata(&volume).expect("size").len();
    wait_until("a snapshot with the appends", Duration::from_secs(30), &a, || {
        let v = status(&a).volumes.into_iter().find(|v| v.name == "kv")?;
        (v.snapshot_seq > Some(first.0) && v.local_bytes == size && v.behind_bytes == 0).then_some(())
    });
    let s3 = S3Remote::new(&server.config("mast", "a")).expect("S3");
    let restore = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(replica::ChunkStore::open(&restore.path().join("store")).expect("store"));
    let replicator = Replicator::new(store, images::keys::TrustedKeys::default(), ReplicatorConfig::default());
    let target = restore.path().join("kv.img");
    let (snapshot, _) = replicator.restore_volume(&s3, "kv", None, &target).expect("restored from the bucket");
    assert_eq!(snapshot.size, size);
    assert_eq!(std::fs::read(&target).expect("read"), std::fs::read(&volume).expect("read"));
    assert!(s3.list_volume_snapshots("kv").expect("lists").len() >= 2);
}
