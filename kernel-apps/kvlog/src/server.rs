//! The event loop: TCP connections (`net`), HTTP framing (`http1::RequestReader`), the routes,
//! and the log on the disk.
//!
//! Requests are answered one at a time per connection, in order; an append blocks the loop
//! until its record is on the disk and flushed (see `runtime::virtio::block` for why blocking is
//! the right trade here), so its `201` is never sent before the record is durable.

extern crate alloc;

use alloc::{format, string::String, vec::Vec};

use http1::{Method, Next, RequestReader, Status, Version, write_head};
use kvlog::{AppendError, Disk, DiskError, MAX_VALUE_LEN, Store, valid_key};
use net::{Duration, Instant, IpConfig, ListenOptions, Net, StreamState, TcpError, TcpStream};
use runtime::{
    Context, ExitCode,
    block::{BlockDevice, SECTOR_SIZE},
    println,
};

runtime::entry!(main);

const PORT: u16 = 8080;
/// Connections at once: each may hold a request of up to 64 KiB and its response.
const MAX_CONNECTIONS: usize = 16;
const RX_BUFFER: usize = 8192;
const TX_BUFFER: usize = 8192;
const TCP_TIMEOUT: Duration = Duration::from_secs(30);
/// A connection idle this long is closed; a request that makes no progress this long gets 408.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

const BAD_ARGUMENTS: ExitCode = ExitCode(2);
const NO_NETWORK: ExitCode = ExitCode(3);
const NO_DISK: ExitCode = ExitCode(4);
const BAD_VOLUME: ExitCode = ExitCode(5);

const JSON: &str = "application/json";
const OCTETS: &str = "application/octet-stream";
const TEXT: &str = "text/plain; charset=utf-8";

/// The runtime's disk as the log's [`Disk`].
struct Volume(BlockDevice);

impl Volume {
    fn ack_interrupt(&mut self) {
        self.0.ack_interrupt();
    }
}

impl Disk for Volume {
    fn capacity_sectors(&self) -> u64 {
        self.0.capacity_sectors()
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.0.read(sector, buf).map_err(|_| DiskError)
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DiskError> {
        self.0.write(sector, buf).map_err(|_| DiskError)
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        self.0.flush().map_err(|_| DiskError)
    }
}

fn main(ctx: &mut Context) -> ExitCode {
    let config = match IpConfig::from_args(ctx.args()) {
        Ok(config) => config,
        Err(error) => {
            println!("kvlog: {error}");
            return BAD_ARGUMENTS;
        }
    };
    let disk = match BlockDevice::open() {
        Ok(disk) => disk,
        Err(error) => {
            println!("kvlog: {error}");
            return NO_DISK;
        }
    };
    let sectors = disk.capacity_sectors();
    // A volume id for a blank volume: the boot clock's nanoseconds, which differ from boot to
    // boot on any real machine. It only has to differ from the disk's previous format, if any.
    let volume_id = u64::try_from(runtime::time::Instant::now().since_reset().as_nanos()).unwrap_or(u64::MAX)
        ^ 0x6b76_6c6f_6700_0000;
    let started = runtime::time::Instant::now();
    let store = match Store::open(Volume(disk), volume_id) {
        Ok(store) => store,
        Err(error) => {
            println!("kvlog: volume of {} KiB: {error}", sectors * SECTOR_SIZE as u64 / 1024);
            return BAD_VOLUME;
        }
    };
    let stats = store.stats();
    println!(
        "kvlog: volume {} KiB, recovered {} records ({} bytes) in {} us{}",
        stats.capacity_bytes / 1024,
        stats.records,
        stats.bytes,
        started.elapsed().as_micros(),
        if store.recovered_torn() { "; the log ended at a torn or damaged record, which was dropped" } else { "" }
    );
    let mut net = match Net::open(config) {
        Ok(net) => net,
        Err(error) => {
            println!("kvlog: {error}");
            return NO_NETWORK;
        }
    };
    let options = ListenOptions {
        max_connections: MAX_CONNECTIONS,
        rx_buffer: RX_BUFFER,
        tx_buffer: TX_BUFFER,
        timeout: Some(TCP_TIMEOUT),
        keep_alive: None,
        nodelay: true,
    };
    let listener = match net.tcp_listen(PORT, &options) {
        Ok(listener) => listener,
        Err(error) => {
            println!("kvlog: cannot listen on port {PORT}: {error}");
            return NO_NETWORK;
        }
    };
    Server { net, listener, store, clients: Vec::with_capacity(MAX_CONNECTIONS), announced: None }.run()
}

struct Client {
    stream: TcpStream,
    reader: RequestReader,
    /// The response being sent, and how much of it has been.
    output: Vec<u8>,
    sent: usize,
    /// After the output: close.
    closing: bool,
    last_progress: Instant,
}

enum Verdict {
    Keep,
    Close,
    Abort,
}

struct Server {
    net: Net,
    listener: net::TcpListener,
    store: Store<Volume>,
    clients: Vec<Client>,
    announced: Option<net::Ipv4Cidr>,
}

impl Server {
    fn run(mut self) -> ! {
        loop {
            self.net.poll();
            self.announce();
            let now = self.net.now();
            while let Some(stream) = self.net.tcp_accept(&self.listener) {
                self.clients.push(Client {
                    stream,
                    reader: RequestReader::new(MAX_VALUE_LEN),
                    output: Vec::new(),
                    sent: 0,
                    closing: false,
                    last_progress: now,
                });
            }
            let mut next_deadline = None;
            let mut index = 0;
            while index < self.clients.len() {
                let verdict = match self.clients.get_mut(index) {
                    Some(client) => service(&mut self.net, &mut self.store, client, now),
                    None => break,
                };
                match verdict {
                    Verdict::Keep => {
                        if let Some(client) = self.clients.get(index) {
                            next_deadline = net::earliest(next_deadline, Some(client.last_progress + CLIENT_TIMEOUT));
                        }
                        index += 1;
                    }
                    Verdict::Close => self.net.tcp_close(self.clients.swap_remove(index).stream),
                    Verdict::Abort => self.net.tcp_abort(self.clients.swap_remove(index).stream),
                }
            }
            self.net.wait(next_deadline);
            // The disk's interrupt wakes this loop too (a completion that came after the driver
            // stopped waiting for it); lower it, or the next wait would return at once.
            self.store.disk_mut().ack_interrupt();
        }
    }

    fn announce(&mut self) {
        let address = self.net.ipv4_address();
        if address != self.announced {
            match address {
                Some(cidr) => {
                    println!("kvlog: listening on http://{}:{PORT}/", cidr.address());
                    runtime::ready();
                }
                None => println!("kvlog: lost the address; waiting for DHCP"),
            }
            self.announced = address;
        }
    }
}

fn service(net: &mut Net, store: &mut Store<Volume>, client: &mut Client, now: Instant) -> Verdict {
    if let Some(verdict) = pump(net, store, client, now) {
        return verdict;
    }
    if net.tcp_state(&client.stream) == StreamState::Closed {
        return Verdict::Abort;
    }
    if now >= client.last_progress + CLIENT_TIMEOUT {
        if client.closing || client.output.len() > client.sent || !client.reader.has_partial_request() {
            // Idle, or not reading what it is sent.
            return if client.output.len() > client.sent { Verdict::Abort } else { Verdict::Close };
        }
        respond(client, Status::RequestTimeout, TEXT, &[], b"408 Request Timeout\n", Version::Http11, true, false);
        client.last_progress = now;
        if let Some(verdict) = pump(net, store, client, now) {
            return verdict;
        }
    }
    Verdict::Keep
}

/// Moves bytes until nothing progresses; `Some` when the connection is over.
fn pump(net: &mut Net, store: &mut Store<Volume>, client: &mut Client, now: Instant) -> Option<Verdict> {
    loop {
        let mut progressed = false;
        if client.output.is_empty() && !client.closing {
            match client.reader.next() {
                Next::Request(request) => {
                    answer(store, request, &mut client.output, &mut client.closing);
                    client.reader.consume();
                    progressed = true;
                }
                Next::Refused(status) => {
                    let body = format!("{} {}\n", status.code(), status.reason());
                    respond(client, status, TEXT, &[], body.as_bytes(), Version::Http11, true, false);
                    progressed = true;
                }
                Next::Incomplete => {}
            }
        }
        let reader = &mut client.reader;
        let closing = client.closing;
        match net.tcp_recv_with(&client.stream, |data| if closing { data.len() } else { reader.receive(data) }) {
            Ok(0) => {}
            Ok(_) => {
                progressed = true;
                if client.reader.take_continue() {
                    // The client (curl, for large values) waits for this before sending the value.
                    client.output.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
            }
            Err(TcpError::Finished) => {
                // The client sent everything: answer what is complete, then close.
                if client.output.is_empty() && !matches!(client.reader.next(), Next::Request(_)) {
                    return Some(Verdict::Close);
                }
            }
            Err(_) => return Some(Verdict::Abort),
        }
        if client.sent < client.output.len() {
            let pending = client.output.get(client.sent..).unwrap_or_default();
            let mut offset = 0;
            let sent = net.tcp_send_with(&client.stream, |space| {
                let rest = pending.get(offset..).unwrap_or_default();
                let n = rest.len().min(space.len());
                space[..n].copy_from_slice(&rest[..n]);
                offset += n;
                n
            });
            match sent {
                Ok(0) => {}
                Ok(n) => {
                    client.sent += n;
                    progressed = true;
                }
                Err(_) => return Some(Verdict::Abort),
            }
            if client.sent >= client.output.len() {
                client.output = Vec::new();
                client.sent = 0;
            }
        }
        if progressed {
            client.last_progress = now;
        }
        if client.closing && client.output.is_empty() {
            return Some(Verdict::Close);
        }
        if !progressed {
            return None;
        }
    }
}

/// Writes a whole response (head and, unless `head_only`, body) into the client's output.
#[allow(clippy::too_many_arguments)]
fn respond(
    client: &mut Client,
    status: Status,
    content_type: &str,
    fields: &[(&str, &str)],
    body: &[u8],
    version: Version,
    close: bool,
    head_only: bool,
) {
    put(&mut client.output, status, content_type, fields, body, version, close, head_only);
    client.closing |= close;
}

#[allow(clippy::too_many_arguments)]
fn put(
    out: &mut Vec<u8>,
    status: Status,
    content_type: &str,
    fields: &[(&str, &str)],
    body: &[u8],
    version: Version,
    close: bool,
    head_only: bool,
) {
    write_head(out, status, content_type, body.len(), fields, version, close);
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// Answers one request into `out`.
fn answer(store: &mut Store<Volume>, request: http1::Request<'_>, out: &mut Vec<u8>, closing: &mut bool) {
    let head = &request.head;
    let close = !head.keep_alive;
    *closing |= close;
    let version = head.version;
    let head_only = head.method == Method::Head;
    let reply = route(store, head.method, head.path(), head.query(), request.content);
    let fields: Vec<(&str, &str)> = reply.fields.iter().map(|(name, value)| (*name, value.as_str())).collect();
    let allow: [(&str, &str); 1] = [("Allow", reply.allow)];
    let fields = if reply.status == Status::MethodNotAllowed { &allow[..] } else { &fields[..] };
    put(out, reply.status, reply.content_type, fields, &reply.body, version, close, head_only);
}

struct Reply {
    status: Status,
    content_type: &'static str,
    fields: Vec<(&'static str, String)>,
    body: Vec<u8>,
    allow: &'static str,
}

impl Reply {
    fn new(status: Status, content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply { status, content_type, fields: Vec::new(), body, allow: "" }
    }

    fn error(status: Status, why: &str) -> Reply {
        Reply::new(status, TEXT, format!("{} {}: {why}\n", status.code(), status.reason()).into_bytes())
    }

    fn method_not_allowed(allow: &'static str) -> Reply {
        let mut reply = Reply::error(Status::MethodNotAllowed, "see the Allow header");
        reply.allow = allow;
        reply
    }
}

fn route(store: &mut Store<Volume>, method: Method, path: &str, query: Option<&str>, content: &[u8]) -> Reply {
    let get = matches!(method, Method::Get | Method::Head);
    if path == "/append" {
        if method != Method::Post {
            return Reply::method_not_allowed("POST");
        }
        let Some(key) = query.and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("key="))) else {
            return Reply::error(Status::BadRequest, "the query must name the key: /append?key=K");
        };
        return match store.append(key, content) {
            Ok(seq) => Reply::new(Status::Created, JSON, format!("{{\"seq\":{seq}}}\n").into_bytes()),
            Err(AppendError::BadKey) => {
                Reply::error(Status::BadRequest, "a key is 1 to 128 characters of A-Z a-z 0-9 . _ -")
            }
            Err(AppendError::TooLarge) => Reply::error(Status::ContentTooLarge, "a value is at most 65536 bytes"),
            Err(AppendError::Full) => Reply::error(Status::InsufficientStorage, "the volume or the index is full"),
            Err(AppendError::Disk) => Reply::error(Status::InternalServerError, "the disk failed; nothing was stored"),
        };
    }
    let is_known = path == "/healthz" || path == "/stats" || path.starts_with("/log/") || path.starts_with("/latest/");
    if is_known && !get {
        return Reply::method_not_allowed("GET, HEAD");
    }
    if !is_known {
        return Reply::error(Status::NotFound, "no such path");
    }
    if path == "/healthz" {
        return Reply::new(Status::Ok, TEXT, b"ok\n".to_vec());
    }
    if path == "/stats" {
        let stats = store.stats();
        let body = format!(
            "{{\"records\":{},\"bytes\":{},\"next_seq\":{},\"keys\":{},\"used_bytes\":{},\"capacity_bytes\":{}}}\n",
            stats.records, stats.bytes, stats.next_seq, stats.keys, stats.used_bytes, stats.capacity_bytes
        );
        return Reply::new(Status::Ok, JSON, body.into_bytes());
    }
    let found = if let Some(seq) = path.strip_prefix("/log/") {
        let Some(seq) = parse_seq(seq) else {
            return Reply::error(Status::BadRequest, "a sequence number is decimal digits");
        };
        store.read(seq)
    } else {
        let key = path.strip_prefix("/latest/").unwrap_or_default();
        if !valid_key(key) {
            return Reply::error(Status::BadRequest, "a key is 1 to 128 characters of A-Z a-z 0-9 . _ -");
        }
        store.latest(key)
    };
    match found {
        Ok(Some(record)) => {
            let mut reply = Reply::new(Status::Ok, OCTETS, record.value);
            reply.fields.push(("X-Kvlog-Seq", format!("{}", record.seq)));
            reply.fields.push(("X-Kvlog-Key", String::from(&*record.key)));
            reply
        }
        Ok(None) => Reply::error(Status::NotFound, "no such record"),
        Err(DiskError) => Reply::error(Status::InternalServerError, "the record could not be read back intact"),
    }
}

/// A sequence number: 1 to 20 decimal digits that fit a `u64`.
fn parse_seq(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}
