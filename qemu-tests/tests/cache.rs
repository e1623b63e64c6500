//! The `cache` appliance against real servers and clients: Debian's nginx as the origin (started
//! by the test on 127.0.0.1, reached from the guest through QEMU's user network at 10.0.2.2),
//! a small origin of the test's own for answers nginx will not give (malformed, `Vary: Cookie`),
//! curl and wrk as clients. One boot per origin; x86_64 (KVM).
//!
//! QEMU's user network rather than a tap: it needs no root and no namespace, works the same on
//! both architectures, and the host's loopback is exactly where nginx listens (10.0.2.2 is the
//! host as the guest sees it), so the test touches nothing outside 127.0.0.0/8.

mod common;

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use images::Arch;
use qemu::{Instance, free_local_port, kvm};

const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// nginx in the foreground with a configuration of the test's own; killed on drop.
struct Nginx {
    child: Child,
    port: u16,
    access_log: std::path::PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn start(dir: &Path) -> Nginx {
        let root = dir.join("site");
        for sub in ["static", "revalidate", "nostore", "private", "short", "mustrev", "slow"] {
            fs::create_dir_all(root.join(sub)).expect("site dir");
            fs::write(root.join(sub).join("a.txt"), format!("{sub} body\n")).expect("site file");
        }
        fs::write(root.join("slow/big.bin"), vec![b'x'; 64 * 1024]).expect("big file");
        let port = free_local_port().expect("a free port");
        let access_log = dir.join("access.log");
        let conf = format!(
            r#"daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {log} ;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location /static/ {{ add_header Cache-Control "max-age=60"; }}
        location /revalidate/ {{ add_header Cache-Control "no-cache"; }}
        location /nostore/ {{ add_header Cache-Control "no-store"; }}
        location /private/ {{ add_header Cache-Control "private, max-age=60"; }}
        location /short/ {{ add_header Cache-Control "max-age=1"; }}
        location /mustrev/ {{ add_header Cache-Control "max-age=1, must-revalidate"; }}
        location /slow/ {{ add_header Cache-Control "max-age=60"; limit_rate 64k; }}
    }}
}}
"#,
            dir = dir.display(),
            log = access_log.display(),
            root = root.display(),
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf).expect("nginx.conf");
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting nginx ({e}); `cargo xtask test` installs it (package nginx)"));
        let deadline = Instant::now() + IO_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {port}: {:?}",
                fs::read_to_string(dir.join("error.log"))
            );
            thread::sleep(Duration::from_millis(20));
        }
        Nginx { child, port, access_log }
    }

    /// How many requests for `path` reached nginx.
    fn fetches_of(&self, path: &str) -> usize {
        let log = fs::read_to_string(&self.access_log).unwrap_or_default();
        log.lines().filter(|line| line.contains(&format!("GET {path} "))).count()
    }
}

/// A booted cache and the host port that reaches it.
struct Cache {
    instance: Instance,
    port: u16,
}

impl Cache {
    fn boot(test: &str, origin_port: u16) -> Option<Cache> {
        if !kvm::available_for(test) {
            return None;
        }
        let machine = qemu::appliance_machine("cache", Arch::X86_64).unwrap_or_else(|e| panic!("building cache: {e}"));
        let machine = machine.args(&[format!("origin=10.0.2.2:{origin_port}"), "cache_kib=1024".to_owned()]);
        for _ in 0..3 {
            let port = free_local_port().expect("a free port");
            let mut instance = machine.clone().forward_tcp(port, 8080).spawn().expect("starting QEMU");
            match instance.wait_for("cache: listening on", Duration::from_secs(60)) {
                Ok(_) => return Some(Cache { instance, port }),
                Err(qemu::WaitError::Exited { .. }) => continue,
                Err(e) => panic!("{test}: {e}; console: {:?}", instance.console()),
            }
        }
        panic!("{test}: QEMU could not forward a free port three times");
    }

    /// One request on a new connection: (status, head, body).
    fn get(&self, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connecting");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n{extra}Connection: close\r\n\r\n").expect("sending");
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).expect("reading");
        let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let status = head.get(9..12).and_then(|s| s.parse().ok()).expect("a status");
        (status, head, bytes[end..].to_vec())
    }

    /// The X-Cache label of a GET.
    fn label(&self, path: &str) -> (u16, String) {
        let (status, head, _) = self.get(path, "");
        let label = head.lines().find_map(|l| l.strip_prefix("X-Cache: ")).unwrap_or("-").to_owned();
        (status, label)
    }

    fn stats(&self) -> String {
        String::from_utf8(self.get("/.cache/stats", "").2).expect("JSON")
    }
}

/// curl's answer: (status, headers and body as curl printed them).
fn curl(port: u16, path: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "20", &format!("http://127.0.0.1:{port}{path}")])
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cache_in_front_of_nginx() {
    let test = "cache_in_front_of_nginx";
    let dir = tempfile::tempdir().expect("temp dir");
    let nginx = Nginx::start(dir.path());
    let Some(cache) = Cache::boot(test, nginx.port) else { return };

    // A miss, then hits: curl sees the body and the label; nginx saw one request.
    let first = curl(cache.port, "/static/a.txt");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(first.contains("X-Cache: MISS") && first.ends_with("static body\n"), "{first}");
    for _ in 0..3 {
        let again = curl(cache.port, "/static/a.txt");
        assert!(again.contains("X-Cache: HIT") && again.ends_with("static body\n"), "{again}");
        assert!(again.to_ascii_lowercase().contains("etag:"), "nginx's ETag is replayed: {again}");
    }
    assert_eq!(nginx.fetches_of("/static/a.txt"), 1, "hits never reach the origin");

    // no-cache: stored, revalidated every time with a conditional GET; nginx answers 304.
    assert_eq!(cache.label("/revalidate/a.txt"), (200, "MISS".into()));
    assert_eq!(cache.label("/revalidate/a.txt"), (200, "REVALIDATED".into()));
    let log = fs::read_to_string(&nginx.access_log).expect("access log");
    assert!(log.lines().any(|l| l.contains("GET /revalidate/a.txt ") && l.contains("\" 304 ")), "no 304 in:\n{log}");

    // no-store and private are never stored.
    for path in ["/nostore/a.txt", "/private/a.txt"] {
        for _ in 0..3 {
            assert_eq!(cache.label(path), (200, "MISS".into()), "{path}");
        }
        assert_eq!(nginx.fetches_of(path), 3, "{path} went to the origin every time");
    }

    // Coalescing: 50 concurrent misses of a slow URL (nginx sends it at 64 KiB/s) are one fetch.
    let out = Command::new("wrk")
        .args(["-c", "50", "-t", "2", "-d", "3s", &format!("http://127.0.0.1:{}/slow/big.bin", cache.port)])
        .output()
        .expect("wrk runs (package wrk)");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !report.contains("Non-2xx"), "{report}");
    assert_eq!(nginx.fetches_of("/slow/big.bin"), 1, "one origin fetch for 50 concurrent misses; wrk:\n{report}");
    let stats = cache.stats();
    assert!(stats.contains("\"coalesced\":"), "{stats}");

    // Stale entries, then the origin goes down.
    assert_eq!(cache.label("/short/a.txt"), (200, "MISS".into()));
    assert_eq!(cache.label("/mustrev/a.txt"), (200, "MISS".into()));
    thread::sleep(Duration::from_millis(1500));
    drop(nginx);
    assert_eq!(cache.label("/short/a.txt"), (200, "STALE".into()), "stale served while the origin is down");
    assert_eq!(cache.label("/mustrev/a.txt").0, 502, "must-revalidate is never served stale");
    assert_eq!(cache.label("/never/seen").0, 502, "nothing cached: a clear 502");
    assert_eq!(cache.label("/static/a.txt"), (200, "HIT".into()), "fresh entries need no origin");
    let stats = cache.stats();
    assert!(stats.contains("\"stale\":1") && stats.contains("\"origin_errors\":"), "{stats}");
    let lines: Vec<String> = cache.instance.console().iter().map(|l| l.text.clone()).collect();
    assert!(!lines.iter().any(|l| l.contains("panicked") || l.contains("exit status")), "{}", lines.join("\n"));
}

/// Answers every connection by the path asked: responses nginx would never send.
fn odd_origin() -> (u16, thread::JoinHandle<()>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let port = listener.local_addr().expect("address").port();
    let handle = thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).map_or(true, |n| n == 0) || header == "\r\n" {
                    break;
                }
            }
            let response: &[u8] = match path.as_str() {
                "/garbage" => b"\x00\xffHTTP/9 what\r\n\r\n",
                "/bad-length" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                "/cut" => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",
                "/vary-cookie" => b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nVary: Cookie\r\nContent-Length: 3\r\n\r\nabc",
                "/chunked" => b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            };
            let _ = stream.write_all(response);
        }
    });
    (port, handle)
}

#[test]
fn cache_refuses_malformed_origin_answers() {
    let test = "cache_refuses_malformed_origin_answers";
    let (port, _origin) = odd_origin();
    let Some(cache) = Cache::boot(test, port) else { return };
    for path in ["/garbage", "/bad-length", "/cut"] {
        let (status, _, body) = cache.get(path, "");
        assert_eq!(status, 502, "{path}: {}", String::from_utf8_lossy(&body));
    }
    // Vary on a header the cache does not support: passed through, never stored.
    assert_eq!(cache.label("/vary-cookie"), (200, "MISS".into()));
    assert_eq!(cache.label("/vary-cookie"), (200, "MISS".into()));
    // Chunked answers are de-chunked and stored.
    let (status, _, body) = cache.get("/chunked", "");
    assert_eq!((status, body.as_slice()), (200, &b"abcde"[..]));
    assert_eq!(cache.label("/chunked"), (200, "HIT".into()));
}
