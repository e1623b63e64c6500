//! The `StateStore` contract, run against every backend: SQLite in a temp dir and etcd on a real
//! `etcd` server. Then what only the etcd store promises: claims by compare-and-swap between two
//! managers, liveness by leases, and the change feed.

use std::{
    sync::{Arc, Barrier, mpsc},
    time::{Duration, Instant},
};

use rack_api::{Deployment, HostState, Image, InstanceState, ListenPort, PortForward, RestartPolicy, RestartWhen};

use super::{
    Change, HostRecord, InstanceRecord, JoinKey, StateStore,
    etcd::{EtcdSettings, EtcdStore},
    sqlite::SqliteStore,
};

#[path = "../../tests/common/etcd.rs"]
mod etcd_server;
use etcd_server::EtcdServer;

/// A backend's state that outlives one store: reopening gives a new store on the same state.
enum Backend {
    Sqlite(tempfile::TempDir),
    Etcd(EtcdServer),
}

impl Backend {
    fn open(&self) -> Box<dyn StateStore> {
        match self {
            Backend::Sqlite(dir) => Box::new(SqliteStore::open(&dir.path().join("state.sqlite")).expect("opens")),
            Backend::Etcd(server) => Box::new(etcd_store(server, 10)),
        }
    }
}

fn etcd_store(server: &EtcdServer, lease_ttl_s: u32) -> EtcdStore {
    let settings = EtcdSettings {
        endpoints: vec![server.endpoint()],
        rack: "test".into(),
        lease_ttl_s,
        access: Default::default(),
    };
    EtcdStore::connect(&settings).expect("connects to the test etcd")
}

fn sqlite() -> Option<Backend> {
    Some(Backend::Sqlite(tempfile::tempdir().expect("temp dir")))
}

fn etcd() -> Option<Backend> {
    EtcdServer::start().map(Backend::Etcd)
}

fn deployment(id: &str) -> Deployment {
    Deployment {
        id: id.into(),
        image_id: "ab".repeat(32),
        image_name: "hello".into(),
        replicas: 2,
        memory_mib: 16,
        vcpus: 1,
        args: vec!["a b".into()],
        restart: RestartPolicy { when: RestartWhen::OnFailure, max_restarts: 5, backoff_ms: 500 },
        created_ms: 1,
        on_demand: None,
    }
}

fn instance(id: &str, deployment: &str) -> InstanceRecord {
    InstanceRecord {
        ports: vec![PortForward { host_port: 40000, guest_port: 8080, protocol: "tcp".into(), address: None }],
        ..InstanceRecord::pending(id.into(), deployment.into(), "local".into(), 16, 2)
    }
}

fn host(name: &str) -> HostRecord {
    HostRecord {
        name: name.into(),
        address: Some(format!("http://{name}:7879")),
        launcher: "qemu".into(),
        arches: vec!["aarch64".into()],
        memory_mib: 1024,
        vcpus: 2,
        state: HostState::Ready,
        join_seal: None,
    }
}

fn image(id: &str, name: &str, pushed_ms: u64) -> Image {
    Image {
        id: id.into(),
        name: name.into(),
        version: "1".into(),
        description: "d".into(),
        arch: "aarch64".into(),
        signer: "00".repeat(32),
        size: 1234,
        memory_mib: 16,
        vcpus: 1,
        args: vec![],
        listen: vec![ListenPort { port: 8080, protocol: "tcp".into() }],
        restart: RestartPolicy { when: RestartWhen::Never, max_restarts: 0, backoff_ms: 0 },
        pushed_ms,
        platform: "qemu".into(),
    }
}

fn state_survives_reopening(backend: &Backend) {
    {
        let mut store = backend.open();
        store
            .create_deployment(&deployment("d1"), &[instance("hello-2", "d1"), instance("hello-10", "d1")])
            .expect("created");
        let mut running = instance("hello-2", "d1");
        running.state = InstanceState::Running;
        running.pid = Some(1234);
        running.start_ticks = Some(99);
        assert_eq!(store.swap_instances(&[(instance("hello-2", "d1"), running)]).expect("swapped"), [true]);
        store.upsert_host(&host("h1")).expect("host");
    }
    let store = backend.open();
    let instances = store.instances().expect("lists");
    assert_eq!(instances.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["hello-2", "hello-10"]);
    assert_eq!(
        (instances[0].pid, instances[0].start_ticks, instances[0].state),
        (Some(1234), Some(99), InstanceState::Running)
    );
    assert_eq!(instances[1].ports[0].guest_port, 8080);
    assert_eq!(store.deployments().expect("lists"), [deployment("d1")]);
    assert_eq!(store.hosts().expect("lists"), [host("h1")]);
    assert_eq!(store.instance("hello-10").expect("reads"), Some(instance("hello-10", "d1")));
    assert_eq!(store.instance("nope").expect("reads"), None);
}

/// On-demand settings are an additive field: stored and read back by both backends, and absent
/// (always running) on deployments written without them.
fn on_demand_settings_round_trip(backend: &Backend) {
    let mut store = backend.open();
    let on_demand = rack_api::OnDemand { idle_timeout_ms: 30_000, max_instances: 4 };
    let summoned = Deployment { on_demand: Some(on_demand), ..deployment("d2") };
    store.create_deployment(&deployment("d1"), &[instance("a", "d1")]).expect("created");
    store.create_deployment(&summoned, &[instance("b", "d2")]).expect("created");
    drop(store);
    let deployments = backend.open().deployments().expect("lists");
    assert_eq!(deployments, [deployment("d1"), summoned]);
}

fn removing_the_last_instance_removes_its_deployment(backend: &Backend) {
    let mut store = backend.open();
    store.create_deployment(&deployment("d1"), &[instance("a", "d1"), instance("b", "d1")]).expect("created");
    assert!(store.remove_instance("a").expect("removes"));
    assert_eq!(store.deployments().expect("lists")[0].replicas, 1);
    assert!(store.remove_instance("b").expect("removes"));
    assert!(store.deployments().expect("lists").is_empty());
    assert!(!store.remove_instance("b").expect("idempotent"));
}

fn a_deployment_with_a_duplicate_id_is_not_half_written(backend: &Backend) {
    let mut store = backend.open();
    store.create_deployment(&deployment("d1"), &[instance("a", "d1")]).expect("created");
    assert!(store.create_deployment(&deployment("d1"), &[instance("z", "d1")]).is_err());
    assert!(store.instance("z").expect("reads").is_none());
    assert_eq!(store.instances().expect("lists").len(), 1);
}

fn instances_added_to_a_deployment_count_as_its_replicas(backend: &Backend) {
    let mut store = backend.open();
    store.create_deployment(&deployment("d1"), &[instance("a", "d1")]).expect("created");
    store.add_instances("d1", &[instance("b", "d1"), instance("c", "d1")]).expect("added");
    assert_eq!(store.deployments().expect("lists")[0].replicas, 3);
    assert!(store.add_instances("d1", &[instance("a", "d1")]).is_err(), "an existing id is refused");
    assert!(store.add_instances("d9", &[instance("z", "d9")]).is_err(), "a missing deployment is refused");
    assert!(store.instance("z").expect("reads").is_none());
    assert_eq!(store.instances().expect("lists").len(), 3);
}

fn sequences_never_repeat(backend: &Backend) {
    let first = backend.open().next_sequence("instance").expect("next");
    let second = backend.open().next_sequence("instance").expect("next");
    let other = backend.open().next_sequence("deployment").expect("next");
    assert_eq!((first, second, other), (1, 2, 1));
}

fn hosts_and_images_round_trip(backend: &Backend) {
    let mut store = backend.open();
    store.upsert_host(&host("b")).expect("host");
    store.upsert_host(&host("a")).expect("host");
    assert!(store.set_host_state("a", HostState::Draining).expect("sets"));
    assert!(!store.set_host_state("nope", HostState::Draining).expect("sets"));
    // A known host keeps its state when it joins again with new capacity.
    store.upsert_host(&HostRecord { memory_mib: 2048, ..host("a") }).expect("host");
    let hosts = store.hosts().expect("lists");
    assert_eq!(
        hosts.iter().map(|h| (h.name.as_str(), h.state, h.memory_mib)).collect::<Vec<_>>(),
        [("a", HostState::Draining, 2048), ("b", HostState::Ready, 1024)]
    );
    assert!(store.remove_host("b").expect("removes"));
    assert!(!store.remove_host("b").expect("removes"));

    store.put_image(&image("02", "zeta", 5)).expect("image");
    store.put_image(&image("01", "alpha", 9)).expect("image");
    store.put_image(&image("03", "alpha", 3)).expect("image");
    let ids: Vec<String> = store.images().expect("lists").into_iter().map(|i| i.id).collect();
    assert_eq!(ids, ["03", "01", "02"], "by name, then push time");
    assert_eq!(store.images().expect("lists")[0], image("03", "alpha", 3));
    assert!(store.remove_image("01").expect("removes"));
    assert!(!store.remove_image("01").expect("removes"));
}

fn swaps_write_only_unchanged_records(backend: &Backend) {
    let mut store = backend.open();
    store.create_deployment(&deployment("d1"), &[instance("a", "d1"), instance("b", "d1")]).expect("created");
    let (a, b) = (instance("a", "d1"), instance("b", "d1"));
    let placed = |r: &InstanceRecord, host: &str| InstanceRecord { host: host.into(), ..r.clone() };
    assert_eq!(store.swap_instances(&[(a.clone(), placed(&a, "h1"))]).expect("swaps"), [true]);
    // `a` changed since it was read: its claim is refused; `b`'s, made on a current read, holds.
    let written = store.swap_instances(&[(b.clone(), placed(&b, "h2")), (a.clone(), placed(&a, "h3"))]);
    assert_eq!(written.expect("swaps"), [true, false]);
    assert_eq!(store.instance("a").expect("reads").map(|i| i.host), Some("h1".into()));
    assert_eq!(store.instance("b").expect("reads").map(|i| i.host), Some("h2".into()));
    // A record that does not exist cannot be swapped.
    assert_eq!(store.swap_instances(&[(instance("x", "d1"), instance("x", "d1"))]).expect("swaps"), [false]);
    assert!(store.instance("x").expect("reads").is_none());
}

fn a_join_seal_survives_every_host_write(backend: &Backend) {
    let key = JoinKey::from_token("the rack's token");
    let mut store = backend.open();
    store.upsert_host(&host("a").sealed(&key)).expect("host");
    store.upsert_host(&host("b")).expect("host");
    assert!(store.set_host_state("a", HostState::Draining).expect("sets"));
    let reopened = backend.open();
    let hosts = reopened.hosts().expect("lists");
    let joined: Vec<(&str, bool)> = hosts.iter().map(|h| (h.name.as_str(), h.is_joined(&key))).collect();
    assert_eq!(joined, [("a", true), ("b", false)]);
    // The seal is for one name at one address, under one rack's key.
    let a = &hosts[0];
    assert!(!a.is_joined(&JoinKey::from_token("another rack's token")));
    assert!(!HostRecord { address: Some("http://elsewhere:7879".into()), ..a.clone() }.is_joined(&key));
    assert!(!HostRecord { name: "b".into(), ..a.clone() }.is_joined(&key));
    assert!(!HostRecord { address: None, ..a.clone() }.is_joined(&key));
}

macro_rules! contract {
    ($($test:ident),* $(,)?) => {
        mod sqlite_backend {
            $(#[test]
            fn $test() {
                let backend = super::sqlite().expect("a temp dir");
                super::$test(&backend);
            })*
        }
        mod etcd_backend {
            $(#[test]
            fn $test() {
                let Some(backend) = super::etcd() else { return };
                super::$test(&backend);
            })*
        }
    };
}

contract!(
    state_survives_reopening,
    on_demand_settings_round_trip,
    removing_the_last_instance_removes_its_deployment,
    a_deployment_with_a_duplicate_id_is_not_half_written,
    instances_added_to_a_deployment_count_as_its_replicas,
    sequences_never_repeat,
    hosts_and_images_round_trip,
    a_join_seal_survives_every_host_write,
    swaps_write_only_unchanged_records,
);

#[test]
fn etcd_a_deployment_whose_instance_exists_is_not_half_written() {
    let Some(server) = EtcdServer::start() else { return };
    let mut store = etcd_store(&server, 10);
    store.create_deployment(&deployment("d1"), &[instance("a", "d1")]).expect("created");
    let error = store
        .create_deployment(&deployment("d2"), &[instance("fresh", "d2"), instance("a", "d2")])
        .expect_err("instance a exists");
    assert!(error.to_string().contains("nothing was written"), "{error}");
    assert!(store.instance("fresh").expect("reads").is_none());
    assert_eq!(store.deployments().expect("lists").len(), 1);
    assert_eq!(store.instance("a").expect("reads").map(|i| i.deployment), Some("d1".into()));
}

#[test]
fn etcd_two_schedulers_never_claim_the_same_instance() {
    let Some(server) = EtcdServer::start() else { return };
    const COUNT: usize = 40;
    let unplaced: Vec<InstanceRecord> =
        (0..COUNT).map(|i| InstanceRecord { host: String::new(), ..instance(&format!("hello-{i}"), "d1") }).collect();
    etcd_store(&server, 10).create_deployment(&deployment("d1"), &unplaced).expect("created");
    let barrier = Arc::new(Barrier::new(2));
    let racers: Vec<_> = ["host-a", "host-b"]
        .into_iter()
        .map(|name| {
            let (barrier, endpoint) = (barrier.clone(), server.endpoint());
            std::thread::spawn(move || {
                let settings = EtcdSettings {
                    endpoints: vec![endpoint],
                    rack: "test".into(),
                    lease_ttl_s: 10,
                    access: Default::default(),
                };
                let mut store = EtcdStore::connect(&settings).expect("connects");
                // Both schedulers read every instance before either claims one: every claim
                // is contested, made on the same read as the other scheduler's.
                let reads: Vec<InstanceRecord> = (0..COUNT)
                    .map(|i| store.instance(&format!("hello-{i}")).expect("reads").expect("exists"))
                    .collect();
                assert!(reads.iter().all(|r| r.host.is_empty()));
                barrier.wait();
                let mut won = Vec::new();
                for read in reads {
                    let claimed = InstanceRecord { host: name.into(), ..read.clone() };
                    let id = read.id.clone();
                    if store.swap_instances(&[(read, claimed)]).expect("swaps") == [true] {
                        won.push(id);
                    }
                }
                (name, won)
            })
        })
        .collect();
    let results: Vec<(&str, Vec<String>)> = racers.into_iter().map(|r| r.join().expect("racer")).collect();
    let store = etcd_store(&server, 10);
    let mut claimed = 0;
    for (name, won) in &results {
        for id in won {
            let record = store.instance(id).expect("reads").expect("exists");
            assert_eq!(record.host, *name, "{id} was claimed by {name}, but the store says {}", record.host);
        }
        claimed += won.len();
    }
    assert_eq!(claimed, COUNT, "every instance claimed exactly once: {results:?}");
    eprintln!("claims: {} by host-a, {} by host-b", results[0].1.len(), results[1].1.len());
}

#[test]
fn etcd_a_dead_managers_host_reads_as_down_when_its_lease_expires() {
    let Some(server) = EtcdServer::start() else { return };
    let mut holder = etcd_store(&server, 2);
    let built_in = HostRecord { address: None, ..host("m1") };
    holder.upsert_host(&built_in).expect("host");
    holder.hold_liveness("m1").expect("holds");
    let observer = etcd_store(&server, 10);
    assert_eq!(observer.hosts().expect("lists")[0].state, HostState::Ready);
    // Alive for longer than the lease's TTL while the holder renews it.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(observer.hosts().expect("lists")[0].state, HostState::Ready);
    // Dropping the store stops the renewals without revoking: as a crash looks to etcd.
    let died = Instant::now();
    drop(holder);
    loop {
        if observer.hosts().expect("lists")[0].state == HostState::Unreachable {
            break;
        }
        assert!(died.elapsed() < Duration::from_secs(10), "the host still reads as ready 10 s after its holder died");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("lease TTL 2 s: holder gone → host down after {:?}", died.elapsed());
    // A remote agent's host (with an address) is judged by the scheduler's health checks instead.
    let mut store = etcd_store(&server, 10);
    store.upsert_host(&host("remote")).expect("host");
    assert_eq!(store.hosts().expect("lists")[1].state, HostState::Ready);
}

/// Waits for the next change the feed delivers for `key`.
fn next_change(feed: &mpsc::Receiver<Change>, key: &str) -> Change {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let change = feed.recv_timeout(left).unwrap_or_else(|e| panic!("no change for {key} within 20 s: {e}"));
        match &change {
            Change::Put { key: k, .. } | Change::Delete { key: k, .. } if k == key => return change,
            _ => {}
        }
    }
}

/// Retries a write while a restarted etcd comes back.
fn retry<T>(mut call: impl FnMut() -> super::Result<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match call() {
            Ok(value) => return value,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("still failing after 20 s: {e}"),
        }
    }
}

#[test]
fn etcd_the_change_feed_delivers_changes_and_resumes_after_etcd_restarts() {
    let Some(mut server) = EtcdServer::start() else { return };
    let watcher = etcd_store(&server, 10);
    let feed = watcher.changes().expect("subscribes").expect("etcd has a feed");
    let mut writer = etcd_store(&server, 10);
    writer.create_deployment(&deployment("d1"), &[instance("a", "d1")]).expect("created");
    let Change::Put { revision: first, .. } = next_change(&feed, "instances/a") else { panic!("a put") };
    let running = InstanceRecord { state: InstanceState::Running, ..instance("a", "d1") };
    assert_eq!(writer.swap_instances(&[(instance("a", "d1"), running)]).expect("ok"), [true]);
    let Change::Put { revision: second, .. } = next_change(&feed, "instances/a") else { panic!("a put") };
    assert!(second > first, "revisions grow: {first} then {second}");

    server.restart();
    retry(|| writer.create_deployment(&deployment("d2"), &[instance("b", "d2")]));
    assert!(matches!(next_change(&feed, "instances/b"), Change::Put { .. }));
    retry(|| writer.remove_instance("a"));
    assert!(matches!(next_change(&feed, "instances/a"), Change::Delete { .. }));
    // Nothing delivered twice across the reconnect: the feed resumed after the last revision seen.
    let mut seen = Vec::new();
    while let Ok(change) = feed.recv_timeout(Duration::from_millis(500)) {
        seen.push(change);
    }
    assert!(
        !seen.iter().any(|c| matches!(c, Change::Put { key, .. } if key == "instances/b")),
        "repeated after the reconnect: {seen:?}"
    );
}

#[test]
fn etcd_a_dead_member_of_three_changes_nothing() {
    let Some(mut members) = EtcdServer::cluster(3) else { return };
    let endpoints: Vec<String> = members.iter().map(EtcdServer::endpoint).collect();
    // A 4 s lease: the role must survive etcd electing a new leader and the client finding it,
    // which took more than the 1.3 s a 2 s lease allows (renewals must land within 2/3 of the TTL)
    // on a loaded 2-core CI machine.
    let settings =
        EtcdSettings { endpoints: endpoints.clone(), rack: "test".into(), lease_ttl_s: 4, access: Default::default() };
    let mut store = EtcdStore::connect(&settings).expect("connects to the cluster");
    store.upsert_host(&HostRecord { address: None, ..host("m1") }).expect("host");
    store.hold_liveness("m1").expect("holds");
    let election = store.election();
    election.campaign("http://m1");
    wait_elected(&election);

    // A follower dies: every call still succeeds (a refused connection is tried on another
    // member), and the lease lives on, renewed through the members left: the host stays alive,
    // the scheduler stays.
    let follower = members.iter().position(|m| !m.is_raft_leader()).expect("two followers");
    members[follower].kill();
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_secs(6) {
        store.next_sequence("instance").expect("a call with a follower dead");
        assert_eq!(store.hosts().expect("lists")[0].state, HostState::Ready, "the lease expired");
        calls += 2;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(election.is_leader(), "lost the scheduler role to a dead member");
    assert_eq!(election.leader().as_deref(), Some("http://m1"));
    eprintln!("{calls} calls over 6 s (1.5 lease TTLs) with a follower of three dead: all succeeded");

    // etcd's leader dies: reads ride out the election, writes may fail while it lasts, and the
    // lease, its keys and the scheduler role survive.
    members[follower].restart();
    let leader = members.iter().position(EtcdServer::is_raft_leader).expect("a raft leader");
    members[leader].kill();
    let killed = Instant::now();
    let mut failed_writes = 0;
    while killed.elapsed() < Duration::from_secs(6) {
        if store.next_sequence("instance").is_err() {
            failed_writes += 1;
        }
        assert_eq!(store.hosts().expect("reads ride out the election")[0].state, HostState::Ready);
        std::thread::sleep(Duration::from_millis(20));
    }
    store.next_sequence("instance").expect("writes work again once etcd has a new leader");
    assert!(election.is_leader(), "lost the scheduler role when etcd's leader died");
    eprintln!("etcd's leader killed: {failed_writes} writes failed during its election; lease and role kept");
}

fn wait_elected(election: &super::etcd::Election) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !election.is_leader() {
        assert!(Instant::now() < deadline, "not elected within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn etcd_only_the_elected_scheduler_claims() {
    let Some(server) = EtcdServer::start() else { return };
    etcd_store(&server, 10).create_deployment(&deployment("d1"), &[instance("a", "d1")]).expect("created");
    let mut first = etcd_store(&server, 2);
    first.election().campaign("http://first");
    wait_elected(&first.election());
    let mut second = etcd_store(&server, 2);
    let second_election = second.election();
    second_election.campaign("http://second");
    std::thread::sleep(Duration::from_millis(500));
    assert!(!second_election.is_leader());
    assert_eq!(second_election.leader().as_deref(), Some("http://first"));

    // The fence: a manager that campaigns writes claims only while the scheduler key is on its
    // lease, whatever it believes.
    let read = instance("a", "d1");
    let claim = |host: &str| (read.clone(), InstanceRecord { host: host.into(), ..read.clone() });
    assert_eq!(second.swap_instances(&[claim("by-second")]).expect("swaps"), [false]);
    let error = second.create_deployment(&deployment("d2"), &[instance("b", "d2")]).expect_err("fenced");
    assert!(error.to_string().contains("no longer the rack's scheduler"), "{error}");
    assert!(second.instance("b").expect("reads").is_none());
    assert_eq!(first.swap_instances(&[claim("by-first")]).expect("swaps"), [true]);

    // The scheduler dies: the second takes over, and its claims go through.
    drop(first);
    wait_elected(&second_election);
    let current = second.instance("a").expect("reads").expect("exists");
    let moved = InstanceRecord { host: "by-second".into(), ..current.clone() };
    assert_eq!(second.swap_instances(&[(current, moved)]).expect("swaps"), [true]);
    second.create_deployment(&deployment("d2"), &[instance("b", "d2")]).expect("the scheduler creates");
}

#[test]
fn an_unreachable_etcd_is_reported_with_what_to_do() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let settings = EtcdSettings {
        endpoints: vec![format!("http://127.0.0.1:{port}")],
        rack: "test".into(),
        lease_ttl_s: 10,
        access: Default::default(),
    };
    let error = EtcdStore::connect(&settings).expect_err("nothing listens there").to_string();
    let expected = format!(
        "cannot reach etcd at http://127.0.0.1:{port}: start it with `etcd` (Debian package etcd-server) or use the \
         default --store sqlite"
    );
    assert!(error.contains(&expected), "{error}");
}

#[test]
fn a_scheduler_url_opens_only_under_the_key_that_sealed_it() {
    let key = JoinKey::from_token("the rack's token");
    let sealed = key.seal_scheduler("http://10.0.0.1:7878");
    assert_eq!(key.open_scheduler(&sealed), Some("http://10.0.0.1:7878"));
    assert_eq!(JoinKey::from_token("another rack's token").open_scheduler(&sealed), None);
    let moved = sealed.replace("10.0.0.1", "10.6.6.6");
    assert_eq!(key.open_scheduler(&moved), None, "the seal covers the URL");
    assert_eq!(key.open_scheduler("http://10.0.0.1:7878"), None, "an unsealed URL");
    assert_eq!(key.open_scheduler("http://10.0.0.1:7878 nothex"), None);
    // A host's seal is no scheduler's, even for the same text.
    let host = HostRecord { address: Some("http://10.0.0.1:7878".into()), ..host("scheduler") }.sealed(&key);
    let borrowed = format!("http://10.0.0.1:7878 {}", host.join_seal.expect("sealed"));
    assert_eq!(key.open_scheduler(&borrowed), None);
}
