//! Deploy latency through the manager, measured (not asserted): run with
//! `cargo test -p rack-manager --test timing -- --ignored --nocapture`.

mod common;

use std::time::{Duration, Instant};

use common::{Rack, image};
use images::Arch;
use rack_api::Instance;

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// From the start of `rack-manager deploy hello --detach` (a CLI process) to the VM's first
/// console line in the instance's log, on the built-in agent.
#[test]
#[ignore = "a measurement; run it by name with --ignored --nocapture"]
fn deploy_to_first_console_line() {
    for arch in [Arch::Aarch64, Arch::X86_64] {
        if arch == Arch::X86_64 && !qemu::kvm::available_for("deploy_to_first_console_line (x86_64)") {
            continue;
        }
        let rack = Rack::start(&[]);
        rack.ok(&["image", "push", image("hello", arch).to_str().expect("utf-8 path")]);
        let (mut to_api, mut to_console) = (Vec::new(), Vec::new());
        for _ in 0..15 {
            let started = Instant::now();
            let instances: Vec<Instance> =
                serde_json::from_str(&rack.ok(&["deploy", "hello", "--detach", "-o", "json"])).expect("json");
            to_api.push(started.elapsed());
            let log = rack.data_dir().join("instances").join(&instances[0].id).join("console.log");
            loop {
                if std::fs::read_to_string(&log).is_ok_and(|text| text.contains("Hello from Mast")) {
                    to_console.push(started.elapsed());
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(20), "no console output in {}", log.display());
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        println!(
            "{arch}: deploy CLI returned after {:?} (median), first console line after {:?} (median of {})",
            median(to_api),
            median(to_console.clone()),
            to_console.len()
        );
    }
}

/// From the start of `rack-manager deploy httpd --detach` to the first HTTP 200 through the port
/// the manager forwarded, polling the API for the port and retrying short GETs (early connections
/// to QEMU's user network can stall before the guest listens).
#[test]
#[ignore = "a measurement; run it by name with --ignored --nocapture"]
fn deploy_to_first_http_200() {
    for arch in [Arch::Aarch64, Arch::X86_64] {
        if arch == Arch::X86_64 && !qemu::kvm::available_for("deploy_to_first_http_200 (x86_64)") {
            continue;
        }
        first_200(arch);
    }
}

fn first_200(arch: Arch) {
    let rack = Rack::start(&[]);
    rack.ok(&["image", "push", image("httpd", arch).to_str().expect("utf-8 path")]);
    // By DHCP (the manifest's default), then with the address QEMU's user network would lease,
    // given as boot arguments.
    for extra in [&[][..], &["--arg", "ip=10.0.2.15/24", "--arg", "gw=10.0.2.2"][..]] {
        let (mut samples, mut launched) = (Vec::new(), Vec::new());
        for _ in 0..11 {
            let started = Instant::now();
            let mut args = vec!["deploy", "httpd", "--detach", "-o", "json"];
            args.extend_from_slice(extra);
            let instances: Vec<Instance> = serde_json::from_str(&rack.ok(&args)).expect("json");
            let id = &instances[0].id;
            let port = loop {
                let instance: Instance =
                    serde_json::from_str(&rack.api_get(&format!("/v1/instances/{id}"))).expect("json");
                if let Some(port) = instance.ports.first() {
                    launched.push(started.elapsed());
                    break port.host_port;
                }
                assert!(started.elapsed() < Duration::from_secs(20), "{id} never got a port");
                std::thread::sleep(Duration::from_millis(1));
            };
            loop {
                if let Some((200, _)) = common::http_get(port, "/", "", Duration::from_millis(100)) {
                    samples.push(started.elapsed());
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(20), "{id} never answered 200");
            }
            rack.ok(&["rm", id]);
        }
        println!(
            "{arch} httpd {extra:?}: deploy -> VM started {:?}, -> first HTTP 200 through the manager {:?} (medians of {})",
            median(launched),
            median(samples.clone()),
            samples.len()
        );
    }
}
