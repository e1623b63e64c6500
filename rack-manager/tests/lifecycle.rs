//! The single-machine rack through its CLI, with real QEMU VMs: images, deploy, ps, logs,
//! restart policy, stop/start/rm, stats, plan.

mod common;

use std::time::Duration;

use common::{Rack, image};
use images::Arch;
use rack_api::{Desired, Image, InstanceState, Plan};

#[test]
fn deploy_hello_and_read_its_console() {
    let rack = Rack::start(&[]);
    let hello = image("hello", Arch::Aarch64);
    let pushed = rack.ok(&["image", "push", hello.to_str().expect("utf-8 path"), "-o", "json"]);
    let pushed: Vec<Image> = serde_json::from_str(&pushed).expect("json");
    assert_eq!((pushed[0].name.as_str(), pushed[0].arch.as_str()), ("hello", "aarch64"));

    let table = rack.ok(&["image", "ls"]);
    assert!(table.starts_with("NAME") && table.contains(&pushed[0].id[..12]), "{table}");
    let inspect = rack.ok(&["image", "inspect", &pushed[0].id[..8]]);
    assert!(inspect.contains("restart:     never"), "{inspect}");
    assert!(rack.ok(&["host", "ls"]).contains("local"), "the built-in host is listed");

    rack.ok(&["deploy", "hello", "--replicas", "2", "--arg", "edge", "--arg", "two words"]);
    let instances = rack.wait_for("both hellos to exit", Duration::from_secs(30), |all| {
        all.len() == 2 && all.iter().all(|i| i.state == InstanceState::Exited)
    });
    for instance in &instances {
        assert_eq!(instance.exit_status, Some(0), "{instance:?}");
        let console = rack.ok(&["logs", &instance.id]);
        assert!(console.contains("Hello from Mast"), "{console}");
        assert!(console.contains(r#"args: ["edge", "two words"]"#), "{console}");
        assert!(console.trim_end().ends_with("mast: exit status 0"), "{console}");
    }
    // Following an instance that has ended prints its log and returns.
    let followed = rack.ok(&["logs", "-f", &instances[0].id]);
    assert!(followed.contains("Hello from Mast"), "{followed}");
    // An image in use stays; once its instances are gone it can be removed.
    let output = rack.cli(&["image", "rm", "hello"]);
    assert_eq!(output.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is used by deployment(s) d1"), "{output:?}");
    // Exited instances are history: only `ps -a` shows them.
    assert_eq!(rack.ok(&["ps", "-q"]).trim(), "");
    let ids = rack.ok(&["ps", "-a", "-q"]);
    assert_eq!(ids.lines().count(), 2, "{ids}");
    rack.ok(&["rm", ids.lines().next().expect("two"), ids.lines().nth(1).expect("two")]);
    assert!(rack.ok(&["image", "rm", "hello"]).contains("removed image hello"));
    assert!(rack.ok(&["image", "ls", "-o", "json"]).trim() == "[]");
    assert!(!rack.data_dir().join("images").join(format!("{}.mast", pushed[0].id)).exists(), "the bytes are gone too");
}

#[test]
fn failures_are_restarted_by_policy_and_operators_can_stop_start_and_remove() {
    let rack = Rack::start(&[]);
    rack.ok(&["image", "push", image("crash", Arch::Aarch64).to_str().expect("utf-8 path")]);
    rack.ok(&["deploy", "crash", "--arg", "exit", "--arg", "3", "--restart", "on-failure"]);
    let instances = rack.wait_for("two restarts after exit status 3", Duration::from_secs(30), |all| {
        all.first().is_some_and(|i| i.restarts >= 2 && i.exit_status == Some(3))
    });
    let id = instances[0].id.clone();
    let console = rack.ok(&["logs", &id]);
    assert!(console.matches("mast: exit status 3").count() >= 2, "every run is in the log:\n{console}");

    rack.ok(&["stop", &id]);
    let stopped = rack.ps().into_iter().find(|i| i.id == id).expect("still listed");
    assert_eq!((stopped.state, stopped.desired, stopped.pid), (InstanceState::Stopped, Desired::Stopped, None));
    std::thread::sleep(Duration::from_millis(800));
    let restarts = rack.ps()[0].restarts;
    assert_eq!(restarts, stopped.restarts, "a stopped instance is not restarted");

    rack.ok(&["start", &id]);
    rack.wait_for("the instance to run again", Duration::from_secs(20), |all| {
        all[0].exit_status == Some(3)
            && all[0].state != InstanceState::Stopped
            && all[0].started_ms > stopped.started_ms
    });
    rack.ok(&["rm", &id]);
    assert!(rack.ps().is_empty(), "removed");
    let output = rack.cli(&["logs", &id]);
    assert_eq!(output.status.code(), Some(5), "an unknown instance is refused");
    assert!(String::from_utf8_lossy(&output.stderr).contains("no instance"), "{output:?}");
}

#[test]
fn never_means_never() {
    let rack = Rack::start(&[]);
    rack.ok(&["image", "push", image("crash", Arch::Aarch64).to_str().expect("utf-8 path")]);
    // The manifest's policy is `never`: a panic (status 101) is recorded, not restarted.
    rack.ok(&["deploy", "crash"]);
    let instances =
        rack.wait_for("the crash to be recorded", Duration::from_secs(30), |all| all[0].state == InstanceState::Exited);
    assert_eq!((instances[0].exit_status, instances[0].restarts), (Some(101), 0));
    assert!(rack.ok(&["logs", &instances[0].id]).contains("deliberate panic"));
}

#[test]
fn plan_places_without_deploying_and_stats_answer() {
    let rack = Rack::start(&["--memory-mib", "100"]);
    rack.ok(&["image", "push", image("hello", Arch::Aarch64).to_str().expect("utf-8 path")]);
    let plan: Plan = serde_json::from_str(&rack.ok(&["plan", "hello", "--replicas", "6", "-o", "json"])).expect("json");
    assert_eq!(plan.hosts, vec!["local"; 6]);
    assert!(rack.ps().is_empty(), "a plan deploys nothing");
    let output = rack.cli(&["plan", "hello", "--replicas", "7"]);
    assert_eq!(output.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("only 6 of 7 replicas fit") && stderr.contains("hint:"), "{stderr}");
    let stats = rack.ok(&["stats"]);
    assert!(stats.starts_with("ID") && stats.contains("0 instance(s)"), "{stats}");
}

#[test]
fn x86_64_instances_run_under_kvm() {
    if !qemu::kvm::available_for("x86_64_instances_run_under_kvm") {
        return;
    }
    let rack = Rack::start(&[]);
    rack.ok(&["image", "push", image("hello", Arch::X86_64).to_str().expect("utf-8 path")]);
    rack.ok(&["deploy", "hello", "--arg", "kvm"]);
    let instances =
        rack.wait_for("hello to exit", Duration::from_secs(30), |all| all[0].state == InstanceState::Exited);
    assert_eq!(instances[0].exit_status, Some(0));
    assert!(rack.ok(&["logs", &instances[0].id]).contains("Hello from Mast"));
}
