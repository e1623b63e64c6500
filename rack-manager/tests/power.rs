//! Power you can read, against the real daemon: hosts' models set from the CLI, the rack's
//! budget refusing a deploy (and its `plan`) with the numbers and changing nothing, the
//! estimates in `stats` and `/metrics`; and with a real QEMU VM, a deployment's energy from the
//! CPU time it actually used.

mod common;

use std::time::Duration;

use common::{Rack, image};
use images::Arch;
use rack_api::{InstanceState, power::RackPower};

/// The part of `stats -o json` these tests read.
#[derive(serde::Deserialize)]
struct Stats {
    power: Option<RackPower>,
}

fn stats(rack: &Rack) -> Stats {
    serde_json::from_str(&rack.ok(&["stats", "-o", "json"])).expect("stats -o json is JSON")
}

#[test]
fn the_rack_power_budget_refuses_a_deploy_with_the_numbers() {
    let rack = Rack::start(&["--launcher", "sim", "--sim-hosts", "2", "--vcpus", "64", "--power-budget-w", "60"]);
    rack.ok(&["host", "power", "sim-0001", "idle=10,core=5"]);
    let unknown = rack.cli(&["host", "power", "nope", "idle=1"]);
    assert_eq!(unknown.status.code(), Some(5), "an unknown host is refused");
    let bad = rack.cli(&["host", "power", "sim-0001", "idle=-4"]);
    assert_eq!(bad.status.code(), Some(2), "a negative wattage is a usage error");
    rack.ok(&["image", "push", image("hello", Arch::Aarch64).to_str().expect("utf-8 path")]);
    // Worst case after: (10 + 5×1) + (20 + 8×1) = 43 W, within 60 W.
    rack.ok(&["deploy", "hello", "--replicas", "2", "--vcpus", "1", "--restart", "always"]);
    rack.wait_for("2 running", Duration::from_secs(30), |all| {
        all.len() == 2 && all.iter().all(|i| i.state == InstanceState::Running)
    });
    // Two more of 2 vCPUs: 43 + 5×2 + 8×2 = 69 W, over 60 W: refused, by plan and deploy alike.
    for verb in ["plan", "deploy"] {
        let refused = rack.cli(&[verb, "hello", "--replicas", "2", "--vcpus", "2"]);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(5), "{verb}: {stderr}");
        assert!(stderr.contains("from 43.0 W to 69.0 W") && stderr.contains("budget of 60.0 W"), "{stderr}");
        assert!(stderr.contains("--power-budget-w"), "the hint names the knob: {stderr}");
    }
    assert_eq!(rack.ps().len(), 2, "the refused deploy created nothing");

    // Simulated instances use no CPU: the estimate is the hosts' idle draw.
    let power = stats(&rack).power.expect("stats carries power");
    assert_eq!(power.watts, 30.0);
    assert_eq!(power.worst_case_w, 43.0);
    assert_eq!(power.budget_w, Some(60.0));
    let table = rack.ok(&["stats"]);
    assert!(
        table.contains("power: 30.0 W estimated now, 43.0 W if every reserved vCPU were busy (budget 60 W)"),
        "{table}"
    );
    let metrics = rack.api_get("/metrics");
    assert!(metrics.contains("mast_rack_power_watts 30.0"), "{metrics}");
    assert!(metrics.contains("mast_rack_power_budget_watts 60.0"), "{metrics}");
}

#[test]
fn a_deployments_energy_comes_from_the_cpu_time_its_vm_used() {
    let rack = Rack::start(&[]);
    rack.ok(&["host", "power", "local", "idle=30,core=10"]);
    rack.ok(&["image", "push", image("httpd", Arch::Aarch64).to_str().expect("utf-8 path")]);
    rack.ok(&["deploy", "httpd"]);
    let instances = rack.wait_for("httpd running", Duration::from_secs(60), |all| {
        all.len() == 1 && all[0].state == InstanceState::Running
    });
    common::wait_for_200(common::host_port(&instances[0]), "/", Duration::from_secs(60));
    let power = stats(&rack).power.expect("stats carries power");
    let energy = power.deployments.iter().find(|d| d.image_name == "httpd").expect("httpd's deployment");
    assert!(energy.cpu_seconds > 0.0, "the VM used CPU: {energy:?}");
    let expected_wh = energy.cpu_seconds * 10.0 / 3600.0;
    assert!((energy.wh - expected_wh).abs() < 1e-9, "{energy:?}");
    let host = power.hosts.iter().find(|h| h.host == "local").expect("the local host");
    assert!(host.busy_cores > 0.0 && host.watts > 30.0, "busy cores add to the idle draw: {host:?}");
    assert!((host.watts - (30.0 + 10.0 * host.busy_cores)).abs() < 1e-9);
}
