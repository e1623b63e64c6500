//! The appliance: clients on port 8080 (`net::serve`, `http1::RequestReader`), fetches from the
//! origin (`net` outgoing connections, `http1::ResponseReader`), and the store.
//!
//! - **GET/HEAD** are served from the store when a fresh entry matches (`X-Cache: HIT`). A stale
//!   entry with a validator is revalidated with a conditional GET (`If-None-Match`,
//!   `If-Modified-Since`); a `304` refreshes it (`X-Cache: REVALIDATED`). Otherwise the origin is
//!   asked (`X-Cache: MISS`) and what it answers is stored when `cache::policy` allows.
//! - **Coalescing**: concurrent requests for the same URL (and vary values) wait for one origin
//!   fetch and all get its answer.
//! - **Origin down** (refused, reset, silent for the origin timeout, or a malformed answer): a
//!   stale entry is served when its `Cache-Control` allows (`X-Cache: STALE`), else `502`.
//! - `GET /.cache/stats`: the counters, as JSON. Other methods: `501` (not forwarded).
//!
//! Boot arguments: `origin=A.B.C.D:PORT` (required), `cache_kib=N` (the store's bound, default
//! 4096), `ip=`/`gw=` (DHCP otherwise). Exit statuses: 2 bad boot arguments, 3 no network
//! device.

extern crate alloc;

use alloc::{format, string::String, vec::Vec};

use cache::{
    policy::{Decision, SUPPORTED_VARY, decide},
    store::{Entry, Store},
};
use http1::{Fetched, Method, Next, RequestReader, ResponseReader, Version, write_request};
use net::{
    ConnectOptions, Duration, Endpoint, Instant, IpConfig, Ipv4Address, Net, Platform, Stack, StreamState, TcpError,
    TcpStream, earliest,
    serve::{ServeOptions, Server, Service, State},
};
use runtime::{Context, ExitCode, println};

runtime::entry!(main);

/// 64 clients at once (attempts beyond are reset); 10 s idle and request timeouts.
const OPTIONS: ServeOptions =
    ServeOptions { max_connections: 64, rx_buffer: 4096, tx_buffer: 8192, ..ServeOptions::new("cache", "http", 8080) };
/// An origin fetch must be answered within this.
const ORIGIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Origin fetches at once; further misses get 503 until one finishes.
const MAX_FETCHES: usize = 32;
/// The largest origin response body taken (502 beyond).
const MAX_BODY: usize = 1 << 20;
const DEFAULT_CACHE_KIB: usize = 4096;
const TEXT: &str = "text/plain; charset=utf-8";
/// The origin's header fields replayed to clients (hop-by-hop ones and framing are not).
const REPLAYED: [&str; 9] = [
    "content-type",
    "content-encoding",
    "content-language",
    "etag",
    "last-modified",
    "cache-control",
    "vary",
    "location",
    "expires",
];

fn main(ctx: &mut Context) -> ExitCode {
    let (origin, cache_kib) = match args(ctx.args()) {
        Ok(parsed) => parsed,
        Err(message) => {
            println!("cache: {message}");
            return ExitCode(2);
        }
    };
    let config = match IpConfig::from_args(ctx.args()) {
        Ok(config) => config,
        Err(error) => {
            println!("cache: {error}");
            return ExitCode(2);
        }
    };
    let net = match Net::open(config) {
        Ok(net) => net,
        Err(error) => {
            println!("cache: {error}");
            return ExitCode(3);
        }
    };
    println!("cache: origin http://{}:{}/, store of {cache_kib} KiB", origin.0, origin.1);
    let proxy = Proxy {
        origin,
        host: format!("{}:{}", origin.0, origin.1),
        store: Store::new(cache_kib * 1024),
        fetches: Vec::new(),
        next_fetch: 0,
        now_ms: 0,
        stats: Stats::default(),
    };
    match Server::tcp(net, &OPTIONS, proxy) {
        Ok(server) => server.run(),
        Err(error) => {
            println!("cache: cannot listen on port {}: {error}", OPTIONS.port);
            ExitCode(3)
        }
    }
}

/// `origin=A.B.C.D:PORT` and `cache_kib=N`.
fn args(args: &[String]) -> Result<(Endpoint, usize), String> {
    let mut origin = None;
    let mut kib = DEFAULT_CACHE_KIB;
    for arg in args {
        if let Some(value) = arg.strip_prefix("origin=") {
            let parsed = value.split_once(':').and_then(|(ip, port)| {
                let ip: Ipv4Address = ip.parse().ok()?;
                Some((ip, port.parse::<u16>().ok().filter(|p| *p > 0)?))
            });
            origin = Some(parsed.ok_or_else(|| format!("boot argument {arg:?}: expected origin=A.B.C.D:PORT"))?);
        } else if let Some(value) = arg.strip_prefix("cache_kib=") {
            kib = value
                .parse()
                .ok()
                .filter(|k| (64..=1 << 20).contains(k))
                .ok_or_else(|| format!("boot argument {arg:?}: expected cache_kib=N, from 64 to 1048576"))?;
        }
    }
    let origin = origin.ok_or("no origin: boot with origin=A.B.C.D:PORT (an address, not a name)")?;
    Ok((origin, kib))
}

/// Counters for `/.cache/stats`.
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    hits: u64,
    misses: u64,
    revalidated: u64,
    stale: u64,
    coalesced: u64,
    fetches: u64,
    origin_errors: u64,
    not_stored: u64,
}

/// What a client waits for, and the request it answers.
#[derive(Clone, Debug)]
struct Want {
    key: String,
    /// The supported vary headers' values in the request, by lower-case name.
    request_headers: Vec<(String, String)>,
    head_only: bool,
    version: Version,
    close: bool,
    /// The client asked for revalidation (`Cache-Control: no-cache`).
    no_cache: bool,
    authorized: bool,
}

impl Want {
    fn header(&self, name: &str) -> Option<String> {
        self.request_headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }
}

/// An origin fetch, shared by every client that waits for it.
struct Fetch {
    id: u64,
    want: Want,
    /// The validators of the stale entry being revalidated.
    conditional: Vec<(&'static str, String)>,
    stream: Option<TcpStream>,
    request: Vec<u8>,
    sent: usize,
    reader: ResponseReader,
    started: Instant,
    /// Set once the fetch is over: the response (or why there is none).
    outcome: Option<Result<Fetched, &'static str>>,
    /// Clients waiting for it.
    waiters: usize,
}

struct Proxy {
    origin: Endpoint,
    host: String,
    store: Store,
    fetches: Vec<Fetch>,
    next_fetch: u64,
    /// The clock, as milliseconds, for the store.
    now_ms: u64,
    stats: Stats,
}

/// One client.
struct Client {
    reader: RequestReader,
    output: Vec<u8>,
    sent: usize,
    closing: bool,
    input_ended: bool,
    /// The fetch this client waits for, and its request.
    waiting: Option<(u64, Want)>,
}

impl Proxy {
    /// Answers the client's complete request, or makes it wait for a fetch.
    fn answer(&mut self, client: &mut Client) {
        if !client.output.is_empty() || client.closing || client.waiting.is_some() {
            return;
        }
        let want = match client.reader.next() {
            Next::Incomplete => {
                client.closing |= client.input_ended;
                return;
            }
            Next::Refused(status) => {
                error(&mut client.output, status.code(), status.reason(), Version::Http11, true);
                client.closing = true;
                return;
            }
            Next::Request(request) => {
                let head = &request.head;
                let close = !head.keep_alive;
                client.closing |= close;
                if !matches!(head.method, Method::Get | Method::Head) {
                    error(&mut client.output, 501, "Not Implemented", head.version, close);
                    client.reader.consume();
                    return;
                }
                if head.path() == "/.cache/stats" {
                    let body = self.stats_json();
                    write_response(
                        &mut client.output,
                        200,
                        &[("Content-Type", "application/json")],
                        &body,
                        head.version,
                        close,
                        head.method == Method::Head,
                    );
                    client.reader.consume();
                    return;
                }
                let cache_control = head.header("cache-control").unwrap_or_default().to_ascii_lowercase();
                Want {
                    key: String::from(head.target),
                    request_headers: SUPPORTED_VARY
                        .iter()
                        .filter_map(|name| head.header(name).map(|v| (String::from(*name), String::from(v))))
                        .collect(),
                    head_only: head.method == Method::Head,
                    version: head.version,
                    close,
                    no_cache: cache_control.contains("no-cache"),
                    authorized: head.header("authorization").is_some(),
                }
            }
        };
        client.reader.consume();
        let now = self.now_ms;
        let mut conditional = Vec::new();
        if let Some(entry) = self.store.get(&want.key, |name| want.header(name)) {
            if entry.is_fresh(now) && !want.no_cache {
                self.stats.hits += 1;
                replay(&mut client.output, entry, "HIT", now, &want);
                return;
            }
            if let Some(etag) = entry.header("etag") {
                conditional.push(("If-None-Match", String::from(etag)));
            }
            if let Some(modified) = entry.header("last-modified") {
                conditional.push(("If-Modified-Since", String::from(modified)));
            }
        }
        // Coalesce with a fetch of the same URL and vary values that is still running.
        if let Some(fetch) = self
            .fetches
            .iter_mut()
            .find(|f| f.outcome.is_none() && f.want.key == want.key && f.want.request_headers == want.request_headers)
        {
            fetch.waiters += 1;
            self.stats.coalesced += 1;
            client.waiting = Some((fetch.id, want));
            return;
        }
        if self.fetches.len() >= MAX_FETCHES {
            error(&mut client.output, 503, "Service Unavailable", want.version, want.close);
            return;
        }
        self.stats.fetches += 1;
        let id = self.next_fetch;
        self.next_fetch += 1;
        let mut request = Vec::new();
        let mut fields: Vec<(&str, &str)> = conditional.iter().map(|(n, v)| (*n, v.as_str())).collect();
        fields.extend(want.request_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        fields.push(("Via", "1.1 mast-cache"));
        fields.push(("Connection", "close"));
        write_request(&mut request, "GET", &want.key, &self.host, &fields);
        self.fetches.push(Fetch {
            id,
            want: want.clone(),
            conditional,
            stream: None,
            request,
            sent: 0,
            reader: ResponseReader::new(MAX_BODY, false),
            started: Instant::from_millis(i64::try_from(now).unwrap_or(i64::MAX)),
            outcome: None,
            waiters: 1,
        });
        client.waiting = Some((id, want));
    }

    /// Gives a waiting client the outcome of its fetch, if it is over.
    fn deliver(&mut self, client: &mut Client) {
        let Some((id, want)) = client.waiting.take() else { return };
        let Some(fetch) = self.fetches.iter_mut().find(|f| f.id == id) else {
            error(&mut client.output, 502, "Bad Gateway", want.version, want.close);
            return;
        };
        let Some(outcome) = &fetch.outcome else {
            client.waiting = Some((id, want));
            return;
        };
        fetch.waiters = fetch.waiters.saturating_sub(1);
        let now = self.now_ms;
        match outcome {
            Ok(fetched) if fetched.status == 304 => match self.store.get(&want.key, |n| want.header(n)) {
                Some(entry) => replay(&mut client.output, entry, "REVALIDATED", now, &want),
                None => error(&mut client.output, 502, "Bad Gateway", want.version, want.close),
            },
            Ok(fetched) => {
                let fields: Vec<(&str, &str)> = fetched
                    .headers
                    .iter()
                    .filter(|(n, _)| REPLAYED.iter().any(|r| n.eq_ignore_ascii_case(r)))
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .chain([("X-Cache", "MISS"), ("Via", "1.1 mast-cache")])
                    .collect();
                write_response(
                    &mut client.output,
                    fetched.status,
                    &fields,
                    &fetched.body,
                    want.version,
                    want.close,
                    want.head_only,
                );
            }
            Err(_) => match self.store.get(&want.key, |n| want.header(n)) {
                Some(entry) if entry.stale_ok => {
                    self.stats.stale += 1;
                    replay(&mut client.output, entry, "STALE", now, &want);
                }
                _ => error(&mut client.output, 502, "Bad Gateway", want.version, want.close),
            },
        }
        self.fetches.retain(|f| f.outcome.is_none() || f.waiters > 0);
    }

    /// Moves one fetch along; sets its outcome when it is over.
    fn drive<P: Platform>(fetch: &mut Fetch, stack: &mut Stack<P>, origin: Endpoint, now: Instant) {
        if fetch.outcome.is_some() {
            return;
        }
        let stream = match &fetch.stream {
            Some(stream) => stream,
            None => {
                let options = ConnectOptions { rx_buffer: 16 * 1024, tx_buffer: 2048, ..ConnectOptions::default() };
                match stack.tcp_connect(origin, &options) {
                    Ok(stream) => fetch.stream.insert(stream),
                    Err(_) => {
                        fetch.outcome = Some(Err("the origin is unaddressable"));
                        return;
                    }
                }
            }
        };
        let state = stack.tcp_state(stream);
        if matches!(state, StreamState::Open | StreamState::PeerClosed) && fetch.sent < fetch.request.len() {
            let pending = fetch.request.get(fetch.sent..).unwrap_or_default();
            fetch.sent += stack.tcp_send(stream, pending).unwrap_or(0);
        }
        let reader = &mut fetch.reader;
        match stack.tcp_recv_with(stream, |data| reader.receive(data)) {
            Ok(_) => {}
            Err(TcpError::Finished) => reader.end_of_input(),
            Err(_) if state == StreamState::Connecting => {}
            Err(_) => reader.end_of_input(),
        }
        if state == StreamState::Closed && !fetch.reader.is_done() {
            fetch.reader.end_of_input();
        }
        if fetch.reader.is_done() {
            let reader = core::mem::replace(&mut fetch.reader, ResponseReader::new(0, false));
            fetch.outcome = Some(match reader.finish() {
                Some(Ok(fetched)) => Ok(fetched),
                Some(Err(_)) | None if fetch.sent == 0 => Err("the origin refused the connection"),
                Some(Err(_)) | None => Err("the origin's answer was malformed or cut short"),
            });
        } else if now >= fetch.started + ORIGIN_TIMEOUT {
            fetch.outcome = Some(Err("the origin timed out"));
        }
        if fetch.outcome.is_some()
            && let Some(stream) = fetch.stream.take()
        {
            stack.tcp_abort(stream);
        }
    }

    /// Stores (or refreshes) what a finished fetch brought.
    fn store_outcome(store: &mut Store, stats: &mut Stats, fetch: &Fetch, now: u64) {
        let want = &fetch.want;
        match &fetch.outcome {
            Some(Ok(fetched)) if fetched.status == 304 && !fetch.conditional.is_empty() => {
                stats.revalidated += 1;
                if let Some(entry) = store.get(&want.key, |n| want.header(n)) {
                    entry.stored_at = now;
                    // A 304 may update the freshness (RFC 9111 §4.3.4).
                    if let Decision::Store { fresh_ms, stale_ok, .. } =
                        decide(200, |n| fetched.header(n).or(entry.header(n)).map(String::from), false)
                    {
                        entry.fresh_ms = fresh_ms;
                        entry.stale_ok = stale_ok;
                    }
                }
            }
            Some(Ok(fetched)) => {
                stats.misses += 1;
                match decide(fetched.status, |n| fetched.header(n).map(String::from), want.authorized) {
                    Decision::Store { fresh_ms, vary, stale_ok } => {
                        let vary = vary.into_iter().map(|name| {
                            let value = want.header(&name);
                            (name, value)
                        });
                        let headers = fetched
                            .headers
                            .iter()
                            .filter(|(n, _)| REPLAYED.iter().any(|r| n.eq_ignore_ascii_case(r)))
                            .cloned()
                            .collect();
                        let entry = Entry::new(
                            vary.collect(),
                            fetched.status,
                            headers,
                            fetched.body.clone(),
                            now,
                            fresh_ms,
                            stale_ok,
                        );
                        if !store.insert(&want.key, entry) {
                            stats.not_stored += 1;
                        }
                    }
                    Decision::Skip(_) => {
                        stats.not_stored += 1;
                        // A response that must not be stored also replaces what was stored.
                        store.remove(&want.key, &[]);
                    }
                }
            }
            Some(Err(_)) => stats.origin_errors += 1,
            None => {}
        }
    }

    fn stats_json(&self) -> Vec<u8> {
        let s = self.stats;
        let store = self.store.stats();
        format!(
            "{{\"hits\":{},\"misses\":{},\"revalidated\":{},\"stale\":{},\"coalesced\":{},\"fetches\":{},\
             \"origin_errors\":{},\"not_stored\":{},\"entries\":{},\"bytes\":{},\"limit\":{},\"evictions\":{}}}\n",
            s.hits,
            s.misses,
            s.revalidated,
            s.stale,
            s.coalesced,
            s.fetches,
            s.origin_errors,
            s.not_stored,
            store.entries,
            store.bytes,
            store.limit,
            store.evictions
        )
        .into_bytes()
    }
}

impl Service for Proxy {
    type Conn = Client;

    fn open(&mut self) -> Client {
        Client {
            reader: RequestReader::new(0),
            output: Vec::new(),
            sent: 0,
            closing: false,
            input_ended: false,
            waiting: None,
        }
    }

    fn receive(&mut self, client: &mut Client, data: &[u8]) -> usize {
        if client.closing && client.waiting.is_none() {
            return data.len();
        }
        let taken = client.reader.receive(data);
        self.answer(client);
        taken
    }

    fn end_of_input(&mut self, client: &mut Client) {
        client.input_ended = true;
        self.answer(client);
    }

    fn has_output(&self, client: &Client) -> bool {
        client.sent < client.output.len()
            || client
                .waiting
                .as_ref()
                .is_some_and(|(id, _)| self.fetches.iter().find(|f| f.id == *id).is_none_or(|f| f.outcome.is_some()))
    }

    fn send(&mut self, client: &mut Client, buf: &mut [u8]) -> usize {
        if client.output.is_empty() {
            self.deliver(client);
        }
        let pending = client.output.get(client.sent..).unwrap_or_default();
        let n = pending.len().min(buf.len());
        buf[..n].copy_from_slice(&pending[..n]);
        client.sent += n;
        if client.sent >= client.output.len() {
            client.output.clear();
            client.sent = 0;
            self.answer(client);
        }
        n
    }

    fn state(&self, client: &Client) -> State {
        if client.closing && client.waiting.is_none() {
            State::Closing
        } else if client.output.is_empty() && client.waiting.is_none() && !client.reader.has_partial_request() {
            State::Idle
        } else {
            State::Busy
        }
    }

    fn timeout(&mut self, client: &mut Client) {
        if client.reader.has_partial_request() && client.output.is_empty() {
            error(&mut client.output, 408, "Request Timeout", Version::Http11, true);
        }
        client.closing = true;
    }

    fn closed(&mut self, client: Client) {
        if let Some((id, _)) = client.waiting
            && let Some(fetch) = self.fetches.iter_mut().find(|f| f.id == id)
        {
            fetch.waiters = fetch.waiters.saturating_sub(1);
        }
        self.fetches.retain(|f| f.outcome.is_none() || f.waiters > 0);
    }

    fn poll<P: Platform>(&mut self, stack: &mut Stack<P>) -> Option<Instant> {
        let now = stack.now();
        self.now_ms = u64::try_from(now.total_millis()).unwrap_or(0);
        let mut next = None;
        for fetch in &mut self.fetches {
            if fetch.outcome.is_some() {
                continue;
            }
            if fetch.stream.is_none() {
                // The clock the fetch was made with was the store's; start its timer now.
                fetch.started = now;
            }
            Proxy::drive(fetch, stack, self.origin, now);
            if fetch.outcome.is_some() {
                Proxy::store_outcome(&mut self.store, &mut self.stats, fetch, self.now_ms);
            } else {
                next = earliest(next, Some(fetch.started + ORIGIN_TIMEOUT));
            }
        }
        next
    }
}

/// Writes a stored entry as the answer to `want`, with `X-Cache: label` and its `Age`.
fn replay(out: &mut Vec<u8>, entry: &Entry, label: &str, now: u64, want: &Want) {
    let age = format!("{}", now.saturating_sub(entry.stored_at) / 1000);
    let fields: Vec<(&str, &str)> = entry
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .chain([("Age", age.as_str()), ("X-Cache", label), ("Via", "1.1 mast-cache")])
        .collect();
    write_response(out, entry.status, &fields, &entry.body, want.version, want.close, want.head_only);
}

/// Writes a one-line text error.
fn error(out: &mut Vec<u8>, status: u16, reason: &str, version: Version, close: bool) {
    let body = format!("{status} {reason}\n");
    write_response(out, status, &[("Content-Type", TEXT)], body.as_bytes(), version, close, false);
}

/// Writes a response with any status code: the status line, `fields`, `Content-Length`, the
/// `Connection` field, and the body unless `head_only`.
fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    fields: &[(&str, &str)],
    body: &[u8],
    version: Version,
    close: bool,
    head_only: bool,
) {
    let head = format!("HTTP/1.1 {status} {}\r\nServer: mast-cache\r\n", reason(status));
    out.extend_from_slice(head.as_bytes());
    for (name, value) in fields {
        for piece in [*name, ": ", *value, "\r\n"] {
            out.extend_from_slice(piece.as_bytes());
        }
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// A reason phrase (clients ignore it; RFC 9112 §4).
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        404 => "Not Found",
        408 => "Request Timeout",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
