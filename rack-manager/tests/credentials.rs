//! Split credentials, attacked for real on loopback: an agent joins with a one-use join token and
//! gets credentials of its own; the manager's admin token is refused by the agent, the agent's
//! credential by the manager's admin routes; used and forged join tokens are refused; tokens are
//! never on a command line; files are private; and an agent will not stop a process it did not
//! launch, whatever pid and start time it is sent.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{Rack, agent_call, image};
use images::Arch;
use rack_api::Host;

/// One plain HTTP request to the manager's API: (status, body).
fn manager_call(rack: &Rack, method: &str, path: &str, bearer: &str, body: &str) -> (u16, String) {
    let url = rack.url();
    let host_port = url.strip_prefix("http://").expect("http");
    let mut stream = TcpStream::connect(host_port).expect("the manager listens");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: m\r\nAuthorization: Bearer {bearer}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("sent");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    common::split_response(&response)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

fn joined_host(rack: &Rack, name: &str) -> Host {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let hosts: Vec<Host> = serde_json::from_str(&rack.ok(&["host", "ls", "-o", "json"])).expect("json");
        if let Some(host) = hosts.into_iter().find(|h| h.name == name) {
            return host;
        }
        assert!(Instant::now() < deadline, "{name} did not join");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn credentials(agent_dir: &Path) -> serde_json::Value {
    let path = agent_dir.join("credentials");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < deadline, "the agent kept no credentials");
        std::thread::sleep(Duration::from_millis(50));
    }
    serde_json::from_str(&std::fs::read_to_string(path).expect("readable")).expect("json")
}

#[test]
fn an_agent_joins_with_a_one_use_token_and_gets_credentials_of_its_own() {
    let mut rack = Rack::start(&["--no-local-agent"]);
    rack.add_agent("edge-1", &["--launcher", "sim"]);
    let host = joined_host(&rack, "edge-1");
    let address = host.address.expect("a joined host has an address");
    assert!(address.starts_with("https://127.0.0.1:") && address.contains("#sha256="), "{address}");
    let admin = rack.token();
    let agent_dir = rack.agents[0].1.path().to_owned();
    let join_token = std::fs::read_to_string(agent_dir.join("join.token")).expect("join token").trim().to_owned();
    let creds = credentials(&agent_dir);
    let manager_token = creds["manager_token"].as_str().expect("manager token").to_owned();
    let agent_credential = creds["agent_credential"].as_str().expect("agent credential").to_owned();

    // No token on the agent's command line.
    let pid = rack.agents[0].0.id();
    let cmdline =
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline")).into_owned();
    for secret in [&admin, &join_token, &manager_token, &agent_credential] {
        assert!(!cmdline.contains(secret.as_str()), "a token is on the agent's command line: {cmdline:?}");
    }
    assert!(cmdline.contains("--join-token-file"), "{cmdline:?}");

    // The agent answers the manager's token for it, and refuses the admin token and no token.
    assert_eq!(agent_call(&address, "GET", "/v1/agent/info", Some(&manager_token), "").0, 200);
    let (status, body) = agent_call(&address, "GET", "/v1/agent/info", Some(&admin), "");
    assert_eq!(status, 401, "the admin token must not work on an agent: {body}");
    assert_eq!(agent_call(&address, "GET", "/v1/agent/info", None, "").0, 401);

    // The agent's credential fetches images and nothing else from the manager.
    rack.ok(&["image", "push", image("hello", Arch::Aarch64).to_str().expect("utf-8 path")]);
    rack.ok(&["deploy", "hello", "--detach"]);
    let images: Vec<rack_api::Image> = serde_json::from_str(&rack.ok(&["image", "ls", "-o", "json"])).expect("json");
    let blob = format!("/v1/images/{}/blob", images[0].id);
    assert_eq!(manager_call(&rack, "GET", &blob, &agent_credential, "").0, 200);
    for (method, path, body) in [
        ("GET", "/v1/hosts", ""),
        ("GET", "/v1/instances", ""),
        ("POST", "/v1/deployments", "{\"image\":\"hello\",\"replicas\":1}"),
        ("POST", "/v1/join-tokens", "{\"ttl_s\":60}"),
        ("DELETE", "/v1/hosts/edge-1", ""),
    ] {
        let (status, answer) = manager_call(&rack, method, path, &agent_credential, body);
        assert_eq!(status, 403, "{method} {path} with an agent credential: {answer}");
    }
    // It re-joins only as itself: another name is refused.
    let rejoin = |name: &str| {
        format!(
            "{{\"name\":\"{name}\",\"address\":\"https://127.0.0.1:9\",\"launcher\":\"sim\",\"arches\":[],\"memory_mib\":1,\"vcpus\":1,\"fingerprint\":\"{}\"}}",
            address.split_once("#sha256=").expect("pinned").1
        )
    };
    assert_eq!(manager_call(&rack, "POST", "/v1/hosts", &agent_credential, &rejoin("edge-2")).0, 403);
    // The used join token and forged ones are refused.
    for token in [join_token.as_str(), "join-0000", "agent:00:00:edge-1"] {
        let (status, answer) = manager_call(&rack, "POST", "/v1/hosts", token, &rejoin("edge-3"));
        assert_eq!(status, 401, "{token}: {answer}");
    }

    // Private files on both sides, the fetched image included.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(agent_dir.join("images")).expect("images").count() == 0 {
        assert!(Instant::now() < deadline, "the agent never fetched the image");
        std::thread::sleep(Duration::from_millis(100));
    }
    let manager_dir = rack.data_dir().to_owned();
    for dir in [&manager_dir, &agent_dir] {
        assert_eq!(mode(dir), 0o700, "{}", dir.display());
        for entry in std::fs::read_dir(dir.join("images")).expect("images").flatten() {
            assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
        }
    }
    for file in [manager_dir.join("state.sqlite"), manager_dir.join("token"), manager_dir.join("join-tokens")] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    assert_eq!(mode(&agent_dir.join("credentials")), 0o600);

    // A restarted agent re-joins with its own credential (its join token is spent).
    rack.restart_agent(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = std::fs::read_to_string(agent_dir.join("agent.stderr")).unwrap_or_default();
        if log.matches("joined").count() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the restarted agent did not re-join:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    rack.ok(&["deploy", "hello", "--detach"]);
    rack.wait_for("both instances to run on the restarted agent", Duration::from_secs(30), |all| {
        all.len() == 2 && all.iter().all(|i| i.started_ms.is_some())
    });
}

#[test]
fn token_files_that_others_can_read_are_refused_with_the_fix() {
    let rack = Rack::start(&["--no-local-agent"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let join = dir.path().join("join.token");
    rack.join_token(&join);
    assert_eq!(mode(&join), 0o600, "join-token --out writes a private file");
    std::fs::set_permissions(&join, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let output = Command::new(common::BIN)
        .arg("--data-dir")
        .arg(dir.path().join("agent"))
        .args(["agent", "--launcher", "sim", "--join", &rack.url(), "--join-token-file"])
        .arg(&join)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("chmod 600 {}", join.display())), "{stderr}");

    let admin = dir.path().join("admin.token");
    std::fs::write(&admin, rack.token()).expect("written");
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let output = rack.cli(&["--token-file", admin.to_str().expect("utf-8"), "ps"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains(&format!("chmod 600 {}", admin.display())), "{stderr}");
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(rack.cli(&["--token-file", admin.to_str().expect("utf-8"), "ps"]).status.success());

    // The manager's own token file, loosened, stops a restart with the fix named.
    let token = rack.data_dir().join("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let output = rack.cli(&["ps"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains(&format!("chmod 600 {}", token.display())), "{output:?}");
}

/// Issue #12, row 8: `POST /v1/agent/stop` with the pid and start time of an unrelated process
/// killed it. Now the agent refuses any run it has not recorded launching.
#[test]
fn an_agent_refuses_to_stop_a_process_it_did_not_launch() {
    let mut rack = Rack::start(&["--no-local-agent"]);
    // The QEMU launcher, whose `stop` sends SIGKILL to a live pid with that start time.
    rack.add_agent("edge-1", &[]);
    let address = joined_host(&rack, "edge-1").address.expect("an address");
    let creds = credentials(rack.agents[0].1.path());
    let manager_token = creds["manager_token"].as_str().expect("manager token");

    let mut victim = Command::new("sleep").arg("300").spawn().expect("sleep starts");
    let pid = victim.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let start_ticks: u64 = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .nth(19)
        .and_then(|s| s.parse().ok())
        .expect("start time");
    let run = format!("{{\"instance\":\"hello-1\",\"pid\":{pid},\"start_ticks\":{start_ticks},\"log_offset\":0}}");
    for route in ["/v1/agent/stop", "/v1/agent/stats"] {
        let (status, body) = agent_call(&address, "POST", route, Some(manager_token), &run);
        std::thread::sleep(Duration::from_millis(300));
        assert!(victim.try_wait().expect("waits").is_none(), "{route} killed the unrelated process ({status}: {body})");
        assert_eq!(status, 403, "{route}: {body}");
        assert!(body.contains("not_launched_here") && body.contains(&format!("pid {pid}")), "{body}");
    }
    let _ = victim.kill();
    let _ = victim.wait();
}

/// The manager pins the certificate an agent joined with: an impostor on the agent's address
/// (another agent, so another certificate) gets no call through the handshake, and the host is
/// marked unreachable rather than driven through it.
#[test]
fn the_manager_talks_only_to_the_certificate_it_pinned() {
    let mut rack = Rack::start(&["--no-local-agent"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
    let listen = format!("127.0.0.1:{port}");
    rack.add_agent("edge-1", &["--launcher", "sim", "--listen", &listen]);
    joined_host(&rack, "edge-1");
    let (agent, _) = &mut rack.agents[0];
    common::kill(agent.id());
    let _ = agent.wait();

    let url = rack.url();
    rack.spawn_agent(&["--manager-url", &url], &["--launcher", "sim", "--listen", &listen]);
    let impostor_log = rack.agents[1].1.path().join("agent.stderr");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let hosts: Vec<Host> = serde_json::from_str(&rack.ok(&["host", "ls", "-o", "json"])).expect("json");
        let log = std::fs::read_to_string(&impostor_log).unwrap_or_default();
        let unreachable = hosts.iter().any(|h| h.name == "edge-1" && h.state == rack_api::HostState::Unreachable);
        if unreachable && log.contains("TLS handshake") {
            break;
        }
        assert!(Instant::now() < deadline, "the manager kept edge-1 reachable through an impostor: {hosts:?}\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(&impostor_log).unwrap_or_default();
    assert!(!log.contains("joined"), "the impostor was never invited or joined: {log}");
}
