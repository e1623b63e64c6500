//! A real S3-compatible server for tests and benchmarks: `moto_server` (PyPI `moto[server]`),
//! started on a free loopback port and killed when dropped.
//!
//! Tests that need it call [`MotoServer::start_for`]: where `moto_server` is not installed they
//! print why they are skipped, unless `MAST_REQUIRE_S3=1` (set by `cargo xtask test`, which
//! installs moto first), where its absence fails the test, so the suite cannot pass by skipping.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::S3Config;

/// The command that runs the server.
pub const MOTO_SERVER: &str = "moto_server";
/// How to install it.
pub const INSTALL_HINT: &str = "pip install 'moto[server]'";

/// A running `moto_server`, killed on drop.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    address: SocketAddr,
}

impl MotoServer {
    /// Starts a server, waiting until it answers HTTP.
    pub fn start() -> Result<MotoServer, String> {
        let mut last = String::new();
        // The free port is found by binding and releasing it, so another process may take it in
        // between: try a few ports.
        for _ in 0..3 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("finding a free port: {e}"))?
                .port();
            let child = Command::new(MOTO_SERVER)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot run {MOTO_SERVER} ({e}); install it with `{INSTALL_HINT}`"))?;
            let mut server = MotoServer { child, address: SocketAddr::from((Ipv4Addr::LOCALHOST, port)) };
            match server.wait_until_ready(Duration::from_secs(60)) {
                Ok(()) => return Ok(server),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// For a test: the server, or `None` (with the reason printed) when moto is not installed
    /// and `MAST_REQUIRE_S3` is not `1`.
    pub fn start_for(test: &str) -> Option<MotoServer> {
        match MotoServer::start() {
            Ok(server) => Some(server),
            Err(reason) => {
                if std::env::var("MAST_REQUIRE_S3").is_ok_and(|v| v == "1") {
                    panic!("{test} needs an S3 server and MAST_REQUIRE_S3=1, but: {reason}");
                }
                eprintln!("skipped {test}: it runs against a real S3 server, and {reason}");
                None
            }
        }
    }

    fn wait_until_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "{MOTO_SERVER} exited at start ({status}); is port {} taken?",
                    self.address.port()
                ));
            }
            if self.request("GET", "/").is_ok_and(|status| status < 500) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{MOTO_SERVER} did not answer on {} within {timeout:?}", self.address));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Sends a bodiless request and returns the status. moto accepts unsigned requests, which is
    /// all bucket creation needs.
    fn request(&self, method: &str, path: &str) -> Result<u16, String> {
        let mut stream =
            TcpStream::connect_timeout(&self.address, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.address
        );
        stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&response);
        text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("no HTTP status in {text:?}"))
    }

    /// Creates `bucket`.
    pub fn create_bucket(&self, bucket: &str) -> Result<(), String> {
        match self.request("PUT", &format!("/{bucket}"))? {
            200..=299 => Ok(()),
            status => Err(format!("creating bucket {bucket} answered {status}")),
        }
    }

    /// A configuration for `bucket` on this server, as rack `rack`, with moto's dummy credentials.
    pub fn config(&self, bucket: &str, rack: &str) -> S3Config {
        S3Config {
            bucket: bucket.to_owned(),
            endpoint: Some(self.endpoint()),
            region: "us-east-1".into(),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            allow_http: true,
            rack: rack.to_owned(),
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
