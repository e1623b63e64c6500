//! httpd on the tender, reached over a tap device in a network namespace of the test's own: real
//! frames through the shared rings, real HTTP answers. Also what an idle appliance looks like from
//! the host: asleep, sandboxed, small.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use common::{GUEST_IP, HOST_IP, Running, TAP};

/// One HTTP/1.1 request; the whole response.
fn get(path: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&format!("{GUEST_IP}:8080").parse().expect("address"), common::TIMEOUT)
        .expect("httpd accepts connections");
    stream.set_read_timeout(Some(common::TIMEOUT)).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {GUEST_IP}\r\nConnection: close\r\n\r\n").expect("request sent");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("response read");
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn httpd_serves_its_site_over_a_tap_and_idles_asleep_in_its_sandbox() {
    let test = "httpd_serves_its_site_over_a_tap";
    if !common::kvm(test) {
        return;
    }
    let Some(netns) = common::netns("httpd") else { return };
    let image = common::tender_image("httpd");
    let mut tender = Running::spawn(
        netns.command(env!("CARGO_BIN_EXE_tender")).args(["--net", TAP, "--stats"]).arg(&image.artifact).args([
            "--",
            &format!("ip={GUEST_IP}/24"),
            &format!("gw={HOST_IP}"),
        ]),
    );
    tender.wait_for("listening on");

    let (index, health) = netns.within(|| (get("/"), get("/healthz")));
    assert!(index.starts_with("HTTP/1.1 200"), "GET /:\n{index}");
    let site = std::fs::read_to_string(common::workspace_file("kernel-apps/httpd/site/index.html")).expect("site");
    let title = site.lines().find(|l| l.contains("<title>")).expect("the site has a title").trim();
    assert!(index.contains(title), "GET / should serve the site's index.html ({title}):\n{index}");
    assert!(health.starts_with("HTTP/1.1 200"), "GET /healthz:\n{health}");

    // Idle: blocked in ppoll (state S), with the sandbox on.
    std::thread::sleep(Duration::from_millis(200));
    let status = std::fs::read_to_string(format!("/proc/{}/status", tender.child.id())).expect("tender is alive");
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).unwrap_or("?");
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");
    assert_eq!(field("Seccomp:"), "2", "filter mode\n{status}");
    assert!(field("State:").starts_with('S'), "asleep while idle: {}", field("State:"));
    // KVM adds its own worker to the process (`kvm-nx-lpage-recovery`); the tender adds none.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", tender.child.id())).expect("tasks");
    let ours: Vec<String> = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .map(|comm| comm.trim().to_owned())
        .filter(|comm| !comm.starts_with("kvm-"))
        .collect();
    assert_eq!(ours, ["tender"], "the vCPU runs on the main thread, with no other thread");
    eprintln!("idle httpd tender: PSS {} KiB, RSS {}", tender.pss_kib().unwrap_or(0), field("VmRSS:"));
}
