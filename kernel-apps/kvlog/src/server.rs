//! The appliance: the log on the disk, its routes, and HTTP framing (`http1::RequestReader`),
//! as a `net::serve` service; the event loop, connection pool and timeouts are `net::serve`'s.
//!
//! Requests are answered one at a time per connection, in order; an append blocks the loop
//! until its record is on the disk and flushed (see `runtime::virtio::block` for why blocking is
//! the right trade here), so its `201` is never sent before the record is durable.

extern crate alloc;

use alloc::{format, string::String, vec::Vec};

use http1::{Method, Next, RequestReader, Status, Version, write_head};
use kvlog::{AppendError, Disk, DiskError, MAX_VALUE_LEN, Recovery, Store, valid_key};
use net::{
    Instant, IpConfig, Net, Platform, Stack,
    serve::{ServeOptions, Server, Service, State},
};
use runtime::{
    Context, ExitCode,
    block::{BlockDevice, SECTOR_SIZE},
    println,
};

runtime::entry!(main);

/// Port 8080; 16 connections at once, each of which may hold a request of up to 64 KiB and its
/// response; a 10 s idle and request timeout.
const OPTIONS: ServeOptions =
    ServeOptions { max_connections: 16, rx_buffer: 8192, tx_buffer: 8192, ..ServeOptions::new("kvlog", "http", 8080) };
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
    let store = match Store::open_with(Volume(disk), volume_id, Recovery::from_args(ctx.args())) {
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
        store.damage_report().unwrap_or_default()
    );
    let net = match Net::open(config) {
        Ok(net) => net,
        Err(error) => {
            println!("kvlog: {error}");
            return NO_NETWORK;
        }
    };
    match Server::tcp(net, &OPTIONS, Kvlog { store }) {
        Ok(server) => server.run(),
        Err(error) => {
            println!("kvlog: cannot listen on port {}: {error}", OPTIONS.port);
            NO_NETWORK
        }
    }
}

/// The log as a service.
struct Kvlog {
    store: Store<Volume>,
}

/// One client: the request being framed, and the response being sent.
struct Client {
    reader: RequestReader,
    /// The response being sent, and how much of it has been.
    output: Vec<u8>,
    sent: usize,
    /// After the output: close.
    closing: bool,
    /// The client sent everything: answer what is complete, then close.
    input_ended: bool,
}

impl Kvlog {
    /// Answers the request the reader holds, if it is complete and nothing is being sent.
    fn answer_ready(&mut self, client: &mut Client) {
        if !client.output.is_empty() || client.closing {
            return;
        }
        match client.reader.next() {
            Next::Request(request) => {
                answer(&mut self.store, request, &mut client.output, &mut client.closing);
                client.reader.consume();
            }
            Next::Refused(status) => {
                let body = format!("{} {}\n", status.code(), status.reason());
                respond(client, status, TEXT, &[], body.as_bytes(), Version::Http11, true, false);
            }
            Next::Incomplete => client.closing |= client.input_ended,
        }
    }
}

impl Service for Kvlog {
    type Conn = Client;

    fn open(&mut self) -> Client {
        Client {
            reader: RequestReader::new(MAX_VALUE_LEN),
            output: Vec::new(),
            sent: 0,
            closing: false,
            input_ended: false,
        }
    }

    fn receive(&mut self, client: &mut Client, data: &[u8]) -> usize {
        if client.closing {
            return data.len();
        }
        let taken = client.reader.receive(data);
        if taken > 0 && client.reader.take_continue() {
            // The client (curl, for large values) waits for this before sending the value.
            client.output.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        self.answer_ready(client);
        taken
    }

    fn end_of_input(&mut self, client: &mut Client) {
        client.input_ended = true;
        self.answer_ready(client);
    }

    fn has_output(&self, client: &Client) -> bool {
        client.sent < client.output.len()
    }

    fn send(&mut self, client: &mut Client, buf: &mut [u8]) -> usize {
        let pending = client.output.get(client.sent..).unwrap_or_default();
        let n = pending.len().min(buf.len());
        buf[..n].copy_from_slice(&pending[..n]);
        client.sent += n;
        if client.sent >= client.output.len() {
            client.output = Vec::new();
            client.sent = 0;
            // The next request may be complete already (pipelined, or after a 100 Continue).
            self.answer_ready(client);
        }
        n
    }

    fn state(&self, client: &Client) -> State {
        if client.closing {
            State::Closing
        } else if client.output.is_empty() && !client.reader.has_partial_request() {
            State::Idle
        } else {
            State::Busy
        }
    }

    fn timeout(&mut self, client: &mut Client) {
        if client.reader.has_partial_request() && client.output.is_empty() {
            respond(client, Status::RequestTimeout, TEXT, &[], b"408 Request Timeout\n", Version::Http11, true, false);
        }
        client.closing = true;
    }

    fn poll<P: Platform>(&mut self, _stack: &mut Stack<P>) -> Option<Instant> {
        // The disk's interrupt wakes the loop too (a completion that came after the driver
        // stopped waiting for it); lower it, or the next wait would return at once.
        self.store.disk_mut().ack_interrupt();
        None
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
            Err(AppendError::Damaged) => Reply::error(
                Status::InsufficientStorage,
                "the log is damaged behind valid records; appends wait for an operator (see the boot line)",
            ),
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
