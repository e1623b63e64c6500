//! Deployments are things an operator acts on: `stop|start|restart|rm|logs|scale` take a
//! deployment by id or image name as well as instances.

mod common;

use std::time::Duration;

use common::Rack;
use images::Arch;
use rack_api::{Desired, InstanceState};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_deployment_is_stopped_started_scaled_logged_and_removed_by_name_or_id() {
    let rack = Rack::start(&[]);
    rack.ok(&["image", "push", common::image("hello", Arch::Aarch64).to_str().expect("utf-8")]);
    rack.ok(&["deploy", "hello", "--replicas", "2", "--arg", "deployments", "--restart", "never"]);
    let exited = |all: &[rack_api::Instance]| all.iter().all(|i| i.state == InstanceState::Exited);
    rack.wait_for("both to exit", Duration::from_secs(30), exited);

    // logs of a deployment: each instance under a header.
    let logs = rack.ok(&["logs", "hello"]);
    assert!(logs.contains("==> hello-1 <==") && logs.contains("==> hello-2 <=="), "{logs}");
    assert_eq!(logs.matches("Hello from Mast").count(), 2, "{logs}");
    let follow = rack.cli(&["logs", "hello", "-f"]);
    assert_eq!(follow.status.code(), Some(1));
    assert!(stderr(&follow).contains("name one of hello-1, hello-2"), "{}", stderr(&follow));

    // stop by name, start by id.
    assert_eq!(rack.ok(&["stop", "hello"]).lines().count(), 2);
    assert!(rack.ps().iter().all(|i| i.desired == Desired::Stopped && i.state == InstanceState::Stopped));
    assert_eq!(rack.ok(&["start", "d1"]).lines().count(), 2);
    rack.wait_for("both to run again and exit", Duration::from_secs(30), |all| {
        all.iter().all(|i| i.desired == Desired::Running && i.state == InstanceState::Exited)
    });

    // scale up and down.
    let scaled = rack.ok(&["scale", "d1", "--replicas", "4"]);
    assert_eq!(scaled.lines().filter(|l| l.contains(" d1 ")).count(), 4, "{scaled}");
    assert_eq!(rack.ps().len(), 4);
    rack.ok(&["scale", "hello", "-n", "1"]);
    let left = rack.ps();
    assert_eq!(left.len(), 1, "{left:?}");
    let deployment: rack_api::DeploymentStatus =
        serde_json::from_str(&rack.ok(&["-o", "json", "scale", "d1", "-n", "1"])).expect("a deployment");
    assert_eq!(deployment.deployment.replicas, 1, "replicas stays the count");
    let zero = rack.cli(&["scale", "d1", "-n", "0"]);
    assert_eq!(zero.status.code(), Some(5));
    assert!(stderr(&zero).contains("rack-manager rm d1"), "{}", stderr(&zero));

    // Two deployments of one image: the name is ambiguous, the ids are not.
    rack.ok(&["deploy", "hello", "--arg", "again", "--restart", "never"]);
    let ambiguous = rack.cli(&["stop", "hello"]);
    assert_eq!(ambiguous.status.code(), Some(5));
    assert!(stderr(&ambiguous).contains("names 2 deployments: d1, d2"), "{}", stderr(&ambiguous));
    let unknown = rack.cli(&["restart", "nope"]);
    assert_eq!(unknown.status.code(), Some(5));
    assert!(stderr(&unknown).contains("no instance or deployment named \"nope\""), "{}", stderr(&unknown));

    // rm a deployment: its instances and the deployment go.
    rack.ok(&["rm", "d1", "d2"]);
    assert!(rack.ps().is_empty());
    assert!(rack.ok(&["ps", "-a"]).lines().count() == 1, "only the header");
}
