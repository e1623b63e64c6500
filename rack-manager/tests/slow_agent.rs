//! The rack core's lock discipline, seen from outside: an operation that waits on a slow (here:
//! frozen) agent holds no lock while it waits, so `ps` and `host ls` answer at once meanwhile.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{Rack, image};
use images::Arch;
use rack_api::{Desired, InstanceState};

/// What a read may take while another request waits on a frozen agent. The agent's calls time
/// out after 5 s, so a read that waited behind one would take seconds; a free one takes
/// milliseconds (1 s leaves room for a loaded CI machine).
const PROMPT: Duration = Duration::from_secs(1);

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill").args([signal, &pid.to_string()]).status().expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Times `rack`'s `GET path` a few times while something else is in flight; returns the slowest.
fn slowest_read(rack: &Rack, path: &str) -> Duration {
    (0..5)
        .map(|_| {
            let started = Instant::now();
            rack.api_get(path);
            std::thread::sleep(Duration::from_millis(50));
            started.elapsed() - Duration::from_millis(50)
        })
        .max()
        .unwrap_or_default()
}

#[test]
fn a_frozen_agent_slows_neither_ps_nor_host_ls() {
    let mut rack = Rack::start(&["--no-local-agent"]);
    rack.add_agent("slow", &["--launcher", "sim"]);
    rack.wait_for_hosts(1);
    rack.ok(&["image", "push", image("hello", Arch::Aarch64).to_str().expect("utf-8 path")]);
    rack.ok(&["deploy", "hello", "--replicas", "3", "--restart", "always"]);
    let running = rack.wait_for("3 simulated instances to run", Duration::from_secs(30), |all| {
        all.len() == 3 && all.iter().all(|i| i.state == InstanceState::Running)
    });
    let agent = rack.agents[0].0.id();

    // Frozen: it accepts connections (the kernel does) but answers nothing.
    signal(agent, "-STOP");
    let stopping = {
        let (dir, id) = (rack.data_dir().to_owned(), running[0].id.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let output = Command::new(common::BIN)
                .arg("--data-dir")
                .arg(&dir)
                .args(["stop", &id])
                .env_remove("RACK_MANAGER")
                .env_remove("RACK_TOKEN")
                .output()
                .expect("the CLI runs");
            (started.elapsed(), output)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let ps = slowest_read(&rack, "/v1/instances?all=true");
    let hosts = slowest_read(&rack, "/v1/hosts");
    let (stop_took, stop_output) = stopping.join().expect("the stop thread ends");
    signal(agent, "-CONT");

    println!("while a stop waited {stop_took:?} on a frozen agent: slowest ps {ps:?}, slowest host ls {hosts:?}");
    assert!(stop_took >= Duration::from_secs(2), "the stop did wait on the frozen agent ({stop_took:?})");
    assert!(ps < PROMPT, "ps took {ps:?} while a stop waited on a frozen agent");
    assert!(hosts < PROMPT, "host ls took {hosts:?} while a stop waited on a frozen agent");
    // The stop could not reach the host: it says so, and the instance stays meant to be stopped,
    // so the reconciler stops it once the agent answers again.
    let stderr = String::from_utf8_lossy(&stop_output.stderr);
    assert!(!stop_output.status.success() && stderr.contains("stopping"), "{stderr}");
    let stopped = rack.wait_for("the reconciler to stop it", Duration::from_secs(30), |all| {
        all.iter().any(|i| i.id == running[0].id && i.desired == Desired::Stopped && i.state == InstanceState::Stopped)
    });
    let others = stopped.iter().filter(|i| i.id != running[0].id);
    assert!(others.clone().all(|i| i.state == InstanceState::Running), "{stopped:?}");
}
