//! The simulated launcher: thousands of hosts and instances, no VMs. Checks that the store, the
//! API, placement and the reconciler keep up at rack scale. How long `plan` takes is printed, not
//! asserted (timing belongs in benches: `cargo xtask bench placement`).

mod common;

use std::time::{Duration, Instant};

use common::{Rack, image};
use images::Arch;
use rack_api::{Host, InstanceState, Plan};

#[test]
fn two_thousand_simulated_hosts_run_four_thousand_instances() {
    let rack = Rack::start(&["--launcher", "sim", "--sim-hosts", "2000", "--memory-mib", "256"]);
    let hosts: Vec<Host> = serde_json::from_str(&rack.ok(&["host", "ls", "-o", "json"])).expect("json");
    assert_eq!(hosts.len(), 2000);
    rack.ok(&["image", "push", image("hello", Arch::Aarch64).to_str().expect("utf-8 path")]);

    let started = Instant::now();
    let plan: Plan =
        serde_json::from_str(&rack.ok(&["plan", "hello", "--replicas", "4000", "-o", "json"])).expect("json");
    assert_eq!(plan.hosts.len(), 4000);
    eprintln!("plan of 4000 replicas on 2000 hosts: {:?}", started.elapsed());

    let started = Instant::now();
    rack.ok(&["deploy", "hello", "--replicas", "4000", "--restart", "always"]);
    eprintln!("deploy of 4000 simulated instances until all started: {:?}", started.elapsed());
    let instances = rack.wait_for("4000 running", Duration::from_secs(60), |all| {
        all.len() == 4000 && all.iter().all(|i| i.state == InstanceState::Running)
    });
    let hosts: Vec<Host> = serde_json::from_str(&rack.ok(&["host", "ls", "-o", "json"])).expect("json");
    assert!(hosts.iter().all(|h| h.instances == 2), "anti-affinity spreads 2 per host");
    assert_eq!(rack.ok(&["ps", "-q"]).lines().count(), instances.len());

    // Full: 2000 hosts × 256 MiB hold 32000 instances of 16 MiB; 4000 are placed.
    let output = rack.cli(&["plan", "hello", "--replicas", "28001"]);
    assert_eq!(output.status.code(), Some(5), "{}", String::from_utf8_lossy(&output.stderr));
}
