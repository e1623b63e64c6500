//! Volumes through the rack manager, with real QEMU: `kvlog` declares one (`[[block]]`), the agent
//! creates it under `volumes/<deployment>/<instance>.img`, appends made through HTTP survive a
//! `kill -9` of the VM (the restarted run finds them) and a `kill -9` of the daemon, and `rm`
//! deletes the volume with the instance.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    time::Duration,
};

use common::{Rack, host_port, image, wait_for_200};
use images::Arch;
use rack_api::{Instance, InstanceState};

/// One request on a new connection: status and body.
fn request(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting to kvlog");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("read timeout");
    let head =
        format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(&[head.as_bytes(), body].concat()).expect("sending");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("reading the response");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

fn running(rack: &Rack) -> Instance {
    let mut instances = rack.wait_for("kvlog to run", Duration::from_secs(60), |all| {
        all.len() == 1 && all[0].state == InstanceState::Running && !all[0].ports.is_empty()
    });
    let instance = instances.remove(0);
    wait_for_200(host_port(&instance), "/healthz", Duration::from_secs(60));
    instance
}

fn volume_of(rack: &Rack, instance: &Instance) -> PathBuf {
    rack.data_dir().join("volumes").join(&instance.deployment).join(format!("{}.img", instance.id))
}

/// Checks records `0..count` (this test's values) and that the log holds `total`.
fn check_records(port: u16, count: u32, total: u32) {
    for seq in 0..count {
        assert_eq!(request(port, "GET", &format!("/log/{seq}"), b""), (200, format!("value {seq}")), "record {seq}");
    }
    let (status, stats) = request(port, "GET", "/stats", b"");
    assert_eq!(status, 200);
    assert!(stats.contains(&format!("\"records\":{total},")), "{stats}");
}

fn volumes_survive_kills_and_go_with_rm(arch: Arch) {
    let mut rack = Rack::start(&[]);
    rack.ok(&["image", "push", image("kvlog", arch).to_str().expect("utf-8 path")]);
    rack.ok(&["deploy", "kvlog"]);
    let first = running(&rack);
    let volume = volume_of(&rack, &first);
    let size = std::fs::metadata(&volume).unwrap_or_else(|e| panic!("the volume {}: {e}", volume.display())).len();
    assert_eq!(size, 64 << 20, "the manifest's size_mib");
    let port = host_port(&first);
    for seq in 0..10 {
        let (status, body) =
            request(port, "POST", &format!("/append?key=k{}", seq % 3), format!("value {seq}").as_bytes());
        assert_eq!((status, body), (201, format!("{{\"seq\":{seq}}}\n")));
    }

    // kill -9 of the VM: the restarted run recovers every acknowledged append from the volume.
    common::kill(first.pid.expect("a running instance has a pid"));
    let restarted = rack.wait_for("the killed instance to be restarted", Duration::from_secs(60), |all| {
        all[0].restarts == 1 && all[0].state == InstanceState::Running
    });
    let port = host_port(&restarted[0]);
    wait_for_200(port, "/healthz", Duration::from_secs(60));
    check_records(port, 10, 10);
    assert_eq!(request(port, "GET", "/latest/k0", b"").1, "value 9");
    assert_eq!(volume_of(&rack, &restarted[0]), volume, "the same volume file for every run");
    let console = rack.ok(&["logs", &first.id]);
    assert!(console.contains("recovered 10 records"), "{console}");

    // kill -9 of the daemon: the VM keeps its volume; the next daemon adopts it.
    rack.kill_daemon();
    rack.start_daemon();
    let adopted = running(&rack);
    assert_eq!(adopted.pid, restarted[0].pid, "adopted, not restarted");
    assert_eq!(request(host_port(&adopted), "POST", "/append?key=after", b"daemon restart").0, 201);
    check_records(host_port(&adopted), 10, 11);

    // rm: the instance and its volume go together.
    rack.ok(&["rm", &first.id]);
    assert!(!volume.exists(), "rm deletes the volume");
    assert!(!volume.parent().expect("a deployment directory").exists(), "and its deployment's empty directory");
}

#[test]
fn kvlog_volume_survives_kills_and_goes_with_rm() {
    volumes_survive_kills_and_go_with_rm(Arch::Aarch64);
}

#[test]
fn kvlog_volume_on_x86_64_under_kvm() {
    if !qemu::kvm::available_for("kvlog_volume_on_x86_64_under_kvm") {
        return;
    }
    volumes_survive_kills_and_go_with_rm(Arch::X86_64);
}
