//! A real etcd server for one test: its own data directory and loopback ports, killed when the
//! test ends. Shared by the store's unit tests and `tests/etcd.rs` (included by path).
//!
//! A missing `etcd` fails the test with the install hint (`cargo xtask test` installs it), unless
//! `MAST_SKIP_ETCD=1`, which skips loudly instead.
#![allow(dead_code)] // Each includer uses its own subset.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// What to do when etcd is missing.
pub const INSTALL_HINT: &str = "etcd is not installed: `cargo xtask test` installs it (as root on Debian), or run \
                                `sudo apt-get install -y etcd-server`; set MAST_SKIP_ETCD=1 to skip the etcd tests";

/// TLS on an etcd's client port: its certificate and key, and the CA its clients' certificates
/// must come from where it asks for them.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    /// `--client-cert-auth`: clients without a certificate from `client_ca` are refused.
    pub client_cert_auth: bool,
    /// `--auth-token-ttl`: seconds an idle login token lasts (etcd's default: 300).
    pub auth_token_ttl_s: u32,
}

/// A running etcd, killed on drop.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Plain-HTTP /health and /metrics, also when the client port wants TLS.
    metrics_port: u16,
    /// `--initial-cluster`: every member's name and peer URL.
    cluster: String,
    tls: Option<ServerTls>,
}

fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(binary).is_file()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

impl EtcdServer {
    /// Starts etcd and waits until it is healthy; `None` (after saying so) only when etcd is
    /// missing and `MAST_SKIP_ETCD=1`.
    pub fn start() -> Option<EtcdServer> {
        Some(EtcdServer::cluster(1)?.remove(0))
    }

    /// Starts one etcd serving clients over TLS only.
    pub fn start_tls(tls: ServerTls) -> Option<EtcdServer> {
        Some(EtcdServer::start_members(1, Some(tls))?.remove(0))
    }

    /// Starts a cluster of `members` and waits until every member is healthy; `None` as for
    /// [`EtcdServer::start`].
    pub fn cluster(members: usize) -> Option<Vec<EtcdServer>> {
        EtcdServer::start_members(members, None)
    }

    fn start_members(members: usize, tls: Option<ServerTls>) -> Option<Vec<EtcdServer>> {
        if !on_path("etcd") {
            if std::env::var("MAST_SKIP_ETCD").is_ok_and(|v| v == "1") {
                eprintln!("SKIPPED (MAST_SKIP_ETCD=1): {INSTALL_HINT}");
                return None;
            }
            panic!("{INSTALL_HINT}");
        }
        let ports: Vec<(u16, u16)> = (0..members).map(|_| (free_port(), free_port())).collect();
        let cluster: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}")).collect();
        let mut servers: Vec<EtcdServer> = ports
            .into_iter()
            .enumerate()
            .map(|(i, (client_port, peer_port))| EtcdServer {
                child: None,
                dir: tempfile::tempdir().expect("a temp dir for etcd"),
                name: format!("e{i}"),
                client_port,
                peer_port,
                metrics_port: free_port(),
                cluster: cluster.join(","),
                tls: tls.clone(),
            })
            .collect();
        // All first, then the waits: a member is healthy only once a quorum is up.
        for server in &mut servers {
            server.spawn();
        }
        for server in &servers {
            server.wait_healthy(Duration::from_secs(30));
        }
        Some(servers)
    }

    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    fn spawn(&mut self) {
        let client = self.endpoint();
        let mut tls_args = Vec::new();
        if let Some(tls) = &self.tls {
            tls_args.push(format!("--cert-file={}", tls.cert.display()));
            tls_args.push(format!("--key-file={}", tls.key.display()));
            tls_args.push(format!("--trusted-ca-file={}", tls.client_ca.display()));
            tls_args.push(format!("--auth-token-ttl={}", tls.auth_token_ttl_s));
            if tls.client_cert_auth {
                tls_args.push("--client-cert-auth".to_owned());
            }
        }
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd's log opens");
        let child = Command::new("etcd")
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}", self.cluster))
            .arg("--initial-cluster-token=mast-test")
            .arg(format!("--listen-metrics-urls=http://127.0.0.1:{}", self.metrics_port))
            .args(&tls_args)
            // Deployments of many replicas are one transaction.
            .arg("--max-txn-ops=100000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        self.child = Some(child);
    }

    fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if health(self.metrics_port).is_some_and(|body| body.contains("\"health\":\"true\"")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy within {timeout:?}; its log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether this member is the cluster's raft leader now (from its metrics).
    pub fn is_raft_leader(&self) -> bool {
        get(self.metrics_port, "/metrics").is_some_and(|m| m.lines().any(|l| l == "etcd_server_is_leader 1"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `kill -9` etcd.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same data directory and ports.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_healthy(Duration::from_secs(30));
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// GET /health: the body, or `None` when nothing answered.
fn health(port: u16) -> Option<String> {
    get(port, "/health")
}

/// One GET to etcd's metrics port: the whole answer, or `None` when nothing answered.
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}
