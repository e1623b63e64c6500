//! `kill -9` of the daemon loses nothing: after a restart every instance is still accounted for,
//! none is duplicated, and supervision carries on.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{Rack, image};
use images::Arch;
use rack_api::InstanceState;

#[test]
fn the_daemon_can_be_killed_and_restarted_without_losing_or_duplicating_instances() {
    let mut rack = Rack::start(&[]);
    rack.ok(&["image", "push", image("hello", Arch::Aarch64).to_str().expect("utf-8 path")]);
    rack.ok(&["image", "push", image("crash", Arch::Aarch64).to_str().expect("utf-8 path")]);
    rack.ok(&["deploy", "hello", "--replicas", "3", "--restart", "always"]);
    rack.ok(&["deploy", "crash", "--arg", "exit", "--arg", "4", "--restart", "on-failure"]);
    rack.ok(&["deploy", "hello", "--restart", "never"]);
    let before = rack.wait_for("every instance to have run", Duration::from_secs(30), |all| {
        all.len() == 5
            && all.iter().all(|i| i.started_ms.is_some() && (i.restarts >= 1 || i.state == InstanceState::Exited))
    });
    let ids: BTreeSet<String> = before.iter().map(|i| i.id.clone()).collect();

    rack.kill_daemon();
    // While the daemon is down, its VMs are on their own; nothing supervises them.
    std::thread::sleep(Duration::from_millis(500));
    rack.start_daemon();

    // A second daemon on the same data directory would supervise every instance twice: refused.
    let second = std::process::Command::new(common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(rack.data_dir())
        .output()
        .expect("runs");
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("another rack-manager (pid"), "{second:?}");

    let after = rack.ps();
    let after_ids: Vec<String> = after.iter().map(|i| i.id.clone()).collect();
    assert_eq!(after_ids.len(), 5, "no instance duplicated: {after_ids:?}");
    assert_eq!(after_ids.iter().cloned().collect::<BTreeSet<_>>(), ids, "no instance lost");
    let exited =
        after.iter().find(|i| i.image_name == "hello" && i.state == InstanceState::Exited).expect("the never one");
    assert_eq!(exited.exit_status, Some(0));

    // Supervision resumed: the restarting instances go on being restarted by the new daemon.
    let restarts = |all: &[rack_api::Instance], id: &str| all.iter().find(|i| i.id == id).map_or(0, |i| i.restarts);
    let crash_id = before.iter().find(|i| i.image_name == "crash").expect("crash").id.clone();
    let crash_before = restarts(&after, &crash_id);
    rack.wait_for("the crash instance to be restarted again", Duration::from_secs(30), |all| {
        restarts(all, &crash_id) > crash_before
    });
    // And the VMs on the host are only ours: at most one QEMU per instance.
    let vms = common::vms_of(rack.data_dir());
    assert!(vms.len() <= 5, "{} QEMU processes for 5 instances", vms.len());
}
