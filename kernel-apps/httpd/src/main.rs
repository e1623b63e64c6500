//! `httpd`: serves the static site in its image over HTTP/1.1 on port 8080, plus `GET /healthz`.
//!
//! The site is the image's data part (the manifest's `data = "site"`), which the runtime hands
//! over as a bundle of files; `/` is `/index.html`. HTTP itself (parsing, keep-alive,
//! pipelining, status codes, content types) is the `http1` crate's; this crate is the event loop
//! that connects it to TCP (`net`), and the policy on resources:
//!
//! - at most [`MAX_CONNECTIONS`] connections at once; further attempts are refused (TCP reset);
//! - a request head is at most `http1::MAX_HEAD_LEN` bytes (431 beyond);
//! - a kept-alive connection idle for the timeout is closed; a request that has begun must be
//!   complete within the timeout (else 408 and close); a client that reads nothing for the
//!   timeout while responses wait is cut off. The timeout is 10 s, or `timeout=SECONDS`;
//! - a peer that goes silent in the middle of TCP (half-open, vanished) is aborted by the stack
//!   after [`TCP_TIMEOUT`].
//!
//! Boot arguments: `ip=A.B.C.D/N` and `gw=A.B.C.D` for a static address (DHCP otherwise),
//! `timeout=SECONDS`. The console says `httpd: listening on http://ADDRESS:8080/` once the
//! address is known; nothing is printed per request (console output is slow on x86_64).
//!
//! Exit statuses: 2 bad boot arguments, 3 no network device. The service itself never exits.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::{boxed::Box, format, string::String, vec::Vec};

use http1::{Connection, StaticSite};
use net::{Duration, Instant, IpConfig, ListenOptions, Net, StreamState, TcpError, TcpStream};
use runtime::{Context, ExitCode, println};

runtime::entry!(main);

/// The port the manifest's `[[listen]]` declares.
const PORT: u16 = 8080;
/// The connection pool: each costs its TCP buffers and up to `http1::MAX_HEAD_LEN` of input.
const MAX_CONNECTIONS: usize = 64;
/// TCP receive buffer per connection (and window): a few pipelined requests. (`http1` keeps the
/// request being parsed itself, so a head may be larger.)
const RX_BUFFER: usize = 2048;
/// TCP transmit buffer per connection: the site's files stream through it. Small, because each
/// connection's buffers are allocated and zeroed when the pool first needs it, and zeroing memory
/// is what time goes to where the guest is emulated instruction by instruction.
const TX_BUFFER: usize = 4096;
/// The stack aborts a connection whose peer has sent nothing for this long, closing ones included.
const TCP_TIMEOUT: Duration = Duration::from_secs(30);
/// The default for the idle, request and send timeouts.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

const BAD_ARGUMENTS: ExitCode = ExitCode(2);
const NO_NETWORK: ExitCode = ExitCode(3);

fn main(ctx: &mut Context) -> ExitCode {
    let timeout = match timeout_arg(ctx.args()) {
        Ok(timeout) => timeout,
        Err(arg) => {
            println!("httpd: boot argument {arg:?}: expected timeout=SECONDS, from 1 to 3600");
            return BAD_ARGUMENTS;
        }
    };
    let config = match IpConfig::from_args(ctx.args()) {
        Ok(config) => config,
        Err(error) => {
            println!("httpd: {error}");
            return BAD_ARGUMENTS;
        }
    };
    let site: &'static StaticSite = Box::leak(Box::new(site(ctx)));
    let mut net = match Net::open(config) {
        Ok(net) => net,
        Err(error) => {
            println!("httpd: {error}");
            return NO_NETWORK;
        }
    };
    if !net.has_interrupts() {
        println!("httpd: no device interrupts on this machine: polling, which keeps a CPU busy");
    }
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
            // Unreachable with the constants above; a clear message beats a panic all the same.
            println!("httpd: cannot listen on port {PORT}: {error}");
            return NO_NETWORK;
        }
    };
    Server { net, listener, site, timeout, clients: Vec::with_capacity(MAX_CONNECTIONS), announced: None }.run()
}

/// `timeout=SECONDS` from the boot arguments (the last one wins), or the default.
fn timeout_arg(args: &[String]) -> Result<Duration, &str> {
    let mut timeout = DEFAULT_TIMEOUT;
    for arg in args {
        if let Some(value) = arg.strip_prefix("timeout=") {
            let seconds: u64 = value.parse().map_err(|_| arg.as_str())?;
            if !(1..=3600).contains(&seconds) {
                return Err(arg);
            }
            timeout = Duration::from_secs(seconds);
        }
    }
    Ok(timeout)
}

/// The site from the image's data bundle: every file under its path with a leading `/`.
fn site(ctx: &Context) -> StaticSite {
    let Some(bundle) = ctx.data() else {
        println!("httpd: the image has no data part (manifest key `data`): serving only /healthz");
        return StaticSite::new(&[]);
    };
    let files: Vec<(&'static str, &'static [u8])> =
        bundle.iter().map(|(path, bytes)| (&*Box::leak(format!("/{path}").into_boxed_str()), bytes)).collect();
    StaticSite::new(Box::leak(files.into_boxed_slice()))
}

/// One client connection: the TCP stream and the HTTP state.
struct Client {
    stream: TcpStream,
    http: Connection,
    /// When bytes last moved in either direction.
    last_progress: Instant,
    /// When the request now arriving began (its first byte after an idle moment).
    request_since: Option<Instant>,
}

/// What became of a client after servicing.
enum Verdict {
    Keep,
    /// Done: close gracefully (queued bytes, then FIN).
    Close,
    /// Broken or hopeless: reset.
    Abort,
}

struct Server {
    net: Net,
    listener: net::TcpListener,
    site: &'static StaticSite,
    timeout: Duration,
    clients: Vec<Client>,
    /// The address announced on the console, to announce a change (a new DHCP lease).
    announced: Option<net::Ipv4Cidr>,
}

impl Server {
    fn run(mut self) -> ! {
        loop {
            self.net.poll();
            self.announce();
            let now = self.net.now();
            while let Some(stream) = self.net.tcp_accept(&self.listener) {
                let http = Connection::new(self.site);
                self.clients.push(Client { stream, http, last_progress: now, request_since: None });
            }
            let mut next_deadline = None;
            let mut index = 0;
            while index < self.clients.len() {
                let verdict = match self.clients.get_mut(index) {
                    Some(client) => service(&mut self.net, client, now, self.timeout),
                    None => break,
                };
                match verdict {
                    Verdict::Keep => {
                        if let Some(client) = self.clients.get(index) {
                            next_deadline = net::earliest(next_deadline, Some(deadline(client, self.timeout)));
                        }
                        index += 1;
                    }
                    Verdict::Close => self.net.tcp_close(self.clients.swap_remove(index).stream),
                    Verdict::Abort => self.net.tcp_abort(self.clients.swap_remove(index).stream),
                }
            }
            self.net.wait(next_deadline);
        }
    }

    fn announce(&mut self) {
        let address = self.net.ipv4_address();
        if address != self.announced {
            match address {
                Some(cidr) => {
                    println!("httpd: listening on http://{}:{PORT}/", cidr.address());
                    runtime::ready();
                }
                None => println!("httpd: lost the address; waiting for DHCP"),
            }
            self.announced = address;
        }
    }
}

/// When `client`'s current timeout expires.
fn deadline(client: &Client, timeout: Duration) -> Instant {
    match client.request_since {
        // A begun request must be complete (and answered) within the timeout.
        Some(since) if client.http.has_partial_request() && !client.http.has_output() => since + timeout,
        // Idle, or waiting for the client to read: the timeout counts from the last progress.
        _ => client.last_progress + timeout,
    }
}

/// Moves bytes between the socket and the HTTP state, and applies the timeouts.
fn service(net: &mut Net, client: &mut Client, now: Instant, timeout: Duration) -> Verdict {
    if let Some(verdict) = pump(net, client, now) {
        return verdict;
    }
    if net.tcp_state(&client.stream) == StreamState::Closed {
        return Verdict::Abort;
    }
    if now >= deadline(client, timeout) {
        if client.http.is_closing() {
            // Timed out (or closing) earlier and still not drained: the client is not reading.
            return Verdict::Abort;
        }
        client.http.timeout();
        client.last_progress = now;
        client.request_since = None;
        // Queue the 408, if there is one; the connection closes once it is sent, and a client
        // that reads nothing is aborted when the timeout expires again.
        if let Some(verdict) = pump(net, client, now) {
            return verdict;
        }
    }
    Verdict::Keep
}

/// Moves bytes between the socket and the HTTP state until neither side can progress. `Some`
/// when the connection is over.
fn pump(net: &mut Net, client: &mut Client, now: Instant) -> Option<Verdict> {
    loop {
        let was_idle = client.http.is_idle();
        let received = match net.tcp_recv_with(&client.stream, |data| client.http.receive(data)) {
            Ok(n) => n,
            Err(TcpError::Finished) => {
                client.http.end_of_input();
                0
            }
            Err(TcpError::Closed | TcpError::WrongStack) => return Some(Verdict::Abort),
        };
        if received > 0 && was_idle {
            client.request_since = Some(now);
        }
        let mut sent = 0;
        if client.http.has_output() {
            sent = match net.tcp_send_with(&client.stream, |buf| client.http.write_output(buf)) {
                Ok(n) => n,
                Err(_) => return Some(Verdict::Abort),
            };
        }
        if received > 0 || sent > 0 {
            client.last_progress = now;
        }
        if client.http.is_idle() {
            client.request_since = None;
        }
        if client.http.should_close() {
            return Some(Verdict::Close);
        }
        if received == 0 && sent == 0 {
            return None;
        }
    }
}
