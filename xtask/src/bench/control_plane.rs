//! `cargo xtask bench control-plane`: does a rack's control plane keep serving its operator, and
//! keep its instances, while a hostile network holds many slow or idle connections open against
//! it (issue #12's targets)?
//!
//! Two `rack-manager serve` processes (the release binary, driven through its CLI like the
//! failover bench; `--launcher sim`, so no VM runs) on 127.0.0.1 with temporary data directories,
//! peered both ways. Rack a runs four simulated `hello` instances: two in a deployment with
//! `--failover-to b`, two in one without a plan. Once b is ready to take a's deployment over, a
//! flood opens `--connections` sockets against a's API port and peer port together for
//! `--seconds`, in five kinds in turn:
//!
//! - API port: idle (connect, send nothing); a request head with a large Content-Length and no
//!   body (no token, as an attacker has none); a request head trickled one byte a second, never
//!   ending;
//! - peer port: idle; a TLS 1.3 ClientHello trickled one byte a second (no certificate).
//!
//! A socket the daemon closes is opened again after half a second, as an attacker would. Meanwhile
//! a client runs authenticated `ps` (`GET /v1/instances` with a's token, a new connection each
//! time, as the CLI does) in a loop, each request with a 2 s deadline, and a sampler reads the
//! daemon's `/proc/<pid>/status` (VmRSS, VmHWM, Threads). After the flood and a settle time of a
//! lease and two heartbeats, b's `failover status` says whether b took anything over and a's
//! `ps -a` whether a stopped anything. Each target is printed `met` or `MISSED`; the bench exits 1
//! when one is missed.
//!
//! Every socket goes to 127.0.0.1 (checked before the flood starts), every loop ends at a
//! deadline, and the racks' processes and directories are removed on every exit, Ctrl-C included.

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    process::ExitCode,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use clap::Args;
use images::{
    Arch,
    build::{self, Profile},
};
use serde_json::Value;

use super::{
    density::{catch_interrupts, check_interrupted, interrupted},
    failover::{HEARTBEAT_MS, LEASE_MS, Rack, build_manager, wait_until},
    report::ms,
};
use crate::http_client::Client;

/// After the flood: long enough for a lease to expire and for the heartbeat that tells a rack its
/// deployment was taken over (the moment it would stop its own copies).
const SETTLE: Duration = Duration::from_millis(LEASE_MS + 2 * HEARTBEAT_MS);
/// `ps` without a flood, for comparison.
const BASELINE: Duration = Duration::from_secs(3);
/// Each `ps` must be answered within this, connection included.
const PS_DEADLINE: Duration = Duration::from_secs(2);
const PS_PAUSE: Duration = Duration::from_millis(10);
/// How long the flood waits on one connect, and before opening a closed socket again.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);
const REOPEN_AFTER: Duration = Duration::from_millis(500);
const TRICKLE_EVERY: Duration = Duration::from_secs(1);
const FLOOD_TICK: Duration = Duration::from_millis(50);
const FLOOD_THREADS: usize = 16;
/// The Content-Length of the heads sent without a body: large, but under the API's 64 MiB limit,
/// so the server has no reason to refuse it for its size alone.
const HEAD_CONTENT_LENGTH: u64 = 60_000_000;
/// CLI calls after the flood: a daemon still stuck must not stop the bench from reporting.
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// `AUTH_HEADER` and `AUTH_SCHEME`, spelled out: xtask drives the manager as an operator
/// would and links none of its crates.
const AUTH_HEADER: &str = "Authorization";
const AUTH_SCHEME: &str = "Bearer ";

const TARGET_PS_P99: Duration = Duration::from_millis(100);
const TARGET_RSS_GROWTH_KIB: u64 = 64 * 1024;

const REPLICAS_WITH_PLAN: u32 = 2;
const REPLICAS_WITHOUT_PLAN: u32 = 2;

#[derive(Debug, Args)]
pub struct ControlPlaneArgs {
    /// How long the flood lasts, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub seconds: u64,
    /// Slow or idle connections held open at once, against a's API and peer ports together.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(5..=50_000))]
    pub connections: u32,
}

pub fn main(args: ControlPlaneArgs) -> Result<ExitCode> {
    catch_interrupts();
    let root = build::workspace_root();
    let manager = build_manager(&root)?;
    // The simulated launcher boots nothing, but a deployment still needs a real, signed image.
    let hello = build::build(&root, "hello", Arch::Aarch64, Profile::Release)?.artifact;
    let trust = super::failover::workspace_trust_args(&root)?;
    // Before the racks start: they inherit the limit, so the daemon can accept as many sockets
    // as the flood opens (an operator would set LimitNOFILE the same way).
    println!("{}", raise_file_limit(u64::from(args.connections))?);

    // Heartbeat and lease: the failover bench's (`Rack::start` passes them).
    let serve = ["--launcher", "sim", "--memory-mib", "4096"];
    let a = Rack::start(&manager, "a", &trust, &serve)?;
    let b = Rack::start(&manager, "b", &trust, &serve)?;
    a.peer_with(&b)?;
    b.peer_with(&a)?;
    a.cli(&["image", "push", &hello.display().to_string()])?;
    a.cli(&["deploy", "hello", "--replicas", &REPLICAS_WITH_PLAN.to_string(), "--failover-to", "b"])?;
    a.cli(&["deploy", "hello", "--replicas", &REPLICAS_WITHOUT_PLAN.to_string()])?;
    let expected = (REPLICAS_WITH_PLAN + REPLICAS_WITHOUT_PLAN) as usize;
    wait_until("a's instances to run", Duration::from_secs(60), || {
        let running = a.json(&["ps"])?.as_array().into_iter().flatten().filter(|i| i["state"] == "running").count();
        Ok((running == expected).then_some(()))
    })
    .with_context(|| a.log_tail())?;
    // Without this, "zero takeovers" would hold only because b could not take anything over.
    wait_until("b to be ready to take a's deployment over", Duration::from_secs(60), || {
        let plan = b.json(&["failover", "plan"])?;
        let ready = plan["incoming"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["would_take_over"] == true && p["image_complete"] == true);
        Ok(ready.then_some(()))
    })
    .with_context(|| b.log_tail())?;
    wait_until("a and b to see each other up", Duration::from_secs(30), || {
        Ok((peer_up(&a, "b")? == Some(true) && peer_up(&b, "a")? == Some(true)).then_some(()))
    })?;
    check_interrupted()?;

    let pid = a.pid().context("rack a's manager is not running")?;
    let api = loopback_address(&std::fs::read_to_string(a.dir().join("address")).context("a's address file")?)?;
    let identity = a.json(&["identity"])?;
    let peer = loopback_address(identity["peer_url"].as_str().context("a's identity has no peer_url")?)?;
    let token = std::fs::read_to_string(a.dir().join("token")).context("a's token file")?.trim().to_owned();
    let auth = format!("{}{token}", AUTH_SCHEME);
    let plan = FloodPlan::new(args.connections, api, peer);

    println!(
        "control-plane bench: racks a and b (release rack-manager, --launcher sim) on 127.0.0.1, peered both ways, \
         heartbeat {HEARTBEAT_MS} ms, lease {LEASE_MS} ms; a runs {expected} hello instances ({REPLICAS_WITH_PLAN} \
         --failover-to b, {REPLICAS_WITHOUT_PLAN} without a plan); b is ready to take over"
    );
    println!("{}", plan.describe(args.seconds));

    let baseline = ps_loop(api, &auth, Instant::now() + BASELINE);
    println!("{}", baseline.line(&format!("ps before the flood ({} s)", BASELINE.as_secs())));

    let before = ProcStatus::read(pid).context("reading the daemon's /proc status")?;
    // Writing 5 to clear_refs resets VmHWM to the current RSS, so the end's VmHWM is the flood's
    // peak, however brief; where that is refused, the 100 ms samples stand in.
    let hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), b"5").is_ok();

    let flood_end = Instant::now() + Duration::from_secs(args.seconds);
    let stats = FloodStats::default();
    let stop_watching = AtomicBool::new(false);
    let (during, sampled, b_saw_a_down) = thread::scope(|scope| {
        let sampler = scope.spawn(|| sample(pid, &stop_watching));
        let watcher = scope.spawn(|| watch_peer(&b, "a", &stop_watching));
        let workers: Vec<_> = plan
            .slots_per_thread()
            .into_iter()
            .map(|slots| {
                let stats = &stats;
                scope.spawn(move || flood(slots, flood_end, stats))
            })
            .collect();
        let during = ps_loop(api, &auth, flood_end);
        for worker in workers {
            let _ = worker.join();
        }
        // The flood's sockets are closed; what the racks do next still counts.
        let settle_end = Instant::now() + SETTLE;
        while Instant::now() < settle_end && !interrupted() {
            thread::sleep(Duration::from_millis(50));
        }
        stop_watching.store(true, Ordering::SeqCst);
        let sampled = sampler.join().unwrap_or_default();
        let b_saw_a_down = watcher.join().unwrap_or(None);
        (during, sampled, b_saw_a_down)
    });
    check_interrupted()?;
    let after = ProcStatus::read(pid);

    println!("{}", stats.line());
    println!("{}", during.line("ps during the flood"));
    println!(
        "  (each ps: a new connection and GET /v1/instances with a's token, {} ms deadline; a failed one counts with \
         the time it took to fail)",
        PS_DEADLINE.as_millis()
    );
    let peak_rss_kib = sampled.peak_rss_kib.max(if hwm_reset { after.as_ref().map_or(0, |a| a.hwm_kib) } else { 0 });
    let growth_kib = peak_rss_kib.saturating_sub(before.rss_kib);
    let alive = after.is_some();
    match &after {
        Some(after) => {
            println!(
                "daemon RSS: before {}, peak {} ({}), after {} ({} s after the flood), growth {}",
                mib(before.rss_kib),
                mib(peak_rss_kib),
                if hwm_reset { "VmHWM, reset before the flood" } else { "VmRSS sampled every 100 ms" },
                mib(after.rss_kib),
                SETTLE.as_secs(),
                mib(growth_kib)
            );
            println!(
                "daemon threads: before {}, peak {}, after {}",
                before.threads,
                sampled.peak_threads.max(before.threads),
                after.threads
            );
        }
        None => println!(
            "daemon: EXITED during the bench (RSS before {}, peak sampled {}); its log ends:\n{}",
            mib(before.rss_kib),
            mib(sampled.peak_rss_kib),
            a.log_tail()
        ),
    }
    match b_saw_a_down {
        Some(at) => println!("b saw a down: yes, first {:.1} s after the flood began", at.as_secs_f64()),
        None => println!("b saw a down: no (b's `peer ls` polled every 500 ms)"),
    }
    let takeovers = count_takeovers(&b);
    match &takeovers {
        Ok(0) => println!("takeovers by b (b's failover status): none"),
        Ok(n) => println!("takeovers by b (b's failover status): {n}"),
        Err(e) => println!("takeovers by b: unknown ({e:#})"),
    }
    let stopped = stopped_instances(&a, expected);
    match &stopped {
        Ok(list) if list.is_empty() => println!("a's instances (a's ps -a): all {expected} running"),
        Ok(list) => {
            println!("a's instances (a's ps -a): {} of {expected} not running:", list.len());
            for line in list {
                println!("  {line}");
            }
        }
        Err(e) => println!("a's instances: unknown ({e:#})"),
    }

    let p99 = during.percentile(0.99);
    let targets = [
        (
            format!(
                "ps p99 <= {} ms during the flood: {}",
                TARGET_PS_P99.as_millis(),
                p99.map_or("no request".to_owned(), ms)
            ),
            p99.is_some_and(|p| p <= TARGET_PS_P99) && during.ok > 0,
        ),
        (
            format!("daemon RSS growth <= {}: {}", mib(TARGET_RSS_GROWTH_KIB), mib(growth_kib)),
            alive && growth_kib <= TARGET_RSS_GROWTH_KIB,
        ),
        (
            format!("zero takeovers: {}", takeovers.as_ref().map_or_else(|_| "unknown".to_owned(), |n| n.to_string())),
            takeovers.as_ref().is_ok_and(|n| *n == 0),
        ),
        (
            format!(
                "zero instances stopped: {}",
                stopped.as_ref().map_or_else(|_| "unknown".to_owned(), |l| l.len().to_string())
            ),
            stopped.as_ref().is_ok_and(Vec::is_empty),
        ),
        (format!("the daemon survives: {}", if alive { "yes" } else { "no" }), alive),
    ];
    for (what, met) in &targets {
        println!("target: {what} {}", if *met { "met" } else { "MISSED" });
    }
    Ok(if targets.iter().all(|(_, met)| *met) { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Raises the soft RLIMIT_NOFILE (up to the hard one) so the flood's sockets fit, and says what
/// it did; the flood runs either way, and its failed connects show what did not fit.
fn raise_file_limit(connections: u64) -> Result<String> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    // The flood's sockets, the ps client's, the CLI's children and their files.
    let wanted = connections + 512;
    let limit = getrlimit(Resource::Nofile);
    let (soft, hard) = (limit.current, limit.maximum);
    let show = |v: Option<u64>| v.map_or("unlimited".to_owned(), |v| v.to_string());
    if soft.is_none_or(|s| s >= wanted) {
        return Ok(format!("RLIMIT_NOFILE: soft {} (enough for {wanted}), hard {}", show(soft), show(hard)));
    }
    let raised = hard.map_or(wanted, |h| h.min(wanted));
    setrlimit(Resource::Nofile, Rlimit { current: Some(raised), maximum: hard })
        .with_context(|| format!("raising RLIMIT_NOFILE from {} to {raised}", show(soft)))?;
    Ok(if raised < wanted {
        format!(
            "RLIMIT_NOFILE: soft raised from {} to the hard limit {raised}, LESS than the {wanted} wanted: some \
             connects will fail (raise the hard limit, e.g. `ulimit -Hn {wanted}` as root)",
            show(soft)
        )
    } else {
        format!("RLIMIT_NOFILE: soft raised from {} to {raised} (hard {})", show(soft), show(hard))
    })
}

/// `http://127.0.0.1:PORT` or `https://…` to a socket address, refused unless it is loopback:
/// the bench floods nothing else.
fn loopback_address(url: &str) -> Result<SocketAddr> {
    let rest = url.trim().split_once("://").map_or(url.trim(), |(_, rest)| rest);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let address: SocketAddr = host_port.parse().with_context(|| format!("{url:?} is not an IP address and port"))?;
    ensure!(address.ip().is_loopback(), "{url} is not on 127.0.0.0/8: the bench floods only loopback");
    Ok(address)
}

/// Whether `rack` sees `peer` up (`peer ls`), or None when it does not list it.
fn peer_up(rack: &Rack, peer: &str) -> Result<Option<bool>> {
    let peers = rack.json_within(&["peer", "ls"], Duration::from_secs(5))?;
    Ok(peers.as_array().into_iter().flatten().find(|p| p["name"] == peer).and_then(|p| p["up"].as_bool()))
}

/// Polls `rack`'s view of `peer` until `stop`: how long after the start it first saw it down.
fn watch_peer(rack: &Rack, peer: &str, stop: &AtomicBool) -> Option<Duration> {
    let started = Instant::now();
    while !stop.load(Ordering::SeqCst) && !interrupted() {
        if let Ok(Some(false)) = peer_up(rack, peer) {
            return Some(started.elapsed());
        }
        thread::sleep(Duration::from_millis(500));
    }
    None
}

/// How many deployments b lists as taken over.
fn count_takeovers(b: &Rack) -> Result<usize> {
    let all = b.json_within(&["failover", "status"], CHECK_TIMEOUT)?;
    let list = all.as_array().with_context(|| format!("failover status is not a list: {all}"))?;
    Ok(list.len())
}

/// a's instances that are not running, each as "id: state (message)"; an error if fewer than
/// `expected` are listed at all.
fn stopped_instances(a: &Rack, expected: usize) -> Result<Vec<String>> {
    let all = a.json_within(&["ps", "-a"], CHECK_TIMEOUT)?;
    let list = all.as_array().with_context(|| format!("ps is not a list: {all}"))?;
    let mut stopped: Vec<String> = list
        .iter()
        .filter(|i| i["state"] != "running")
        .map(|i| {
            let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
            format!("{}: {} ({})", text(&i["id"]), text(&i["state"]), i["message"].as_str().unwrap_or("no message"))
        })
        .collect();
    if list.len() < expected {
        stopped.push(format!("{} of {expected} instances are no longer listed", expected - list.len()));
    }
    Ok(stopped)
}

/// Latencies of `ps`, failures included.
#[derive(Debug, Default)]
struct Samples {
    latencies: Vec<Duration>,
    ok: usize,
    failed: usize,
    first_error: Option<String>,
}

impl Samples {
    /// Nearest-rank percentile: the smallest latency at least `p` of the samples do not exceed.
    fn percentile(&self, p: f64) -> Option<Duration> {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
        sorted.get(rank - 1).copied()
    }

    fn line(&self, what: &str) -> String {
        let show = |d: Option<Duration>| d.map_or("-".to_owned(), ms);
        let mut line = format!(
            "{what}: {} requests, {} failed; p50 {}, p99 {}, max {}",
            self.ok + self.failed,
            self.failed,
            show(self.percentile(0.5)),
            show(self.percentile(0.99)),
            show(self.latencies.iter().max().copied())
        );
        if let Some(error) = &self.first_error {
            line.push_str(&format!(" (first failure: {error})"));
        }
        line
    }
}

/// Authenticated `ps` one after another until `until`.
fn ps_loop(api: SocketAddr, auth: &str, until: Instant) -> Samples {
    let mut samples = Samples::default();
    while Instant::now() < until && !interrupted() {
        let started = Instant::now();
        let result = ps_once(api, auth);
        samples.latencies.push(started.elapsed());
        match result {
            Ok(()) => samples.ok += 1,
            Err(error) => {
                samples.failed += 1;
                samples.first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
        thread::sleep(PS_PAUSE);
    }
    samples
}

fn ps_once(api: SocketAddr, auth: &str) -> Result<()> {
    let mut client = Client::connect_within(api.port(), PS_DEADLINE)?
        .with_header(AUTH_HEADER, auth)
        .with_header("Connection", "close");
    let (status, body) = client.get("/v1/instances")?;
    ensure!(status == 200, "answered {status}: {}", String::from_utf8_lossy(&body));
    let list: Value = serde_json::from_slice(&body).context("the answer is not JSON")?;
    ensure!(list.is_array(), "the answer is not a list of instances");
    Ok(())
}

/// One reading of `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
struct ProcStatus {
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
}

impl ProcStatus {
    /// None once the process has exited (a zombie has no VmRSS).
    fn read(pid: u32) -> Option<ProcStatus> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            text.lines().find_map(|l| l.strip_prefix(name)?.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        };
        Some(ProcStatus { rss_kib: field("VmRSS:")?, hwm_kib: field("VmHWM:")?, threads: field("Threads:")? })
    }
}

#[derive(Debug, Default)]
struct Peaks {
    peak_rss_kib: u64,
    peak_threads: u64,
}

/// Samples the daemon every 100 ms until `stop` (or its exit).
fn sample(pid: u32, stop: &AtomicBool) -> Peaks {
    let mut peaks = Peaks::default();
    while !stop.load(Ordering::SeqCst) && !interrupted() {
        let Some(status) = ProcStatus::read(pid) else { break };
        peaks.peak_rss_kib = peaks.peak_rss_kib.max(status.rss_kib);
        peaks.peak_threads = peaks.peak_threads.max(status.threads);
        thread::sleep(SAMPLE_EVERY);
    }
    peaks
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The kinds of flood connection, taken in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attack {
    IdleApi,
    HeadWithoutBody,
    TrickledHead,
    IdlePeer,
    TrickledClientHello,
}

const ATTACKS: [Attack; 5] =
    [Attack::IdleApi, Attack::HeadWithoutBody, Attack::TrickledHead, Attack::IdlePeer, Attack::TrickledClientHello];

impl Attack {
    fn at_peer_port(self) -> bool {
        matches!(self, Attack::IdlePeer | Attack::TrickledClientHello)
    }

    /// Sent at once when the socket opens.
    fn opening(self) -> Vec<u8> {
        match self {
            Attack::HeadWithoutBody => format!(
                "POST /v1/images HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {HEAD_CONTENT_LENGTH}\r\n\r\n"
            )
            .into_bytes(),
            Attack::TrickledHead => b"GET /v1/instances HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".to_vec(),
            Attack::IdleApi | Attack::IdlePeer | Attack::TrickledClientHello => Vec::new(),
        }
    }

    /// Sent one byte per [`TRICKLE_EVERY`] after the opening; `true`: again from the start when
    /// done (a header value that never ends).
    fn trickle(self) -> Option<(Vec<u8>, bool)> {
        match self {
            Attack::TrickledHead => Some((b"a".to_vec(), true)),
            Attack::TrickledClientHello => Some((client_hello(), false)),
            _ => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Attack::IdleApi | Attack::IdlePeer => "idle",
            Attack::HeadWithoutBody => "a POST head with Content-Length 60000000, no token and no body",
            Attack::TrickledHead => "a GET head trickled a byte a second, never ending",
            Attack::TrickledClientHello => "a TLS ClientHello trickled a byte a second",
        }
    }
}

/// A well-formed TLS 1.3 ClientHello record (x25519, the three TLS 1.3 cipher suites): what a
/// real client's first flight looks like to the server, so the server is in its handshake.
fn client_hello() -> Vec<u8> {
    let mut extensions = Vec::new();
    extensions.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]); // supported_versions: 1.3
    extensions.extend_from_slice(&[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d]); // supported_groups: x25519
    // signature_algorithms: ed25519, ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256
    extensions.extend_from_slice(&[0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x08, 0x07, 0x04, 0x03, 0x08, 0x04]);
    // key_share: one x25519 share of 32 bytes
    extensions.extend_from_slice(&[0x00, 0x33, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1d, 0x00, 0x20]);
    extensions.extend_from_slice(&[0x42; 32]);

    let mut hello = vec![0x03, 0x03]; // legacy_version
    hello.extend((0u8..32).map(|i| i.wrapping_mul(37))); // random
    hello.push(32); // legacy_session_id
    hello.extend_from_slice(&[0x5a; 32]);
    hello.extend_from_slice(&[0x00, 0x06, 0x13, 0x01, 0x13, 0x02, 0x13, 0x03]); // cipher_suites
    hello.extend_from_slice(&[0x01, 0x00]); // compression: null
    hello.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    hello.extend_from_slice(&extensions);

    let mut handshake = vec![0x01]; // client_hello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01]; // handshake, legacy record version
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Which connections the flood holds, and where.
struct FloodPlan {
    connections: u32,
    api: SocketAddr,
    peer: SocketAddr,
}

impl FloodPlan {
    fn new(connections: u32, api: SocketAddr, peer: SocketAddr) -> FloodPlan {
        FloodPlan { connections, api, peer }
    }

    fn attack(index: u32) -> Attack {
        ATTACKS[index as usize % ATTACKS.len()]
    }

    fn count(&self, attack: Attack) -> u32 {
        (0..self.connections).filter(|&i| FloodPlan::attack(i) == attack).count() as u32
    }

    fn describe(&self, seconds: u64) -> String {
        let side = |peer: bool, address: SocketAddr| {
            let kinds: Vec<String> = ATTACKS
                .iter()
                .filter(|a| a.at_peer_port() == peer)
                .map(|&a| format!("{} {}", self.count(a), a.describe()))
                .collect();
            let total: u32 = ATTACKS.iter().filter(|a| a.at_peer_port() == peer).map(|&a| self.count(a)).sum();
            format!("{total} at {} port {address} ({})", if peer { "the peer" } else { "the API" }, kinds.join("; "))
        };
        format!(
            "flood: {} connections for {seconds} s: {}; {}; a socket the daemon closes is reopened after {} ms",
            self.connections,
            side(false, self.api),
            side(true, self.peer),
            REOPEN_AFTER.as_millis()
        )
    }

    /// The slots, dealt to [`FLOOD_THREADS`] threads.
    fn slots_per_thread(&self) -> Vec<Vec<Slot>> {
        let threads = FLOOD_THREADS.min(self.connections as usize);
        let mut all: Vec<Vec<Slot>> = (0..threads).map(|_| Vec::new()).collect();
        for index in 0..self.connections {
            let attack = FloodPlan::attack(index);
            let address = if attack.at_peer_port() { self.peer } else { self.api };
            all[index as usize % threads].push(Slot::new(attack, address));
        }
        all
    }
}

/// What the flood did, across its threads.
#[derive(Debug, Default)]
struct FloodStats {
    open: AtomicUsize,
    peak_open: AtomicUsize,
    open_peer: AtomicUsize,
    peak_open_peer: AtomicUsize,
    opened: AtomicU64,
    closed_by_daemon: AtomicU64,
    closed_by_daemon_peer: AtomicU64,
    connects_failed: AtomicU64,
    bytes_answered: AtomicU64,
    first_connect_error: Mutex<Option<String>>,
}

impl FloodStats {
    fn opened(&self, peer: bool) {
        self.opened.fetch_add(1, Ordering::Relaxed);
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_open.fetch_max(open, Ordering::Relaxed);
        if peer {
            let open = self.open_peer.fetch_add(1, Ordering::Relaxed) + 1;
            self.peak_open_peer.fetch_max(open, Ordering::Relaxed);
        }
    }

    fn closed(&self, peer: bool) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if peer {
            self.open_peer.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn line(&self) -> String {
        let error = self.first_connect_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        format!(
            "flood: peak {} open at once ({} at the peer port); {} opened in all, {} closed by the daemon ({} at the \
             peer port), {} connects failed{}; the daemon sent {} bytes back",
            self.peak_open.load(Ordering::Relaxed),
            self.peak_open_peer.load(Ordering::Relaxed),
            self.opened.load(Ordering::Relaxed),
            self.closed_by_daemon.load(Ordering::Relaxed),
            self.closed_by_daemon_peer.load(Ordering::Relaxed),
            self.connects_failed.load(Ordering::Relaxed),
            error.map_or(String::new(), |e| format!(" (first: {e})")),
            self.bytes_answered.load(Ordering::Relaxed),
        )
    }
}

/// One flood connection: its kind, its socket while open, and how far its trickle got.
struct Slot {
    attack: Attack,
    address: SocketAddr,
    trickle: Option<(Vec<u8>, bool)>,
    stream: Option<TcpStream>,
    sent: usize,
    next_byte: Instant,
    reopen_at: Instant,
}

impl Slot {
    fn new(attack: Attack, address: SocketAddr) -> Slot {
        let now = Instant::now();
        Slot { attack, address, trickle: attack.trickle(), stream: None, sent: 0, next_byte: now, reopen_at: now }
    }

    fn open(&mut self, stats: &FloodStats) {
        let opened = TcpStream::connect_timeout(&self.address, CONNECT_TIMEOUT).and_then(|mut stream| {
            stream.set_nodelay(true)?;
            stream.write_all(&self.attack.opening())?;
            // Only now: the opening is small enough for any socket buffer.
            stream.set_nonblocking(true)?;
            Ok(stream)
        });
        match opened {
            Ok(stream) => {
                self.stream = Some(stream);
                self.sent = 0;
                self.next_byte = Instant::now() + TRICKLE_EVERY;
                stats.opened(self.attack.at_peer_port());
            }
            Err(error) => {
                stats.connects_failed.fetch_add(1, Ordering::Relaxed);
                stats
                    .first_connect_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| format!("{}: {error}", self.address));
                self.reopen_at = Instant::now() + REOPEN_AFTER;
            }
        }
    }

    /// Reads whatever the daemon sent (and notices a close), then sends the next trickled byte
    /// when one is due.
    fn poll(&mut self, stats: &FloodStats) {
        let Some(stream) = self.stream.as_mut() else { return };
        let mut closed = false;
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    stats.bytes_answered.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if !closed && let Some((bytes, repeat)) = &self.trickle {
            let now = Instant::now();
            if now >= self.next_byte && (*repeat || self.sent < bytes.len()) {
                match stream.write(&bytes[self.sent % bytes.len()..][..1]) {
                    Ok(_) => self.sent += 1,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => closed = true,
                }
                self.next_byte = now + TRICKLE_EVERY;
            }
        }
        if closed {
            self.stream = None;
            stats.closed_by_daemon.fetch_add(1, Ordering::Relaxed);
            if self.attack.at_peer_port() {
                stats.closed_by_daemon_peer.fetch_add(1, Ordering::Relaxed);
            }
            stats.closed(self.attack.at_peer_port());
            self.reopen_at = Instant::now() + REOPEN_AFTER;
        }
    }
}

/// Holds `slots` open (reopening what the daemon closes) until `until`, then closes them all.
fn flood(mut slots: Vec<Slot>, until: Instant, stats: &FloodStats) {
    while Instant::now() < until && !interrupted() {
        for slot in &mut slots {
            if Instant::now() >= until {
                break;
            }
            if slot.stream.is_some() {
                slot.poll(stats);
            } else if Instant::now() >= slot.reopen_at {
                slot.open(stats);
            }
        }
        thread::sleep(FLOOD_TICK);
    }
    for slot in &mut slots {
        if slot.stream.take().is_some() {
            stats.closed(slot.attack.at_peer_port());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_hello_lengths_add_up() {
        let record = client_hello();
        assert_eq!(record[0], 0x16, "a handshake record");
        let record_len = u16::from_be_bytes([record[3], record[4]]) as usize;
        assert_eq!(record_len, record.len() - 5);
        assert_eq!(record[5], 0x01, "a ClientHello");
        let hello_len = u32::from_be_bytes([0, record[6], record[7], record[8]]) as usize;
        assert_eq!(hello_len, record.len() - 9);
        // version, random, session id, cipher suites, compression: then the extensions' length.
        let at = 9 + 2 + 32 + 1 + 32 + 8 + 2;
        let extensions_len = u16::from_be_bytes([record[at], record[at + 1]]) as usize;
        assert_eq!(extensions_len, record.len() - at - 2);
    }

    #[test]
    fn only_loopback_addresses_are_flooded() {
        assert_eq!(
            loopback_address("http://127.0.0.1:7878\n").expect("loopback"),
            "127.0.0.1:7878".parse().expect("an address")
        );
        assert_eq!(loopback_address("https://127.0.0.2:9/x").expect("loopback").port(), 9);
        assert!(loopback_address("http://10.0.0.1:7878").is_err());
        assert!(loopback_address("http://localhost:7878").is_err(), "names are not resolved");
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let samples =
            Samples { latencies: (1..=100).map(Duration::from_millis).collect(), ok: 100, ..Samples::default() };
        assert_eq!(samples.percentile(0.5), Some(Duration::from_millis(50)));
        assert_eq!(samples.percentile(0.99), Some(Duration::from_millis(99)));
        assert_eq!(Samples::default().percentile(0.99), None);
    }

    #[test]
    fn the_plan_splits_connections_between_the_ports() {
        let plan = FloodPlan::new(1000, "127.0.0.1:1".parse().expect("api"), "127.0.0.1:2".parse().expect("peer"));
        let slots: Vec<Slot> = plan.slots_per_thread().into_iter().flatten().collect();
        assert_eq!(slots.len(), 1000);
        assert_eq!(slots.iter().filter(|s| s.address.port() == 2).count(), 400);
        assert!(slots.iter().all(|s| s.attack.at_peer_port() == (s.address.port() == 2)));
    }

    #[test]
    fn the_status_parser_reads_the_kernels_fields() {
        let status = ProcStatus::read(std::process::id()).expect("this process's status");
        assert!(status.rss_kib > 0 && status.hwm_kib >= status.rss_kib && status.threads >= 1);
    }
}
