//! The `httpd` appliance through the rack manager, with real QEMU: its page is fetched through
//! the forwarded port `ps` shows, a killed VM is restarted and serves again, and VMs keep serving
//! through a `kill -9` of the daemon and are adopted (same pid) by the next one.

mod common;

use std::time::Duration;

use common::{Rack, host_port, image, wait_for_200};
use images::Arch;
use rack_api::{Instance, InstanceState};

fn serving(rack: &Rack, replicas: usize) -> Vec<Instance> {
    let instances = rack.wait_for("httpd to run", Duration::from_secs(30), |all| {
        all.len() == replicas && all.iter().all(|i| i.state == InstanceState::Running && !i.ports.is_empty())
    });
    for instance in &instances {
        let page = wait_for_200(host_port(instance), "/", Duration::from_secs(30));
        assert!(page.contains("<title>Mast httpd</title>"), "{page}");
    }
    instances
}

fn rack_with_httpd(arch: Arch) -> Rack {
    let rack = Rack::start(&[]);
    rack.ok(&["image", "push", image("httpd", arch).to_str().expect("utf-8 path")]);
    rack
}

#[test]
fn deploy_httpd_and_fetch_its_page_through_the_forwarded_port() {
    let rack = rack_with_httpd(Arch::Aarch64);
    rack.ok(&["deploy", "httpd"]);
    let instances = serving(&rack, 1);
    let ps = rack.ok(&["ps"]);
    assert!(ps.contains(&format!("127.0.0.1:{}->8080/tcp", host_port(&instances[0]))), "ps shows the port:\n{ps}");
    let console = rack.ok(&["logs", &instances[0].id]);
    assert!(console.contains("httpd: listening on"), "{console}");
    // `logs -f` follows the running instance until it is stopped.
    let mut follower = std::process::Command::new(common::BIN)
        .arg("--data-dir")
        .arg(rack.data_dir())
        .args(["logs", "-f", &instances[0].id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("logs -f starts");
    std::thread::sleep(Duration::from_millis(500));
    assert!(follower.try_wait().expect("waits").is_none(), "logs -f keeps following a running instance");
    let stats = rack.ok(&["stats", "-o", "json"]);
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("json");
    assert!(stats["instances"][0]["rss_bytes"].as_u64().is_some_and(|b| b > 1 << 20), "QEMU's RSS from /proc: {stats}");
    rack.ok(&["stop", &instances[0].id]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while follower.try_wait().expect("waits").is_none() {
        assert!(std::time::Instant::now() < deadline, "logs -f did not end when the instance stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut followed = String::new();
    std::io::Read::read_to_string(&mut follower.stdout.take().expect("piped"), &mut followed).expect("reads");
    assert!(followed.contains("httpd: listening on"), "{followed}");
}

#[test]
fn a_killed_instance_is_restarted_and_serves_again() {
    let rack = rack_with_httpd(Arch::Aarch64);
    rack.ok(&["deploy", "httpd"]);
    let before = serving(&rack, 1).remove(0);
    common::kill(before.pid.expect("a running instance has a pid"));
    let after = rack.wait_for("the killed instance to be restarted", Duration::from_secs(30), |all| {
        all[0].restarts == 1 && all[0].state == InstanceState::Running
    });
    assert_eq!(after[0].exit_status, Some(-9), "killed by SIGKILL: {:?}", after[0]);
    assert_ne!(after[0].pid, before.pid);
    serving(&rack, 1);
    // An operator's restart: a new run, counted, serving again.
    rack.ok(&["restart", &before.id]);
    let again = serving(&rack, 1).remove(0);
    assert_eq!(again.restarts, 2);
    assert_ne!(again.pid, after[0].pid);
}

#[test]
fn vms_outlive_a_killed_daemon_and_are_adopted_by_the_next() {
    let mut rack = rack_with_httpd(Arch::Aarch64);
    rack.ok(&["deploy", "httpd", "--replicas", "2"]);
    let before = serving(&rack, 2);

    rack.kill_daemon();
    // Nothing supervises them now, and they keep serving.
    for instance in &before {
        wait_for_200(host_port(instance), "/healthz", Duration::from_secs(10));
    }
    // One dies while nobody watches.
    common::kill(before[1].pid.expect("running"));
    rack.start_daemon();

    let after = rack.wait_for("the dead one to be restarted", Duration::from_secs(30), |all| {
        all.len() == 2 && all[1].restarts == 1 && all[1].state == InstanceState::Running
    });
    assert_eq!(
        (after[0].id.as_str(), after[0].pid, after[0].restarts),
        (before[0].id.as_str(), before[0].pid, 0),
        "adopted, not restarted"
    );
    assert_ne!(after[1].pid, before[1].pid);
    serving(&rack, 2);
    let vms = common::vms_of(rack.data_dir());
    assert_eq!(vms.len(), 2, "exactly one VM per instance: {vms:?}");
}

#[test]
fn httpd_on_x86_64_under_kvm() {
    if !qemu::kvm::available_for("httpd_on_x86_64_under_kvm") {
        return;
    }
    let rack = rack_with_httpd(Arch::X86_64);
    rack.ok(&["deploy", "httpd"]);
    serving(&rack, 1);
}
