//! `httpd` on both architectures, checked from the host over real TCP through QEMU's user-mode
//! network: every file byte for byte with a real HTTP client (ureq), keep-alive and pipelining on
//! raw sockets, 50 concurrent clients, a corpus of malformed and hostile requests, and an idle
//! appliance's CPU use. x86_64 needs KVM; without it those tests say why they skip.

use std::{
    collections::BTreeMap,
    fs,
    io::{ErrorKind, Read, Write},
    net::{Shutdown, TcpStream},
    path::PathBuf,
    sync::{Arc, Barrier},
    thread,
    time::{Duration, Instant},
};

use images::Arch;
use qemu::{Instance, free_local_port, kvm};

/// The port the manifest's `[[listen]]` declares.
const GUEST_PORT: u16 = 8080;
/// Boot, DHCP and the first poll, under TCG on a busy CI machine, with room to spare.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// One request on a busy machine (x86_64 under nested KVM answers in tens of milliseconds).
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A running httpd and the host port that reaches it.
struct Httpd {
    instance: Instance,
    port: u16,
}

impl Httpd {
    /// Boots httpd for `arch` with `args` (the manifest's when empty) and waits until it listens;
    /// `None` (with the reason printed) when `arch` cannot run here.
    fn boot(arch: Arch, test: &str, args: &[&str]) -> Option<Httpd> {
        Httpd::boot_with(arch, test, args, &[])
    }

    /// [`Httpd::boot`] with extra QEMU arguments.
    fn boot_with(arch: Arch, test: &str, args: &[&str], qemu_args: &[&str]) -> Option<Httpd> {
        if arch == Arch::X86_64 && !kvm::available_for(test) {
            return None;
        }
        let machine = qemu::appliance_machine("httpd", arch).unwrap_or_else(|e| panic!("building httpd: {e}"));
        let mut machine = if args.is_empty() { machine } else { machine.args(args) };
        for arg in qemu_args {
            machine = machine.extra_arg(arg);
        }
        // Another process may take the free port before QEMU binds it; QEMU then exits at once.
        for _ in 0..3 {
            let port = free_local_port().expect("a free port on 127.0.0.1");
            let mut instance = machine.clone().forward_tcp(port, GUEST_PORT).spawn().expect("starting QEMU");
            match instance.wait_for("httpd: listening on", BOOT_TIMEOUT) {
                Ok(_) => return Some(Httpd { instance, port }),
                Err(qemu::WaitError::Exited { .. }) => continue,
                Err(e) => panic!("{test}: {e}; console: {:?}", instance.console()),
            }
        }
        panic!("{test}: QEMU could not forward a free port three times");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connecting to the forwarded port");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
        stream.set_nodelay(true).expect("nodelay");
        stream
    }

    /// Fails the test if the appliance printed a panic or CPU exception, or stopped.
    fn assert_alive(&mut self) {
        let lines: Vec<String> = self.instance.console().iter().map(|l| l.text.clone()).collect();
        assert!(
            !lines.iter().any(|l| l.contains("panicked") || l.contains("CPU exception") || l.contains("exit status")),
            "httpd failed:\n{}",
            lines.join("\n")
        );
    }
}

/// The site as the image carries it: every file of kernel-apps/httpd/site by its URL path.
fn site_files() -> BTreeMap<String, Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kernel-apps/httpd/site");
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(&dir).expect("the site directory") {
        let entry = entry.expect("a directory entry");
        let name = entry.file_name().into_string().expect("UTF-8 file names");
        files.insert(format!("/{name}"), fs::read(entry.path()).expect("a site file"));
    }
    assert!(files.contains_key("/index.html") && files.contains_key("/style.css") && files.contains_key("/mast.png"));
    files
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(IO_TIMEOUT)).build().into()
}

/// One parsed response from a raw socket.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Reads responses from a raw connection, keeping what arrives beyond each one.
struct Reader {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Reader {
    fn new(stream: TcpStream) -> Reader {
        Reader { stream, buffer: Vec::new() }
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next response; `head_only` for the answer to a HEAD request (no body follows).
    fn response(&mut self, head_only: bool) -> Response {
        let head_end = loop {
            if let Some(at) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = self.fill().expect("reading a response head");
            assert!(
                n > 0,
                "connection closed before a complete response head: {:?}",
                String::from_utf8_lossy(&self.buffer)
            );
        };
        let head = String::from_utf8(self.buffer[..head_end].to_vec()).expect("an ASCII head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().expect("a status line");
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = l.split_once(':').unwrap_or_else(|| panic!("bad header {l:?}"));
                (name.to_owned(), value.trim().to_owned())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().expect("a numeric Content-Length"))
            .expect("every response has a Content-Length");
        let body_len = if head_only { 0 } else { length };
        while self.buffer.len() < head_end + body_len {
            let n = self.fill().expect("reading a body");
            assert!(n > 0, "connection closed inside a body");
        }
        let body = self.buffer[head_end..head_end + body_len].to_vec();
        self.buffer.drain(..head_end + body_len);
        Response { status, headers, body }
    }

    /// Whether the server closes the connection (EOF, or a reset) within `within`, discarding
    /// anything else it sends.
    fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        self.stream.set_read_timeout(Some(Duration::from_millis(200))).expect("read timeout");
        while Instant::now() < deadline {
            match self.fill() {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return true,
            }
        }
        false
    }
}

/// Sends `request` on a new connection and returns the first response.
fn exchange(httpd: &Httpd, request: &[u8]) -> (Response, Reader) {
    let mut stream = httpd.connect();
    stream.write_all(request).expect("sending");
    let mut reader = Reader::new(stream);
    let response = reader.response(false);
    (response, reader)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

fn serves_the_site(arch: Arch, test: &str) {
    let Some(mut httpd) = Httpd::boot(arch, test, &[]) else { return };
    let files = site_files();
    let agent = agent();

    // A real HTTP client: every file byte for byte, typed by extension; `/` is the index.
    for (path, bytes) in files.iter().map(|(p, b)| (p.as_str(), b)).chain([("/", &files["/index.html"])]) {
        let mut response = agent.get(&httpd.url(path)).call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(response.status(), 200, "GET {path}");
        let expected_type = match path.rsplit('.').next() {
            Some("css") => "text/css; charset=utf-8",
            Some("png") => "image/png",
            _ => "text/html; charset=utf-8",
        };
        assert_eq!(response.headers().get("content-type").and_then(|v| v.to_str().ok()), Some(expected_type), "{path}");
        let body = response.body_mut().read_to_vec().expect("reading the body");
        assert!(body == *bytes, "GET {path}: {} bytes differ from the {}-byte file", body.len(), bytes.len());
    }
    let mut health = agent.get(&httpd.url("/healthz")).call().expect("GET /healthz");
    assert_eq!(health.status(), 200);
    assert_eq!(health.body_mut().read_to_vec().expect("body"), b"ok\n");
    let missing = agent.get(&httpd.url("/no/such/file.html")).call().expect("GET a missing file");
    assert_eq!(missing.status(), 404);

    // Keep-alive: three requests one after another on one connection, HEAD among them.
    let mut reader = Reader::new(httpd.connect());
    for (method, path) in [("GET", "/style.css"), ("HEAD", "/mast.png"), ("GET", "/mast.png")] {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        reader.stream.write_all(request.as_bytes()).expect("sending");
        let response = reader.response(method == "HEAD");
        assert_eq!(response.status, 200, "{method} {path}");
        assert_eq!(response.header("content-length"), Some(files[path].len().to_string().as_str()), "{method} {path}");
        if method == "GET" {
            assert!(response.body == files[path], "{method} {path} on a kept-alive connection");
        }
        assert_ne!(response.header("connection"), Some("close"));
    }

    // Pipelining: four requests in one write, answered in order.
    let pipeline = format!("{}{}{}{}", get("/index.html"), get("/healthz"), get("/nope"), get("/mast.png"));
    reader.stream.write_all(pipeline.as_bytes()).expect("sending a pipeline");
    let answers: Vec<Response> = (0..4).map(|_| reader.response(false)).collect();
    assert_eq!(answers.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 200, 404, 200]);
    assert!(answers[0].body == files["/index.html"] && answers[3].body == files["/mast.png"]);
    assert_eq!(answers[1].body, b"ok\n");

    // `Connection: close` is honoured.
    reader.stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").expect("sending");
    assert_eq!(reader.response(false).header("connection"), Some("close"));
    assert!(reader.closed_within(IO_TIMEOUT), "the server must close after Connection: close");

    // Bytes that can never begin a request line get their 400 at once, not after the 10 s
    // request timeout this boot runs with: 1,000 bytes of \x00\xff and no line end.
    let started = Instant::now();
    let (response, mut reader) = exchange(&httpd, &b"\x00\xff".repeat(500));
    assert_eq!(response.status, 400, "binary garbage is a bad request line");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(reader.closed_within(IO_TIMEOUT), "the connection closes after the 400");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the 400 took {took:?}: it must not wait for the 10 s timeout");
    httpd.assert_alive();
}

#[test]
fn httpd_serves_the_site_on_aarch64() {
    serves_the_site(Arch::Aarch64, "httpd_serves_the_site_on_aarch64");
}

#[test]
fn httpd_serves_the_site_on_x86_64() {
    serves_the_site(Arch::X86_64, "httpd_serves_the_site_on_x86_64");
}

const CLIENTS: usize = 50;
const REQUESTS_PER_CLIENT: usize = 20;

fn serves_fifty_concurrent_clients(arch: Arch, test: &str) {
    let Some(mut httpd) = Httpd::boot(arch, test, &[]) else { return };
    let files = Arc::new(site_files());
    let paths: Vec<String> = files.keys().cloned().chain(["/healthz".to_owned()]).collect();
    // QEMU's forwarded port listens with a backlog of one, so fifty simultaneous connects would
    // overflow the host kernel's accept queue (dropped or reset before the guest ever sees them).
    // The clients therefore connect one at a time, each with its first request, and then all
    // fifty connections, open at once, send the rest of their requests concurrently.
    let connecting = Arc::new(std::sync::Mutex::new(()));
    let start = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (files, paths, start, base) = (files.clone(), paths.clone(), start.clone(), httpd.url(""));
            let connecting = connecting.clone();
            thread::spawn(move || {
                // One agent per client: it keeps its connection alive across the requests.
                let agent = agent();
                let mut failures = Vec::new();
                for request in 0..REQUESTS_PER_CLIENT {
                    let _turn = (request == 0).then(|| connecting.lock().unwrap_or_else(|e| e.into_inner()));
                    if request == 1 {
                        start.wait();
                    }
                    let path = &paths[(client + request) % paths.len()];
                    match agent.get(&format!("{base}{path}")).call() {
                        Ok(mut response) => {
                            let status = response.status().as_u16();
                            let body = response.body_mut().read_to_vec();
                            let expected: &[u8] = files.get(path).map_or(b"ok\n", |f| f);
                            match body {
                                Ok(body) if status == 200 && body == expected => {}
                                Ok(body) => failures.push(format!("{path}: status {status}, {} bytes", body.len())),
                                Err(e) => failures.push(format!("{path}: reading the body: {e}")),
                            }
                        }
                        Err(e) => failures.push(format!("{path}: {e}")),
                    }
                }
                failures
            })
        })
        .collect();
    let began = Instant::now();
    let failures: Vec<String> = clients.into_iter().flat_map(|c| c.join().expect("a client thread")).collect();
    let total = CLIENTS * REQUESTS_PER_CLIENT;
    eprintln!("{test}: {total} requests from {CLIENTS} clients in {:?}", began.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    httpd.assert_alive();
}

#[test]
fn httpd_serves_fifty_concurrent_clients_on_aarch64() {
    serves_fifty_concurrent_clients(Arch::Aarch64, "httpd_serves_fifty_concurrent_clients_on_aarch64");
}

#[test]
fn httpd_serves_fifty_concurrent_clients_on_x86_64() {
    serves_fifty_concurrent_clients(Arch::X86_64, "httpd_serves_fifty_concurrent_clients_on_x86_64");
}

/// What the slow client sends, one byte per corpus entry: never the whole request.
const SLOW_REQUEST: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: test\r\nUser-Agent: slow\r\n";

/// The timeout httpd runs with in the corpus test (boot argument), to keep the test short.
const CORPUS_TIMEOUT_SECS: u64 = 2;

fn survives_a_malformed_corpus(arch: Arch, test: &str) {
    let timeout_arg = format!("timeout={CORPUS_TIMEOUT_SECS}");
    let Some(mut httpd) = Httpd::boot(arch, test, &[&timeout_arg]) else { return };
    let timeout = Duration::from_secs(CORPUS_TIMEOUT_SECS);

    // Hold some connections open for the whole corpus: idle ones, one with half a request, and a
    // slow one trickling a request out a byte at a time.
    let idle: Vec<Reader> = (0..8).map(|_| Reader::new(httpd.connect())).collect();
    let mut partial = Reader::new(httpd.connect());
    partial.stream.write_all(b"GET /index.html HT").expect("half a request");
    let mut slow = Reader::new(httpd.connect());
    let slow_started = Instant::now();
    let mut trickled = 0;

    // Each request, with the status it must get; every one of them closes the connection.
    let huge_header = format!("GET / HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n", "a".repeat(16 * 1024));
    let many_headers = format!("GET / HTTP/1.1\r\nHost: test\r\n{}\r\n", "X-H: 1\r\n".repeat(100));
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: test\r\n\r\n", "x".repeat(16 * 1024));
    let mut garbage = vec![0u8; 64 * 1024];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for byte in &mut garbage {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    let corpus: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("empty request line", b"\r\n\r\nGET\r\n\r\n".to_vec(), &[400]),
        ("missing version", b"GET /\r\nHost: test\r\n\r\n".to_vec(), &[400]),
        ("extra words", b"GET / HTTP/1.1 x\r\nHost: test\r\n\r\n".to_vec(), &[400]),
        ("bare LF", b"GET / HTTP/1.1\nHost: test\n\n".to_vec(), &[400]),
        ("no Host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), &[400]),
        ("header without colon", b"GET / HTTP/1.1\r\nHost test\r\n\r\n".to_vec(), &[400]),
        ("unknown version", b"GET / HTTP/3.0\r\nHost: test\r\n\r\n".to_vec(), &[505]),
        ("POST", b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc".to_vec(), &[405]),
        ("unknown method", b"BREW /pot HTTP/1.1\r\nHost: test\r\n\r\n".to_vec(), &[501]),
        ("lowercase method", b"get / HTTP/1.1\r\nHost: test\r\n\r\n".to_vec(), &[501]),
        (
            "chunked GET",
            b"GET / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            &[501],
        ),
        (
            "two lengths",
            b"GET / HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\n".to_vec(),
            &[400],
        ),
        ("huge header", huge_header.into_bytes(), &[431]),
        ("a hundred headers", many_headers.into_bytes(), &[431]),
        ("huge request line", long_line.into_bytes(), &[414]),
        ("NUL bytes", b"GET /\0 HTTP/1.1\r\nHost: test\r\n\r\n".to_vec(), &[400]),
        // Random bytes fail as a bad request line, or as one too long if no CRLF comes soon.
        ("binary garbage", garbage, &[400, 414, 501]),
    ];
    for (name, request, statuses) in &corpus {
        let mut stream = httpd.connect();
        // The server may answer and close before it has read everything (a 431 after 8 KiB), so
        // a failed write is not a failure; the response is what counts.
        let _ = stream.write_all(request);
        let mut reader = Reader::new(stream);
        let response = reader.response(false);
        assert!(statuses.contains(&response.status), "{name}: got {}, expected one of {statuses:?}", response.status);
        assert_eq!(response.header("connection"), Some("close"), "{name}");
        assert!(reader.closed_within(IO_TIMEOUT), "{name}: the connection must be closed");
        // The slow client trickles on meanwhile, a byte of a valid request at a time.
        if let Some(byte) = SLOW_REQUEST.get(trickled) {
            let _ = slow.stream.write_all(&[*byte]);
            trickled += 1;
        }
    }

    // A client that resets in the middle of a request, and one that half-closes after it.
    let mut reset = httpd.connect();
    reset.write_all(b"GET /index.html HTTP/1.1\r\nHo").expect("half a request");
    drop(reset);
    let mut half_closed = httpd.connect();
    half_closed.write_all(get("/healthz").as_bytes()).expect("a request");
    half_closed.shutdown(Shutdown::Write).expect("half-close");
    let mut half_closed = Reader::new(half_closed);
    assert_eq!(half_closed.response(false).status, 200, "a half-closed client still gets its answer");
    assert!(half_closed.closed_within(IO_TIMEOUT));

    // All of that was served while the idle, partial and slow connections held their slots.
    let (health, _) = exchange(&httpd, get("/healthz").as_bytes());
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok\n"[..]));

    // The held connections are cut off by the timeout: idle ones closed, the partial request
    // and the slow one answered 408 (the slow one's trickle does not extend its deadline).
    for mut reader in idle {
        assert!(reader.closed_within(timeout * 4), "an idle connection must be closed after the timeout");
    }
    let response = partial.response(false);
    assert_eq!(response.status, 408, "a half-sent request times out");
    let response = slow.response(false);
    assert_eq!(response.status, 408, "a slow client times out");
    assert!(slow_started.elapsed() < timeout * 4 + IO_TIMEOUT);

    let (health, _) = exchange(&httpd, get("/healthz").as_bytes());
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok\n"[..]), "still healthy after the corpus");
    httpd.assert_alive();
}

#[test]
fn httpd_survives_a_malformed_corpus_on_aarch64() {
    survives_a_malformed_corpus(Arch::Aarch64, "httpd_survives_a_malformed_corpus_on_aarch64");
}

#[test]
fn httpd_survives_a_malformed_corpus_on_x86_64() {
    survives_a_malformed_corpus(Arch::X86_64, "httpd_survives_a_malformed_corpus_on_x86_64");
}

/// CPU time (user + system) QEMU's process has used, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("QEMU's /proc stat");
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("a stat line").1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // The kernel reports in USER_HZ, which is 100 on every Linux configuration that matters.
    Duration::from_millis(ticks * 10)
}

fn sleeps_when_idle(arch: Arch, test: &str) {
    let Some(mut httpd) = Httpd::boot(arch, test, &[]) else { return };
    let (health, _) = exchange(&httpd, get("/healthz").as_bytes());
    assert_eq!(health.status, 200);
    // Let the connection close and the stack's timers settle.
    thread::sleep(Duration::from_secs(1));
    let pid = httpd.instance.pid();
    let (before, began) = (cpu_time(pid), Instant::now());
    thread::sleep(Duration::from_secs(3));
    let used = cpu_time(pid) - before;
    let share = used.as_secs_f64() / began.elapsed().as_secs_f64();
    // An appliance that polled would use a whole core; a sleeping one stays near zero. The
    // bound leaves room for QEMU's own housekeeping on a loaded CI machine.
    assert!(share < 0.05, "{test}: idle QEMU used {:.1}% of a core", share * 100.0);
    httpd.assert_alive();
}

#[test]
fn idle_httpd_sleeps_on_aarch64() {
    sleeps_when_idle(Arch::Aarch64, "idle_httpd_sleeps_on_aarch64");
}

#[test]
fn idle_httpd_sleeps_on_x86_64() {
    sleeps_when_idle(Arch::X86_64, "idle_httpd_sleeps_on_x86_64");
}

/// The same appliance on QEMU `virt` with a GICv3 (what KVM on most Arm servers needs): served
/// and asleep when idle, through the redistributor and the system-register CPU interface.
#[test]
fn httpd_runs_on_a_gicv3_on_aarch64() {
    let test = "httpd_runs_on_a_gicv3_on_aarch64";
    let Some(mut httpd) = Httpd::boot_with(Arch::Aarch64, test, &[], &["-machine", "gic-version=3"]) else { return };
    let files = site_files();
    let mut reader = Reader::new(httpd.connect());
    for path in ["/index.html", "/mast.png", "/style.css"] {
        reader.stream.write_all(get(path).as_bytes()).expect("sending");
        let response = reader.response(false);
        assert_eq!(response.status, 200, "{path}");
        assert!(response.body == files[path], "{path}: bytes differ");
    }
    drop(reader);
    thread::sleep(Duration::from_secs(1));
    let pid = httpd.instance.pid();
    let (before, began) = (cpu_time(pid), Instant::now());
    thread::sleep(Duration::from_secs(2));
    let share = (cpu_time(pid) - before).as_secs_f64() / began.elapsed().as_secs_f64();
    assert!(share < 0.05, "{test}: idle QEMU used {:.1}% of a core", share * 100.0);
    httpd.assert_alive();
}

/// With `auto-kernel-cmdline=on` (QEMU `microvm`'s default, and how Firecracker works) the loader
/// names the virtio-mmio transports on the command line; httpd finds its network card from there.
#[test]
fn httpd_finds_its_card_on_microvms_command_line_on_x86_64() {
    let test = "httpd_finds_its_card_on_microvms_command_line_on_x86_64";
    let qemu_args = ["-machine", "auto-kernel-cmdline=on"];
    let Some(mut httpd) = Httpd::boot_with(Arch::X86_64, test, &[], &qemu_args) else { return };
    let (health, _) = exchange(&httpd, get("/healthz").as_bytes());
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok\n"[..]));
    httpd.assert_alive();
}

/// On a CPU without the TSC-deadline timer and x2APIC mode, the runtime falls back to the
/// memory-mapped xAPIC and a one-shot timer calibrated against the clock: timeouts still fire
/// (an idle connection is closed), and the idle appliance still sleeps.
#[test]
fn httpd_without_tsc_deadline_or_x2apic_on_x86_64() {
    let test = "httpd_without_tsc_deadline_or_x2apic_on_x86_64";
    let qemu_args = ["-cpu", "qemu64,-tsc-deadline,-x2apic"];
    let Some(mut httpd) = Httpd::boot_with(Arch::X86_64, test, &["timeout=1"], &qemu_args) else { return };
    let (health, _) = exchange(&httpd, get("/healthz").as_bytes());
    assert_eq!(health.status, 200);
    let mut idle = Reader::new(httpd.connect());
    let began = Instant::now();
    assert!(idle.closed_within(Duration::from_secs(10)), "the idle timeout must fire");
    assert!(began.elapsed() >= Duration::from_millis(900), "closed after {:?}, before the timeout", began.elapsed());
    httpd.assert_alive();
}

/// `ip=` and `gw=` boot arguments give a static address instead of DHCP. (QEMU forwards ports to
/// 10.0.2.15, the address its DHCP server would hand out, so that is the address to configure.)
#[test]
fn httpd_uses_a_static_address_on_aarch64() {
    let test = "httpd_uses_a_static_address_on_aarch64";
    let args = ["ip=10.0.2.15/24", "gw=10.0.2.2"];
    let Some(mut httpd) = Httpd::boot(Arch::Aarch64, test, &args) else { return };
    let listening = httpd.instance.console().iter().any(|l| l.text.contains("listening on http://10.0.2.15:8080/"));
    assert!(listening, "console: {:?}", httpd.instance.console());
    let (health, _) = exchange(&httpd, get("/healthz").as_bytes());
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok\n"[..]));
    httpd.assert_alive();
}

/// Runs `curl` with `args` against `url`; returns its `-w` output.
fn curl(url: &str, args: &[&str]) -> String {
    let output = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "20"])
        .args(args)
        .arg(url)
        .output()
        .expect("running curl (apt-get install curl)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// httpd as an origin, checked with real tools on one boot: curl's conditional, range and gzip
/// requests, and REDbot (from PyPI: `cargo xtask test` installs it) on every page of the site,
/// with no warnings or errors.
#[test]
fn httpd_is_a_good_origin_on_x86_64() {
    let test = "httpd_is_a_good_origin_on_x86_64";
    let Some(mut httpd) = Httpd::boot(Arch::X86_64, test, &[]) else { return };
    let files = site_files();
    for (path, bytes) in &files {
        let url = httpd.url(path);
        // The validator, then a revalidation with it: 304, no body.
        let head = std::process::Command::new("curl").args(["-sI", "--max-time", "20", &url]).output().expect("curl");
        let head = String::from_utf8_lossy(&head.stdout).into_owned();
        let etag = head
            .lines()
            .find_map(|l| l.strip_prefix("ETag: "))
            .map(|e| e.trim().to_owned())
            .unwrap_or_else(|| panic!("HEAD {path}: no ETag:\n{head}"));
        assert!(head.contains("\r\nDate: ") && head.contains("\r\nCache-Control: max-age="), "HEAD {path}:\n{head}");
        let revalidated = curl(&url, &["-H", &format!("If-None-Match: {etag}"), "-w", "%{http_code} %{size_download}"]);
        assert_eq!(revalidated, "304 0", "{path} revalidated with {etag}");
        let modified = head.lines().find_map(|l| l.strip_prefix("Last-Modified: ")).expect("Last-Modified").trim();
        let since = curl(&url, &["-H", &format!("If-Modified-Since: {modified}"), "-w", "%{http_code}"]);
        assert_eq!(since, "304", "{path} If-Modified-Since");
        assert_eq!(curl(&url, &["-H", "If-None-Match: \"other\"", "-w", "%{http_code}"]), "200", "{path}");
        // A single range: 206 with exactly those bytes; past the end: 416.
        let part = std::process::Command::new("curl")
            .args(["-s", "--max-time", "20", "-r", "1-10", &url])
            .output()
            .expect("curl");
        assert_eq!(part.stdout, bytes[1..11], "GET {path} bytes 1-10");
        assert_eq!(curl(&url, &["-r", "1-10", "-w", "%{http_code}"]), "206", "{path}");
        let past = format!("{}-", bytes.len());
        assert_eq!(curl(&url, &["-r", &past, "-w", "%{http_code}"]), "416", "{path}");
        // gzip when asked for, for text; curl --compressed checks it unpacks to the file.
        if path.ends_with(".html") || path.ends_with(".css") {
            let wire = curl(&url, &["-H", "Accept-Encoding: gzip", "-w", "%{size_download}"]);
            let wire: usize = wire.parse().expect("a size");
            assert!(wire < bytes.len(), "{path}: {wire} bytes compressed, {} plain", bytes.len());
            let unpacked = std::process::Command::new("curl")
                .args(["-s", "--compressed", "--max-time", "20", &url])
                .output()
                .expect("curl");
            assert!(unpacked.stdout == *bytes, "{path}: the gzip variant does not unpack to the file");
        }
        // REDbot: no warnings, no errors.
        let har = std::process::Command::new("redbot").args(["-o", "har", &url]).output().unwrap_or_else(|e| {
            panic!("running redbot: {e}; install it with `pip install redbot` (cargo xtask test does)")
        });
        let har: serde_json::Value = serde_json::from_slice(&har.stdout)
            .unwrap_or_else(|e| panic!("redbot {url}: unreadable HAR ({e}): {}", String::from_utf8_lossy(&har.stderr)));
        let problems: Vec<String> = har["log"]["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|entry| entry["_red_messages"].as_array().cloned().unwrap_or_default())
            .filter(|note| matches!(note["level"].as_str(), Some("WARN" | "BAD")))
            .map(|note| format!("{} {}", note["level"], note["note_id"]))
            .collect();
        assert!(problems.is_empty(), "REDbot on {path}: {problems:?}");
    }
    httpd.assert_alive();
}
