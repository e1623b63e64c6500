//! Attacks on the rack manager's HTTP listeners, run for real against `rack-manager serve` and
//! `rack-manager agent` on 127.0.0.1: an absurd `Content-Length` with and without a token, request
//! heads whose body never comes, heads cut short (slowloris) on the API and agent ports, and
//! clients trickling TLS bytes at the peer port while two racks heartbeat each other.
//!
//! Each names the failure it guards against (issue #12's table) and prints what it measured.
//! The racks use the simulated launcher: nothing here boots a VM.

mod common;
mod peering;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use common::{Rack, image};
use images::Arch;
use peering::{free_port, mesh, peer, start, until};

const SIM: &[&str] = &["--launcher", "sim", "--memory-mib", "4096"];
/// How long an authenticated request may take while the attack runs: generous for a loaded CI
/// machine, far below "forever" (the failure these tests guard against).
const PROMPT: Duration = Duration::from_secs(2);

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).expect("the URL ends in a port")
}

fn connect(port: u16) -> TcpStream {
    let stream =
        TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).expect("the listener accepts connections");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a timeout");
    stream.set_write_timeout(Some(Duration::from_secs(10))).expect("a timeout");
    stream
}

/// A field of `/proc/<pid>/status` in its first unit (kB for memory).
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon is alive");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn daemon_pid(rack: &Rack) -> u32 {
    rack.daemon.as_ref().expect("the daemon runs").id()
}

fn assert_alive(rack: &mut Rack) {
    let daemon = rack.daemon.as_mut().expect("the daemon was started");
    let exited = daemon.try_wait().expect("waitpid");
    assert!(
        exited.is_none(),
        "the daemon died ({exited:?}):\n{}",
        std::fs::read_to_string(rack.data_dir().join("daemon.stderr")).unwrap_or_default()
    );
}

/// One authenticated GET: (status, time taken), `None` for no answer within 10 s.
fn timed_get(port: u16, path: &str, token: &str) -> (Option<u16>, Duration) {
    let started = Instant::now();
    let answer = common::http_get(port, path, &format!("Authorization: Bearer {token}\r\n"), Duration::from_secs(10));
    (answer.map(|(status, _)| status), started.elapsed())
}

/// The status line's code of whatever `stream` answers, and whether the server then closed it.
fn status_and_close(stream: &mut TcpStream) -> (u16, bool) {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&answer);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, closed)
}

/// Issue #12: "one `POST /v1/images` with `Content-Length: 1099511627776` and no token: 401,
/// then the daemon aborts" (the server drained the unread body into one buffer).
#[test]
fn a_terabyte_content_length_is_refused_before_any_body_is_read() {
    let mut rack = Rack::start(SIM);
    let (port, token, pid) = (port_of(&rack.url()), rack.token(), daemon_pid(&rack));
    let before_kib = proc_status(pid, "VmRSS");
    let cases =
        [("no token", String::new(), 401), ("a valid token", format!("Authorization: Bearer {token}\r\n"), 413)];
    for (what, auth, expected) in cases {
        let started = Instant::now();
        let mut stream = connect(port);
        write!(stream, "POST /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 1099511627776\r\n\r\n")
            .expect("the head is sent");
        let (status, closed) = status_and_close(&mut stream);
        let took = started.elapsed();
        assert_eq!(status, expected, "{what}");
        assert!(closed, "{what}: the server closes a connection whose body it did not read");
        assert!(took < PROMPT, "{what}: answered in {took:?}, without waiting for the body");
        println!("1 TiB Content-Length with {what}: {status} and closed in {took:?}");
        assert_alive(&mut rack);
    }
    let after_kib = proc_status(pid, "VmRSS");
    println!("daemon RSS: {before_kib} KiB before, {after_kib} KiB after");
    assert!(after_kib < before_kib + 16 * 1024, "RSS grew from {before_kib} KiB to {after_kib} KiB");
    assert_eq!(timed_get(port, "/v1/instances", &token).0, Some(200), "the API still answers");
}

/// Opens the slow clients of one round against `port` and keeps them open: `count` heads without
/// a token announcing a body that never comes, `count` heads cut short (never ending), and 8
/// authenticated heads whose body never comes. `path` is a route that takes a body.
fn slow_clients(port: u16, path: &str, token: &str, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..count {
        let mut stream = connect(port);
        write!(stream, "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2000\r\n\r\n").expect("sent");
        held.push(stream);
        let mut stream = connect(port);
        write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").expect("sent");
        held.push(stream);
    }
    for _ in 0..8 {
        let mut stream = connect(port);
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 2000\r\n\r\n"
        )
        .expect("sent");
        held.push(stream);
    }
    // Time for the server to take them all in.
    thread::sleep(Duration::from_millis(300));
    held
}

/// Plain-HTTP heads (one with the admin token) sent to a TLS port, whose writes may fail once the
/// server has refused the handshake.
fn slow_clients_tolerant(port: u16, token: &str) -> Vec<TcpStream> {
    (0..8)
        .map(|_| {
            let mut stream = connect(port);
            let _ = write!(
                stream,
                "POST /v1/agent/launch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 2000\r\n\r\n"
            );
            stream
        })
        .collect()
}

/// The slowest of five authenticated GETs of `path`, each of which must answer 200.
fn slowest_get(port: u16, path: &str, token: &str) -> Duration {
    (0..5)
        .map(|_| {
            let (status, took) = timed_get(port, path, token);
            assert_eq!(status, Some(200), "GET {path} during the attack (after {took:?})");
            took
        })
        .max()
        .expect("five")
}

/// Issue #12: "8 connections, no token, each a request head with `Content-Length: 2000` and no
/// body: every worker waits forever for the body; authenticated `ps` times out".
#[test]
fn requests_whose_body_never_comes_do_not_hold_the_api() {
    let mut rack = Rack::start(SIM);
    let (port, token, pid) = (port_of(&rack.url()), rack.token(), daemon_pid(&rack));
    for count in [8, 100] {
        let held = slow_clients(port, "/v1/deployments", &token, count);
        let slowest = slowest_get(port, "/v1/instances", &token);
        println!(
            "{} slow connections on the API port: slowest authenticated GET /v1/instances {slowest:?}; daemon {} \
             threads, RSS {} KiB",
            held.len(),
            proc_status(pid, "Threads"),
            proc_status(pid, "VmRSS")
        );
        assert!(slowest < PROMPT, "ps took {slowest:?} with {} slow connections open", held.len());
        // The CLI too, through its own client.
        let started = Instant::now();
        rack.ps();
        println!("  `rack-manager ps` (a process of its own) took {:?}", started.elapsed());
        assert_alive(&mut rack);
    }
}

/// The same against an agent's port: the manager's calls to its agents must not wait behind a
/// stranger's sockets.
#[test]
fn a_slowloris_on_an_agent_port_does_not_hold_the_agent() {
    let mut rack = Rack::start(SIM);
    let token = rack.token();
    let port = free_port();
    let url = rack.url();
    rack.spawn_agent(&["--manager-url", &url], &["--launcher", "sim", "--listen", &format!("127.0.0.1:{port}")]);
    // Added first, so that the agent has the token its manager calls it with.
    let address = common::printed_agent_address(rack.agents[0].1.path());
    rack.ok(&["host", "add", "edge", &address]);
    let manager_token = common::manager_token_of(rack.agents[0].1.path());
    // The agent's port speaks TLS: its slowloris is handshakes that never finish (a ClientHello
    // cut short, or nothing at all), and a stranger's plain HTTP (refused at once).
    let mut held = Vec::new();
    for i in 0..200 {
        let mut stream = connect(port);
        if i % 2 == 0 {
            let _ = stream.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
        }
        held.push(stream);
    }
    let _ = slow_clients_tolerant(port, &token);
    thread::sleep(Duration::from_millis(300));
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let (status, body) = common::agent_call(&address, "GET", "/v1/agent/info", Some(&manager_token), "");
        assert_eq!(status, 200, "{body}");
        slowest = slowest.max(started.elapsed());
    }
    println!("{} slow connections on the agent port: slowest authenticated GET /v1/agent/info {slowest:?}", held.len());
    assert!(slowest < PROMPT, "the agent took {slowest:?} with {} slow connections open", held.len());
    // The manager reaches it as well.
    assert!(rack.ok(&["host", "ls"]).contains("edge"));
}

/// A client that opens `count` connections to `port` and sends one byte of a TLS ClientHello on
/// each every `every`, reconnecting whenever the server closed one; until `stop`. Returns how
/// many times the server closed a connection.
fn trickle_tls(port: u16, count: usize, every: Duration, stop: Arc<AtomicBool>) -> thread::JoinHandle<usize> {
    // A record header and the start of a ClientHello: a real handshake's first bytes.
    const HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
    thread::spawn(move || {
        let open = |_| TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).ok();
        let mut streams: Vec<(Option<TcpStream>, usize)> = (0..count).map(|i| (open(i), 0)).collect();
        let mut closed = 0;
        while !stop.load(Ordering::SeqCst) {
            for (i, (stream, sent)) in streams.iter_mut().enumerate() {
                let alive = stream.as_mut().is_some_and(|s| s.write_all(&HELLO[*sent % HELLO.len()..][..1]).is_ok());
                if alive {
                    *sent += 1;
                } else {
                    closed += 1;
                    *stream = open(i);
                    *sent = 0;
                }
            }
            thread::sleep(every);
        }
        closed
    })
}

/// A client that holds `count` request heads cut short open at `port`, reopening closed ones.
fn idle_heads(port: u16, count: usize, stop: Arc<AtomicBool>) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let open = || {
            let mut stream = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).ok()?;
            stream.write_all(b"GET /v1/instances HTTP/1.1\r\nHost: x\r\n").ok()?;
            Some(stream)
        };
        let mut streams: Vec<Option<TcpStream>> = (0..count).map(|_| open()).collect();
        let mut closed = 0;
        while !stop.load(Ordering::SeqCst) {
            for stream in &mut streams {
                let alive = stream.as_mut().is_some_and(|s| s.write_all(b"X").is_ok());
                if !alive {
                    closed += 1;
                    *stream = open();
                }
            }
            thread::sleep(Duration::from_secs(1));
        }
        closed
    })
}

/// Issue #12: "200 connections without a certificate trickling one TLS byte every 5 s at the
/// peer port: the 64 peer slots fill, heartbeats are dropped, the peer declares this rack down
/// and takes its deployment over, and afterwards this healthy rack stops its own instances".
///
/// Rack a is attacked; b runs a deployment that fails over to a. Were b's heartbeats to a
/// dropped, a would see b down and take the deployment over, and b would stop its copy.
/// Meanwhile 800 idle heads sit on a's API port: 1,000 hostile connections in all.
#[test]
fn clients_trickling_tls_bytes_do_not_keep_heartbeats_out() {
    let mut a = start("a", SIM);
    let b = start("b", SIM);
    mesh(&[&a, &b]);
    b.ok(&["image", "push", image("hello", Arch::X86_64).to_str().expect("utf-8")]);
    b.ok(&["deploy", "hello", "--failover-to", "a"]);
    until("a to hold b's image and plan", Duration::from_secs(60), || {
        let plan: serde_json::Value = serde_json::from_str(&a.ok(&["failover", "plan", "-o", "json"])).ok()?;
        let incoming = plan["incoming"].as_array()?.first()?.clone();
        (incoming["image_complete"] == true && incoming["would_take_over"] == true).then_some(())
    });
    until("a and b to see each other", Duration::from_secs(10), || {
        (peer(&a, "b")["up"] == true && peer(&b, "a")["up"] == true).then_some(())
    });
    let (_, a_peer_url, _) = peering::identity(&a);
    let (a_api, a_token, pid) = (port_of(&a.url()), a.token(), daemon_pid(&a));
    let rss_before = proc_status(pid, "VmRSS");

    let stop = Arc::new(AtomicBool::new(false));
    let trickler = trickle_tls(port_of(&a_peer_url), 200, Duration::from_secs(2), stop.clone());
    let idler = idle_heads(a_api, 800, stop.clone());
    // Four leases (3 s each): long enough for a takeover, were the heartbeats kept out.
    let attack = Duration::from_secs(12);
    let started = Instant::now();
    let (mut samples, mut slowest) = (0, Duration::ZERO);
    let mut max_threads = 0;
    while started.elapsed() < attack {
        let (status, took) = timed_get(a_api, "/v1/peers", &a_token);
        assert_eq!(status, Some(200), "a's API during the attack");
        slowest = slowest.max(took);
        let peers: serde_json::Value = serde_json::from_str(&a.api_get("/v1/peers")).expect("the peer list is JSON");
        let b_seen = peers.as_array().and_then(|l| l.iter().find(|p| p["name"] == "b")).cloned();
        assert_eq!(
            b_seen.as_ref().map(|p| &p["up"]),
            Some(&serde_json::Value::Bool(true)),
            "a lost b's heartbeats {:?} into the attack: {b_seen:?}",
            started.elapsed()
        );
        max_threads = max_threads.max(proc_status(pid, "Threads"));
        samples += 1;
        thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::SeqCst);
    let closed_tls = trickler.join().expect("the trickler ends");
    let closed_heads = idler.join().expect("the idler ends");
    let rss_after = proc_status(pid, "VmRSS");
    println!(
        "{attack:?} of 200 TLS tricklers on a's peer port and 800 idle heads on its API port: a saw b up in all \
         {samples} samples; slowest authenticated GET /v1/peers {slowest:?}; a closed {closed_tls} trickling and \
         {closed_heads} idle connections; a's daemon at most {} threads, RSS {rss_before} KiB before, {rss_after} KiB \
         after",
        max_threads
    );
    assert!(closed_tls > 0, "the handshake deadline or cap cut tricklers off (else the attack was not real)");
    assert!(slowest < PROMPT, "a's API took {slowest:?} during the attack");
    assert!(a.ps().is_empty(), "a took nothing over: {:?}", a.ps());
    let on_b = b.ps();
    assert!(
        on_b.len() == 1 && on_b[0].state == rack_api::InstanceState::Running,
        "b's instance keeps running: {on_b:?}"
    );
    assert_alive(&mut a);
}
