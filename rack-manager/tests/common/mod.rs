//! A rack for a test: the real `rack-manager` binary serving on 127.0.0.1 with a temporary data
//! directory, the CLI run against it, and every process it started killed when the test ends.
#![allow(dead_code)] // Each test file uses its own subset.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use images::{Arch, build::workspace_root, keys::KeyConfig};
use rack_api::Instance;
use rustix::process::{Pid, Signal, kill_process};
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_rack-manager");

/// The workspace's trusted keys, as `--trust` arguments.
///
/// The workspace's signing key is created on the first image build; a test that starts its rack
/// before building anything must not read an empty trust set, so this creates the key if needed
/// (the same first-use generation a build does, safe against concurrent builds).
pub fn trust_args() -> Vec<String> {
    let keys = KeyConfig::for_workspace(&workspace_root());
    keys.signing_key().expect("the workspace signing key can be created or read");
    let trusted = keys.trusted().expect("the workspace keys are readable");
    trusted.keys().iter().flat_map(|k| ["--trust".to_owned(), k.to_string()]).collect()
}

/// The signed release image of `app` for `arch`, built on first use.
pub fn image(app: &str, arch: Arch) -> PathBuf {
    qemu::appliance_image(app, arch).unwrap_or_else(|e| panic!("building {app} for {arch}: {e}")).artifact
}

/// Every process whose command line mentions `needle`: the VMs of a data directory (their kernel
/// path is inside it), which outlive the daemon on purpose.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

/// The QEMU processes of a data directory.
pub fn vms_of(dir: &Path) -> Vec<u32> {
    processes_mentioning(&dir.display().to_string())
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("qemu-system"))
        })
        .collect()
}

/// The QEMU processes of a rack's manager and agents.
pub fn vms_of_all(rack: &Rack) -> Vec<u32> {
    let mut vms = vms_of(rack.data_dir());
    for (_, dir) in &rack.agents {
        vms.extend(vms_of(dir.path()));
    }
    vms
}

pub fn kill(pid: u32) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = kill_process(pid, Signal::KILL);
    }
}

/// A manager (and optionally agents) for one test.
pub struct Rack {
    pub dir: tempfile::TempDir,
    pub daemon: Option<Child>,
    pub agents: Vec<(Child, tempfile::TempDir)>,
    agent_args: Vec<Vec<String>>,
    serve_args: Vec<String>,
    /// A command the daemon is started under (e.g. `ip netns exec NAME`), if any.
    wrapper: Vec<String>,
}

impl Rack {
    /// Starts `rack-manager serve` trusting the workspace key, plus `extra` arguments.
    pub fn start(extra: &[&str]) -> Rack {
        Rack::start_under(&[], extra)
    }

    /// Starts `rack-manager serve` with only `extra` arguments: no `--trust`, as an operator who
    /// read only the quick start would.
    pub fn start_bare(extra: &[&str]) -> Rack {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut serve_args = vec!["serve".to_owned(), "--listen".into(), "127.0.0.1:0".into()];
        serve_args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut rack =
            Rack { dir, daemon: None, agents: Vec::new(), agent_args: Vec::new(), serve_args, wrapper: Vec::new() };
        rack.start_daemon();
        rack
    }

    /// The daemon's stderr so far.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("daemon.stderr")).unwrap_or_default()
    }

    /// Like [`Rack::start`], with the daemon started under `wrapper` (its program and arguments,
    /// e.g. `ip netns exec NAME`, which execs the daemon in place: the pid stays the daemon's).
    pub fn start_under(wrapper: &[&str], extra: &[&str]) -> Rack {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut serve_args = vec!["serve".to_owned(), "--listen".into(), "127.0.0.1:0".into()];
        serve_args.extend(trust_args());
        serve_args.extend(extra.iter().map(|s| (*s).to_owned()));
        let wrapper = wrapper.iter().map(|s| (*s).to_owned()).collect();
        let mut rack = Rack { dir, daemon: None, agents: Vec::new(), agent_args: Vec::new(), serve_args, wrapper };
        rack.start_daemon();
        rack
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// (Re)starts the daemon with the same arguments and waits until it answers.
    pub fn start_daemon(&mut self) {
        let address = self.data_dir().join("address");
        let _ = std::fs::remove_file(&address);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir().join("daemon.stderr"))
            .expect("the daemon's log opens");
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(BIN);
                command
            }
            None => Command::new(BIN),
        };
        let child = command
            .args(&self.serve_args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the rack-manager binary starts");
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !address.exists() {
            assert!(Instant::now() < deadline, "the daemon did not write {} within 20 s", address.display());
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9` the daemon: its VMs keep running.
    pub fn kill_daemon(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            kill(daemon.id());
            let _ = daemon.wait();
        }
    }

    pub fn url(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("address"))
            .expect("the daemon wrote its address")
            .trim()
            .to_owned()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("token")).expect("the daemon wrote its token").trim().to_owned()
    }

    /// GET an API path (`/v1/...`) directly, without a CLI process: for measurements.
    pub fn api_get(&self, path: &str) -> String {
        let url = self.url();
        let port: u16 = url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("the URL ends in a port");
        let auth = format!("Authorization: Bearer {}\r\n", self.token());
        match http_get(port, path, &auth, Duration::from_secs(10)) {
            Some((200, body)) => body,
            other => panic!("GET {path}: {other:?}"),
        }
    }

    /// Runs the CLI against this rack.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .env_remove("RACK_MANAGER")
            .env_remove("RACK_TOKEN")
            .stdin(Stdio::null())
            .output()
            .expect("the CLI runs")
    }

    /// Runs the CLI and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "`rack-manager {}` failed ({}):\nstdout:\n{}\nstderr:\n{}\ndaemon stderr:\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.data_dir().join("daemon.stderr")).unwrap_or_default()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `ps -a -o json`.
    pub fn ps(&self) -> Vec<Instance> {
        serde_json::from_str(&self.ok(&["ps", "-a", "-o", "json"])).expect("ps -o json is JSON")
    }

    /// Polls `ps` until `done` holds, for at most `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&[Instance]) -> bool) -> Vec<Instance> {
        let deadline = Instant::now() + timeout;
        loop {
            let instances = self.ps();
            if done(&instances) {
                return instances;
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for {what}; ps:\n{}", self.ok(&["ps", "-a"]));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `count` hosts are listed (agents joined); returns them.
    pub fn wait_for_hosts(&self, count: usize) -> Vec<rack_api::Host> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let hosts: Vec<rack_api::Host> =
                serde_json::from_str(&self.ok(&["host", "ls", "-o", "json"])).expect("host ls -o json is JSON");
            if hosts.len() == count {
                return hosts;
            }
            assert!(Instant::now() < deadline, "{count} hosts did not join within 30 s: {hosts:?}");
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts an agent that joins this manager, with its own data directory.
    pub fn add_agent(&mut self, name: &str, extra: &[&str]) {
        let url = self.url();
        self.spawn_agent(&["--join", &url, "--name", name], extra);
    }

    /// Mints a one-use join token into `path` (mode 0600), as an operator would.
    pub fn join_token(&self, path: &Path) {
        self.ok(&["host", "join-token", "--out", path.to_str().expect("a UTF-8 path")]);
    }

    /// Starts an agent with `how` (`--join URL` or `--manager-url URL`) and `extra` arguments,
    /// and a join token of its own (`<agent-dir>/join.token`): no token is on its command line.
    pub fn spawn_agent(&mut self, how: &[&str], extra: &[&str]) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let token = dir.path().join("join.token");
        self.join_token(&token);
        let mut args: Vec<String> = vec!["agent".into(), "--join-token-file".into(), token.display().to_string()];
        args.extend(how.iter().chain(extra).map(|s| (*s).to_owned()));
        args.extend(trust_args());
        let child = agent_process(dir.path(), &args);
        self.agents.push((child, dir));
        self.agent_args.push(args);
    }

    /// `kill -9` agent `index` (its VMs keep running) and start it again on the same data
    /// directory with the same arguments.
    pub fn restart_agent(&mut self, index: usize) {
        let (child, dir) = &mut self.agents[index];
        kill(child.id());
        let _ = child.wait();
        *child = agent_process(dir.path(), &self.agent_args[index]);
    }
}

fn agent_process(dir: &Path, args: &[String]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("agent.stderr"))
        .expect("the agent's log opens");
    Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the agent starts")
}

impl Drop for Rack {
    fn drop(&mut self) {
        self.kill_daemon();
        for (agent, _) in &mut self.agents {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        let mut dirs = vec![self.data_dir().display().to_string()];
        dirs.extend(self.agents.iter().map(|(_, d)| d.path().display().to_string()));
        for dir in dirs {
            for pid in processes_mentioning(&dir) {
                kill(pid);
            }
        }
    }
}

/// One HTTP/1.1 GET to 127.0.0.1:`port`, with short timeouts: (status, body), or `None` when no
/// complete answer came (the guest may not listen yet).
pub fn http_get(port: u16, path: &str, headers: &str, timeout: Duration) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// Retries GETs with short, overlapping attempts until one answers 200, for at most `timeout`.
pub fn wait_for_200(port: u16, path: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((200, body)) = http_get(port, path, "", Duration::from_millis(500)) {
            return body;
        }
        assert!(Instant::now() < deadline, "no HTTP 200 from 127.0.0.1:{port}{path} within {timeout:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The forwarded host port of the instance's first listen port.
pub fn host_port(instance: &Instance) -> u16 {
    instance.ports.first().unwrap_or_else(|| panic!("{} forwards no port: {instance:?}", instance.id)).host_port
}

/// How a test's TLS client checks the server's certificate: pinned to its SHA-256 fingerprint, as
/// the manager does with its agents, or not at all, as an attacker (who does not care who
/// answers) or a stranger probing a port would.
#[derive(Debug)]
pub enum ServerCheck {
    Pinned([u8; 32]),
    Any,
}

impl ServerCertVerifier for ServerCheck {
    fn verify_server_cert(
        &self,
        cert: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self {
            ServerCheck::Pinned(pinned) if <[u8; 32]>::from(Sha256::digest(cert)) != *pinned => {
                Err(rustls::Error::General("not the pinned certificate".into()))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(m, c, d, &algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(m, c, d, &algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// A raw HTTP/1.1 response split into its status (0 when there is none) and body.
pub fn split_response(bytes: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(bytes);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// One HTTPS request to the agent at `address` (`https://HOST:PORT#sha256=FP`): (status, body).
pub fn agent_call(address: &str, method: &str, path: &str, bearer: Option<&str>, body: &str) -> (u16, String) {
    let (url, fp) = address.split_once("#sha256=").expect("a pinned address");
    let host_port = url.strip_prefix("https://").expect("https");
    let pinned: [u8; 32] = hex::decode(fp).expect("hex").try_into().expect("32 bytes");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ServerCheck::Pinned(pinned)))
        .with_no_client_auth();
    let mut socket = TcpStream::connect(host_port).expect("the agent listens");
    socket.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let connection = rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("agent").expect("a name"))
        .expect("a TLS client");
    let mut stream = rustls::StreamOwned::new(connection, &mut socket);
    let auth = bearer.map(|b| format!("Authorization: Bearer {b}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: agent\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("sent");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    split_response(&response)
}

/// The `https://HOST:PORT#sha256=FP` address an agent started with `--manager-url` printed (its
/// log is `<agent-dir>/agent.stderr`), once it has.
pub fn printed_agent_address(agent_dir: &Path) -> String {
    let log = agent_dir.join("agent.stderr");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some((_, rest)) = text.split_once("host add NAME ") {
            return rest.split(['`', ' ', '\n']).next().expect("an address").to_owned();
        }
        assert!(Instant::now() < deadline, "the agent never printed its address: {text}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// The token the manager was given for the agent whose data directory is `agent_dir` (from its
/// `credentials` file, once it has joined).
pub fn manager_token_of(agent_dir: &Path) -> String {
    let path = agent_dir.join("credentials");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(Instant::now() < deadline, "the agent kept no credentials");
        thread::sleep(Duration::from_millis(50));
    }
    let creds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("readable")).expect("json");
    creds["manager_token"].as_str().expect("a manager token").to_owned()
}
