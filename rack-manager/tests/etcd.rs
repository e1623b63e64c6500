//! A rack on etcd, end to end: real `etcd`, real `rack-manager serve` processes sharing it.
//!
//! - one elected scheduler: a second manager stays standby and refuses placements; after a
//!   `kill -9` of the leader its lease expires, its host reads as down and the standby takes over
//!   and places a new deployment;
//! - image bytes never go into etcd: only metadata does;
//! - an unreachable etcd is reported with what to do.
//!
//! The simulated launcher runs the instances: what is tested is the state, not the VMs.

mod common;
#[path = "common/etcd.rs"]
mod etcd_server;

use std::{
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use common::{BIN, Rack, image};
use etcd_server::EtcdServer;
use images::Arch;
use rack_api::{Host, HostState, Instance, InstanceState};
use rustix::process::{Pid, Signal, kill_process};

/// The lease TTL the managers run with: short, so failover is quick to test.
const LEASE_TTL: &str = "2";

fn manager(etcd: &EtcdServer, host_name: &str) -> Rack {
    Rack::start(&[
        "--store",
        "etcd",
        "--etcd-endpoints",
        &etcd.endpoint(),
        "--rack",
        "r1",
        "--lease-ttl",
        LEASE_TTL,
        "--launcher",
        "sim",
        "--memory-mib",
        "1024",
        "--host-name",
        host_name,
    ])
}

fn daemon_log(rack: &Rack) -> String {
    std::fs::read_to_string(rack.data_dir().join("daemon.stderr")).unwrap_or_default()
}

fn is_scheduler(rack: &Rack) -> bool {
    daemon_log(rack).contains("is now the scheduler of rack r1")
}

/// Polls `done` every 50 ms for at most `timeout`; returns how long it took.
fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

fn hosts(rack: &Rack) -> Vec<Host> {
    serde_json::from_str(&rack.ok(&["host", "ls", "-o", "json"])).expect("host ls -o json is JSON")
}

fn host_state(rack: &Rack, name: &str) -> Option<HostState> {
    hosts(rack).into_iter().find(|h| h.name == name).map(|h| h.state)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

#[test]
fn the_standby_takes_over_when_the_scheduler_dies() {
    let Some(etcd) = EtcdServer::start() else { return };
    let hello = image("hello", Arch::Aarch64);
    let mut first = manager(&etcd, "m1");
    wait_until("m1 to be elected", Duration::from_secs(20), || is_scheduler(&first));
    let second = manager(&etcd, "m2");
    // Both managers serve the rack: each keeps the image's bytes in its own data directory.
    first.ok(&["image", "push", path_str(&hello)]);
    second.ok(&["image", "push", path_str(&hello)]);

    wait_until("m1 to see its own host ready", Duration::from_secs(20), || {
        host_state(&first, "m1") == Some(HostState::Ready)
    });
    let deployed: Vec<Instance> =
        serde_json::from_str(&first.ok(&["deploy", "hello", "-o", "json"])).expect("deploy -o json is JSON");
    assert_eq!(deployed[0].host, "m1", "the scheduler places on the host it runs");
    // The standby sees the same state, and refuses to place.
    assert_eq!(second.ps().len(), 1);
    let refused = second.cli(&["deploy", "hello"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("standby"), "{stderr}");
    assert!(!is_scheduler(&second), "two schedulers: {}", daemon_log(&second));

    // kill -9 the scheduler: its lease expires, its host reads as down, the standby takes over.
    let killed = Instant::now();
    first.kill_daemon();
    let down = wait_until("m1 to read as down", Duration::from_secs(30), || {
        host_state(&second, "m1") == Some(HostState::Unreachable)
    });
    let elected = wait_until("m2 to be elected", Duration::from_secs(30), || is_scheduler(&second));
    let placed = Instant::now();
    let deployed: Vec<Instance> = loop {
        let output = second.cli(&["deploy", "hello", "-o", "json"]);
        if output.status.success() {
            break serde_json::from_slice(&output.stdout).expect("deploy -o json is JSON");
        }
        assert!(
            placed.elapsed() < Duration::from_secs(30),
            "the new scheduler did not deploy: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            daemon_log(&second)
        );
        thread::sleep(Duration::from_millis(100));
    };
    let total = killed.elapsed();
    assert_eq!(deployed[0].host, "m2", "m1 is down: the new deployment goes to m2");
    second.wait_for("the new instance running", Duration::from_secs(30), |all| {
        all.iter().any(|i| i.id == deployed[0].id && i.state == InstanceState::Running)
    });
    eprintln!(
        "lease TTL {LEASE_TTL} s; after kill -9 of the scheduler: its host read as down after {:?}, the standby \
         was elected after {:?}, and had placed and started a new deployment after {total:?}",
        down,
        down + elected
    );
}

#[test]
fn the_new_scheduler_supervises_agents_that_joined_the_old_one() {
    let Some(etcd) = EtcdServer::start() else { return };
    let hello = image("hello", Arch::Aarch64);
    let mut first = manager(&etcd, "m1");
    wait_until("m1 to be elected", Duration::from_secs(20), || is_scheduler(&first));
    // The managers of one rack share its API token: agents and the CLI use one.
    let mut second = manager(&etcd, "m2");
    second.kill_daemon();
    std::fs::copy(first.data_dir().join("token"), second.data_dir().join("token")).expect("copies the token");
    second.start_daemon();
    first.ok(&["image", "push", path_str(&hello)]);
    second.ok(&["image", "push", path_str(&hello)]);
    // The agent joins the first manager, after the second one started.
    first.add_agent("a1", &["--launcher", "sim", "--etcd-endpoints", &etcd.endpoint(), "--rack", "r1"]);
    wait_until("a1 to join", Duration::from_secs(30), || host_state(&first, "a1") == Some(HostState::Ready));
    first.ok(&["host", "drain", "m1"]);
    let deployed: Vec<Instance> =
        serde_json::from_str(&first.ok(&["deploy", "hello", "-o", "json"])).expect("deploy -o json is JSON");
    assert_eq!(deployed[0].host, "a1");
    let id = deployed[0].id.clone();

    first.kill_daemon();
    wait_until("m2 to be elected", Duration::from_secs(30), || is_scheduler(&second));
    // The new scheduler reaches the agent it never saw join: it stops and starts its instance.
    let stopped = Instant::now();
    loop {
        let output = second.cli(&["stop", &id]);
        if output.status.success() {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "m2 cannot stop {id}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        thread::sleep(Duration::from_millis(100));
    }
    second.ok(&["start", &id]);
    let instances = second.wait_for("the instance running again", Duration::from_secs(30), |all| {
        all.iter().any(|i| i.id == id && i.state == InstanceState::Running)
    });
    assert_eq!(instances.iter().find(|i| i.id == id).map(|i| i.host.as_str()), Some("a1"));
}

#[test]
fn a_dead_agents_host_reads_as_down_when_its_lease_expires() {
    let Some(etcd) = EtcdServer::start() else { return };
    let mut rack = manager(&etcd, "m1");
    let standby = manager(&etcd, "m2");
    let lease = ["--launcher", "sim", "--etcd-endpoints", &etcd.endpoint(), "--rack", "r1", "--lease-ttl", LEASE_TTL];
    rack.add_agent("a1", &lease);
    wait_until("a1 to join", Duration::from_secs(30), || host_state(&rack, "a1") == Some(HostState::Ready));
    assert!(keys(&etcd.endpoint()).contains(&"/mast/r1/alive/a1".to_owned()), "the agent holds its liveness key");
    // Frozen, not killed: the agent still accepts connections (its pings hang until they time
    // out), but renews nothing. Its lease expires, and etcd deletes its liveness key.
    let frozen = Instant::now();
    let agent = Pid::from_raw(rack.agents[0].0.id() as i32).expect("a pid");
    kill_process(agent, Signal::STOP).expect("SIGSTOP the agent");
    wait_until("a1's liveness key to expire", Duration::from_secs(30), || {
        !keys(&etcd.endpoint()).contains(&"/mast/r1/alive/a1".to_owned())
    });
    let expired = frozen.elapsed();
    // Every manager sees the host down, the standby included, which pings nobody.
    wait_until("a1 to read as down", Duration::from_secs(30), || {
        host_state(&standby, "a1") == Some(HostState::Unreachable)
    });
    eprintln!(
        "lease TTL {LEASE_TTL} s: agent frozen → its liveness key expired after {expired:?}, its host read as down \
         on the standby after {:?}",
        frozen.elapsed()
    );
    let _ = kill_process(agent, Signal::KILL);
    // Removing the host forgets that it was leased.
    rack.ok(&["host", "rm", "a1"]);
    assert_eq!(host_state(&standby, "a1"), None);
}

#[test]
fn image_bytes_never_go_into_etcd() {
    let Some(etcd) = EtcdServer::start() else { return };
    let hello = image("hello", Arch::Aarch64);
    let bytes = std::fs::read(&hello).expect("the image reads");
    let rack = manager(&etcd, "m1");
    wait_until("m1 to be elected", Duration::from_secs(20), || is_scheduler(&rack));
    rack.ok(&["image", "push", path_str(&hello)]);
    wait_until("m1 ready", Duration::from_secs(20), || host_state(&rack, "m1") == Some(HostState::Ready));
    rack.ok(&["deploy", "hello", "--replicas", "3"]);

    let everything = all_pairs(&etcd.endpoint());
    let keys: Vec<&str> = everything.iter().map(|(k, _)| k.as_str()).collect();
    assert!(keys.iter().any(|k| k.starts_with("/mast/r1/images/")), "the image's metadata is there: {keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("/mast/r1/")), "only the rack's keys: {keys:?}");
    // No value is anywhere near the image's size, and no 64-byte piece of the image is in any.
    let largest = everything.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    assert!(largest < 4096 && largest < bytes.len() / 4, "a {largest}-byte value for a {}-byte image", bytes.len());
    for piece in bytes.chunks(64).filter(|piece| piece.len() == 64) {
        for (key, value) in &everything {
            assert!(!value.windows(64).any(|w| w == piece), "{key} holds bytes of the image");
        }
    }
    eprintln!("etcd holds {} keys for the rack, the largest value {largest} bytes", everything.len());
}

/// Every key in etcd.
fn keys(endpoint: &str) -> Vec<String> {
    all_pairs(endpoint).into_iter().map(|(key, _)| key).collect()
}

/// Every key and value in etcd.
fn all_pairs(endpoint: &str) -> Vec<(String, Vec<u8>)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    runtime.block_on(async {
        let mut client = etcd_client::Client::connect([endpoint], None).await.expect("connects");
        let everything = etcd_client::GetOptions::new().with_all_keys();
        let response = client.get(vec![0u8], Some(everything)).await.expect("reads every key");
        response.kvs().iter().map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec())).collect()
    })
}

#[test]
fn an_unreachable_etcd_stops_serve_with_what_to_do() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let dir = tempfile::tempdir().expect("a temp dir");
    let endpoint = format!("http://127.0.0.1:{port}");
    let output = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "etcd", "--etcd-endpoints", &endpoint])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("rack-manager runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "cannot reach etcd at {endpoint}: start it with `etcd` (Debian package etcd-server) or use the default \
             --store sqlite"
        )),
        "{stderr}"
    );
}
