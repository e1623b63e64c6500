//! `--launcher tender` with the real tender under real KVM: httpd is deployed and fetched at the
//! guest address `ps` shows, a `kill -9`ed tender is restarted, a daemon restart adopts the running
//! tender, `rm` takes the process and its tap away, and a QEMU image is refused with the reason;
//! on-demand httpd and kvlog sleep, wake on their first request and sleep again, and a crash
//! during a wake closes the waiting client's connection.
//!
//! Each test runs its rack inside a network namespace it creates (the test thread joins it, so
//! the daemon, the CLI and the test's own HTTP requests all live there): the taps and 10.64.x.y
//! addresses never touch the host's network. Needs KVM and root: skipped with the reason
//! otherwise, failed instead under MAST_REQUIRE_KVM=1.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::OwnedFd,
    path::PathBuf,
    process::Command,
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use common::Rack;
use hostnet::ip;
use images::{Arch, Platform, build};
use rack_api::{Instance, InstanceState};

/// Whether this machine can run the tests; prints why not, or panics under MAST_REQUIRE_KVM=1.
fn can_run(test: &str) -> bool {
    if !qemu::kvm::available_for(test) {
        return false;
    }
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        !std::env::var("MAST_REQUIRE_KVM").is_ok_and(|v| v == "1"),
        "{test} needs root (network namespaces and taps) and MAST_REQUIRE_KVM=1"
    );
    eprintln!("skipped {test}: creating network namespaces and taps needs root");
    false
}

/// The release tender, built once per test binary.
fn tender_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = build::workspace_root();
            let status = Command::new("cargo")
                .current_dir(&root)
                .args(["build", "--release", "--quiet", "-p", "tender"])
                .status()
                .expect("cargo runs");
            assert!(status.success(), "cargo build --release -p tender failed");
            root.join("target/release/tender")
        })
        .clone()
}

fn tender_httpd() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| tender_image("httpd")).clone()
}

fn tender_image(app: &str) -> PathBuf {
    build::build_for_platform(&build::workspace_root(), app, Arch::X86_64, Platform::Tender, build::Profile::Release)
        .unwrap_or_else(|e| panic!("{app} builds for the tender: {e:#}"))
        .artifact
}

/// A network namespace the calling thread lives in until drop, which moves the thread back and
/// deletes the namespace (with every tap left in it).
struct InNamespace {
    home: OwnedFd,
    netns: Option<ip::Netns>,
}

impl InNamespace {
    fn enter(test: &str) -> InNamespace {
        let home = rustix::fs::open("/proc/thread-self/ns/net", rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty())
            .expect("this thread's namespace opens");
        let netns = ip::Netns::create(&format!("mast-rm-{test}-{}", std::process::id())).expect("ip netns add");
        ip::enter(&netns.open().expect("the namespace opens")).expect("setns");
        InNamespace { home, netns: Some(netns) }
    }
}

impl InNamespace {
    fn name(&self) -> &str {
        self.netns.as_ref().map_or("", |n| n.name())
    }
}

impl Drop for InNamespace {
    fn drop(&mut self) {
        let _ = ip::enter(&self.home);
        if let Some(netns) = self.netns.take() {
            netns.delete().expect("the namespace is deleted");
        }
    }
}

/// GET `path` from `address` (status, body), or `None` when no complete answer came.
fn get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

/// The instance's endpoint as `ps` reports it: the guest's own address.
fn endpoint(instance: &Instance) -> SocketAddr {
    let port = instance.ports.first().unwrap_or_else(|| panic!("{} has no port: {instance:?}", instance.id));
    let address = port.address.unwrap_or_else(|| panic!("a tender instance reports its guest address: {port:?}"));
    SocketAddr::new(address, port.guest_port)
}

fn wait_for_page(address: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, body)) = get(address, "/") {
            return body;
        }
        assert!(Instant::now() < deadline, "no HTTP 200 from {address} within 30 s");
        thread::sleep(Duration::from_millis(50));
    }
}

fn serving(rack: &Rack) -> Instance {
    let instances = rack.wait_for("httpd to run", Duration::from_secs(30), |all| {
        all.len() == 1 && all[0].state == InstanceState::Running && !all[0].ports.is_empty()
    });
    let page = wait_for_page(endpoint(&instances[0]));
    assert!(page.contains("<title>Mast httpd</title>"), "{page}");
    instances[0].clone()
}

/// A rack whose daemon runs the tender launcher inside `namespace`, started with `ip netns exec`;
/// the CLI runs from this thread, already inside.
fn tender_rack(namespace: &InNamespace) -> Rack {
    let tender = tender_binary();
    let name = namespace.name();
    let rack = Rack::start_under(
        &["ip", "netns", "exec", name],
        &["--launcher", "tender", "--tender", tender.to_str().expect("utf-8 path")],
    );
    rack.ok(&["image", "push", tender_httpd().to_str().expect("utf-8 path")]);
    rack
}

fn taps() -> Vec<String> {
    ip::interfaces().expect("interfaces").into_iter().filter(|i| i.starts_with("mt")).collect()
}

#[test]
fn httpd_under_the_tender_serves_restarts_is_adopted_and_is_removed() {
    if !can_run("httpd_under_the_tender_serves_restarts_is_adopted_and_is_removed") {
        return;
    }
    let namespace = InNamespace::enter("life");
    let mut rack = tender_rack(&namespace);
    rack.ok(&["deploy", "httpd"]);
    let first = serving(&rack);
    assert_eq!(endpoint(&first).to_string(), "10.64.0.2:8080", "slot 0 of the default subnet");
    let ps = rack.ok(&["ps"]);
    assert!(ps.contains("10.64.0.2:8080/tcp"), "ps shows the guest's address:\n{ps}");
    assert_eq!(taps(), ["mt0"]);
    let hosts = rack.ok(&["host", "ls"]);
    assert!(hosts.contains("tender"), "host ls names the launcher:\n{hosts}");

    // kill -9 the tender: the reconciler sees SIGKILL and starts a new one, at the same address.
    common::kill(first.pid.expect("running"));
    let after = rack.wait_for("the killed tender to be restarted", Duration::from_secs(30), |all| {
        all[0].restarts == 1 && all[0].state == InstanceState::Running
    });
    assert_eq!(after[0].exit_status, Some(-9), "{:?}", after[0]);
    assert_ne!(after[0].pid, first.pid);
    let second = serving(&rack);
    assert_eq!(endpoint(&second), endpoint(&first));

    // The daemon dies; the tender keeps serving and the next daemon adopts it (same pid).
    rack.kill_daemon();
    wait_for_page(endpoint(&second));
    rack.start_daemon();
    let adopted = serving(&rack);
    assert_eq!((adopted.pid, adopted.restarts), (second.pid, 1), "adopted, not restarted");

    rack.ok(&["rm", &adopted.id]);
    rack.wait_for("the instance to be removed", Duration::from_secs(30), |all| {
        all.iter().all(|i| !i.state.is_active())
    });
    let pid = adopted.pid.expect("running");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "the tender {pid} is still running after rm");
        thread::sleep(Duration::from_millis(50));
    }
    assert!(taps().is_empty(), "rm deletes the tap: {:?}", taps());
}

#[test]
fn a_qemu_image_is_refused_with_the_reason() {
    if !can_run("a_qemu_image_is_refused_with_the_reason") {
        return;
    }
    let namespace = InNamespace::enter("qemu");
    let rack = tender_rack(&namespace);
    let qemu_httpd = common::image("httpd", Arch::X86_64);
    rack.ok(&["image", "push", qemu_httpd.to_str().expect("utf-8 path")]);
    let bytes = std::fs::read(&qemu_httpd).expect("the QEMU image reads");
    let qemu_id = images::artifact::read_unverified(&bytes).expect("a well-formed image").0.to_string();
    // Refused at deploy, before any launch, with the build a tender host runs.
    let refused = rack.cli(&["deploy", &qemu_id, "--detach"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("no host of this rack can run httpd") && stderr.contains("--platform tender"), "{stderr}");
    assert!(rack.ps().is_empty(), "nothing was placed");
    assert!(taps().is_empty(), "no tap was made for it: {:?}", taps());
}

/// Sends one request to `address` and reads the whole answer: (status, body), or what went wrong.
fn exchange(address: SocketAddr, method: &str, path: &str, body: &[u8]) -> Result<(u16, String), String> {
    let mut stream =
        TcpStream::connect_timeout(&address, Duration::from_secs(2)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
    let head =
        format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(&[head.as_bytes(), body].concat()).map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no status in {text:?}"))?;
    Ok((status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

/// Waits until the (only) instance of `deployment` has a gate in `state`; returns it.
fn gate_in(rack: &Rack, deployment: &str, state: rack_api::GateState, within: Duration) -> Instance {
    let what = format!("{deployment}'s gate to be {}", state.as_str());
    rack.wait_for(&what, within, |all| {
        all.iter().any(|i| i.deployment == deployment && i.gate.is_some_and(|g| g.state == state))
    })
    .into_iter()
    .find(|i| i.deployment == deployment)
    .expect("found by the wait")
}

/// The daemon's log and every instance's console and launcher log, for a failure message.
fn diagnose(rack: &Rack) -> String {
    let read =
        |path: std::path::PathBuf| std::fs::read_to_string(&path).map(|t| format!("--- {}\n{t}", path.display()));
    let mut text = read(rack.data_dir().join("daemon.stderr")).unwrap_or_default();
    for entry in std::fs::read_dir(rack.data_dir().join("instances")).into_iter().flatten().flatten() {
        text.extend(read(entry.path().join("console.log")));
        text.extend(read(entry.path().join("launcher.stderr")));
    }
    text
}

/// The tender processes of `instance` (the gate's first appliance) now.
fn tenders_of(instance: &str) -> Vec<u32> {
    common::processes_mentioning(&format!("instances/{instance}/"))
}

#[test]
fn on_demand_appliances_sleep_wake_on_the_first_request_and_sleep_again() {
    if !can_run("on_demand_appliances_sleep_wake_on_the_first_request_and_sleep_again") {
        return;
    }
    let namespace = InNamespace::enter("summon");
    let rack = tender_rack(&namespace);
    rack.ok(&["image", "push", tender_image("kvlog").to_str().expect("utf-8 path")]);

    // httpd: asleep at its own stable address; no tender runs.
    rack.ok(&["deploy", "httpd", "--on-demand", "--idle-timeout", "1s", "--detach"]);
    let asleep = gate_in(&rack, "d1", rack_api::GateState::Asleep, Duration::from_secs(30));
    let address = endpoint(&asleep);
    assert_eq!(address.to_string(), "127.77.0.1:8080", "the first gate address, the manifest's port");
    assert!(tenders_of(&asleep.id).is_empty(), "nothing runs while asleep");
    let ps = rack.ok(&["ps"]);
    assert!(ps.contains("asleep") && ps.contains("0 wakes"), "ps shows the gate:\n{ps}");

    for round in 1..=2u64 {
        // The first request wakes it and is answered: no reset, no retry.
        let started = Instant::now();
        let (status, page) =
            exchange(address, "GET", "/", b"").unwrap_or_else(|e| panic!("wake {round}: {e}\n{}", diagnose(&rack)));
        assert_eq!(status, 200, "wake {round}");
        assert!(page.contains("<title>Mast httpd</title>"), "{page}");
        eprintln!("wake {round}: first response after {:?}", started.elapsed());
        let awake = gate_in(&rack, "d1", rack_api::GateState::Running, Duration::from_secs(5));
        let gate = awake.gate.expect("has a gate");
        assert_eq!(gate.wakes, round, "{gate:?}");
        assert!(gate.last_wake_us.is_some_and(|us| us > 0), "{gate:?}");
        assert_eq!(tenders_of(&asleep.id).len(), 1, "one appliance runs");
        // Idle for the timeout: stopped again, its accounting kept.
        let slept = gate_in(&rack, "d1", rack_api::GateState::Asleep, Duration::from_secs(10));
        let gate = slept.gate.expect("has a gate");
        assert!(gate.awake_ms >= 1000, "awake at least the idle timeout: {gate:?}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !tenders_of(&asleep.id).is_empty() {
            assert!(Instant::now() < deadline, "the tender still runs after the gate slept");
            thread::sleep(Duration::from_millis(20));
        }
    }
    let stats = rack.ok(&["stats", "-o", "json"]);
    assert!(stats.contains("\"awake_ms\""), "stats reports time awake:\n{stats}");

    // kvlog: an append wakes it; after a sleep the record is still there.
    rack.ok(&["deploy", "kvlog", "--on-demand", "--idle-timeout", "1s", "--detach"]);
    let kvlog = endpoint(&gate_in(&rack, "d2", rack_api::GateState::Asleep, Duration::from_secs(30)));
    let (status, _) = exchange(kvlog, "POST", "/append?key=k", b"kept across sleeps")
        .unwrap_or_else(|e| panic!("the append wakes kvlog: {e}\n{}", diagnose(&rack)));
    assert_eq!(status, 201, "acknowledged");
    gate_in(&rack, "d2", rack_api::GateState::Asleep, Duration::from_secs(10));
    assert_eq!(exchange(kvlog, "GET", "/log/0", b""), Ok((200, "kept across sleeps".into())));

    // A crash during the wake (httpd refuses its argument and exits before it listens): the
    // waiting client's connection is closed, not left hanging, and the restart policy applies.
    rack.ok(&["deploy", "httpd", "--on-demand", "--arg", "timeout=0", "--restart", "never", "--detach"]);
    let broken = endpoint(&gate_in(&rack, "d3", rack_api::GateState::Asleep, Duration::from_secs(30)));
    let started = Instant::now();
    let answer = exchange(broken, "GET", "/", b"");
    assert!(answer.is_err(), "no answer from a crashed wake: {answer:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "closed promptly, not at a deadline: {:?}", started.elapsed());
    let exited = rack.wait_for("the crashed gate to be exited", Duration::from_secs(30), |all| {
        all.iter().any(|i| i.deployment == "d3" && i.state == InstanceState::Exited)
    });
    let crashed = exited.iter().find(|i| i.deployment == "d3").expect("found");
    assert_eq!(crashed.exit_status, Some(2), "httpd's bad-arguments status: {crashed:?}");
}
