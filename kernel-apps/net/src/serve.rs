//! The event loop every network appliance runs: accept, move bytes, apply deadlines, sleep.
//!
//! An appliance describes *what* it does with a connection's bytes as a [`Service`] (or a
//! datagram's, as a [`DatagramService`]); this module owns *how*: the loop over the stack, the
//! bounded pool of connections, the per-connection deadlines and what happens when one passes,
//! graceful closes and resets, and the console line that says where the service listens. Every
//! appliance therefore gets the same hostile-network policy, stated once:
//!
//! - **Pool**: at most [`ServeOptions::max_connections`] connections at once. Overflow policy:
//!   a connection attempt beyond that is refused with a TCP reset by the stack (the pool's
//!   listening sockets are all taken), so a flood costs no memory and a client learns at once.
//! - **Idle**: a connection with nothing received and nothing to send ([`State::Idle`]) is
//!   closed [`ServeOptions::timeout`] after it last moved a byte.
//! - **Slow requests**: a request that has begun arriving must be complete (and answered) within
//!   the timeout of its first byte, however slowly it trickles in; then
//!   [`Service::timeout`] is called (an HTTP service answers 408) and the connection closes.
//! - **Slow readers**: a peer that reads none of the output waiting for it for the timeout is
//!   reset, as is a closing connection that cannot drain its output within the timeout.
//! - **Vanished peers**: the stack aborts a connection whose peer sends nothing for
//!   [`ServeOptions::tcp_timeout`] (half-open connections, closes that never finish).
//!
//! The loop never blocks on one connection: each turn it polls the stack, runs the service's own
//! work ([`Service::poll`]: outgoing connections, a disk), services every connection until
//! neither side progresses, and sleeps until a packet or the earliest deadline.
//!
//! ```ignore
//! struct Echo;
//! impl net::serve::Service for Echo { /* … */ }
//! let net = net::Net::open(config)?;
//! net::serve::Server::tcp(net, &ServeOptions::new("echo", "tcp", 7), Echo)?.run()
//! ```

use alloc::vec::Vec;

use crate::{
    Duration, Endpoint, Instant, Ipv4Cidr, ListenError, ListenOptions, Platform, Stack, StreamState, TcpError,
    TcpListener, TcpStream, UdpOptions, UdpSocket, earliest,
};

/// How a service listens, and its limits.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// The appliance's name, for its console lines (`NAME: listening on …`).
    pub name: &'static str,
    /// The scheme of the address it announces (`http`, `tcp`, `udp`).
    pub scheme: &'static str,
    /// The port.
    pub port: u16,
    /// Connections at once (TCP); each costs its two buffers and the service's state.
    pub max_connections: usize,
    /// TCP receive buffer (and window) per connection.
    pub rx_buffer: usize,
    /// TCP transmit buffer per connection.
    pub tx_buffer: usize,
    /// The idle, request and slow-reader timeout (see the module docs).
    pub timeout: Duration,
    /// The stack aborts a connection whose peer has sent nothing for this long.
    pub tcp_timeout: Duration,
}

impl ServeOptions {
    /// Defaults for a small service: 16 connections of 4 KiB buffers, a 10 s timeout, 30 s at
    /// the TCP level.
    pub const fn new(name: &'static str, scheme: &'static str, port: u16) -> ServeOptions {
        ServeOptions {
            name,
            scheme,
            port,
            max_connections: 16,
            rx_buffer: 4096,
            tx_buffer: 4096,
            timeout: Duration::from_secs(10),
            tcp_timeout: Duration::from_secs(30),
        }
    }

    fn listen_options(&self) -> ListenOptions {
        ListenOptions {
            max_connections: self.max_connections,
            rx_buffer: self.rx_buffer,
            tx_buffer: self.tx_buffer,
            timeout: Some(self.tcp_timeout),
            keep_alive: None,
            nodelay: true,
        }
    }
}

/// What a connection is doing, which decides its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Open, with nothing received and nothing to send: between requests.
    Idle,
    /// A request has begun arriving, or is being answered.
    Busy,
    /// No more input is taken: close once the output is sent.
    Closing,
}

/// A connection-oriented service: the protocol half of an appliance, fed bytes, producing bytes.
///
/// The loop calls [`receive`](Self::receive) with what arrived and [`send`](Self::send) with
/// room to fill, over and over until neither moves a byte, then asks [`state`](Self::state) and
/// [`has_output`](Self::has_output) to decide deadlines and when to close.
pub trait Service {
    /// Per-connection state.
    type Conn;

    /// A connection was accepted.
    fn open(&mut self) -> Self::Conn;

    /// Takes bytes received on `conn`; returns how many were taken. Bytes not taken stay in the
    /// socket (and its window), and are offered again on the next turn: that is how a service
    /// slows a peer down.
    fn receive(&mut self, conn: &mut Self::Conn, data: &[u8]) -> usize;

    /// The peer sent everything it will (a FIN arrived and all its bytes were taken). Called
    /// once. Requests already received may still be answered; then the service should close.
    fn end_of_input(&mut self, conn: &mut Self::Conn);

    /// Whether `conn` has bytes to send now.
    fn has_output(&self, conn: &Self::Conn) -> bool;

    /// Copies bytes to send into `buf`; returns how many.
    fn send(&mut self, conn: &mut Self::Conn, buf: &mut [u8]) -> usize;

    /// What `conn` is doing.
    fn state(&self, conn: &Self::Conn) -> State;

    /// `conn`'s deadline passed while it was idle or in the middle of a request: queue a last
    /// answer if the protocol has one (HTTP's 408) and become [`State::Closing`].
    fn timeout(&mut self, conn: &mut Self::Conn);

    /// The connection is gone (closed or reset), for services that track connections.
    fn closed(&mut self, conn: Self::Conn) {
        let _ = conn;
    }

    /// The service's own work, once per turn after the stack was polled and before connections
    /// are serviced: outgoing connections, a disk. Returns the service's next deadline, if any.
    fn poll<P: Platform>(&mut self, stack: &mut Stack<P>) -> Option<Instant> {
        let _ = stack;
        None
    }
}

/// A datagram service: each datagram in gives at most one datagram back.
pub trait DatagramService {
    /// A datagram arrived from `from`; append the reply, if any, to `reply` (left empty: none).
    fn datagram(&mut self, from: Endpoint, data: &[u8], reply: &mut Vec<u8>);
}

/// One accepted connection and the loop's bookkeeping for it.
struct Slot<C> {
    stream: TcpStream,
    conn: C,
    /// When a byte last moved in either direction.
    last_progress: Instant,
    /// When the request now in progress began (its first byte after an idle moment).
    busy_since: Option<Instant>,
    /// The peer's FIN was seen and passed on.
    input_ended: bool,
}

/// What becomes of a connection after a turn.
enum Verdict {
    Keep,
    /// Done: queued bytes, then FIN.
    Close,
    /// Broken or hopeless: reset.
    Abort,
}

/// A TCP service on a stack: the loop, its listener and its connections.
pub struct Server<P: Platform, S: Service> {
    stack: Stack<P>,
    listener: TcpListener,
    service: S,
    options: ServeOptions,
    slots: Vec<Slot<S::Conn>>,
    announced: Option<Ipv4Cidr>,
}

impl<P: Platform, S: Service> core::fmt::Debug for Server<P, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Server").field("options", &self.options).field("connections", &self.slots.len()).finish()
    }
}

impl<P: Platform, S: Service> Server<P, S> {
    /// Listens on `options.port` with `options`' pool.
    pub fn tcp(mut stack: Stack<P>, options: &ServeOptions, service: S) -> Result<Self, ListenError> {
        let listener = stack.tcp_listen(options.port, &options.listen_options())?;
        let slots = Vec::with_capacity(options.max_connections);
        Ok(Server { stack, listener, service, options: *options, slots, announced: None })
    }

    /// Serves forever.
    pub fn run(mut self) -> ! {
        loop {
            let deadline = self.turn();
            self.stack.wait(deadline);
        }
    }

    /// One turn of the loop without the sleep: poll, accept, service every connection. Returns
    /// the earliest deadline, for [`Stack::wait`]. (Tests drive the loop with this.)
    pub fn turn(&mut self) -> Option<Instant> {
        self.stack.poll();
        self.announced = announce(&self.stack, &self.options, self.announced);
        let mut next = self.service.poll(&mut self.stack);
        let now = self.stack.now();
        while let Some(stream) = self.stack.tcp_accept(&self.listener) {
            let conn = self.service.open();
            self.slots.push(Slot { stream, conn, last_progress: now, busy_since: None, input_ended: false });
        }
        let timeout = self.options.timeout;
        let mut index = 0;
        while let Some(slot) = self.slots.get_mut(index) {
            match service(&mut self.stack, &mut self.service, slot, now, timeout) {
                Verdict::Keep => {
                    next = earliest(next, Some(deadline(&self.service, slot, timeout)));
                    index += 1;
                }
                verdict => {
                    let slot = self.slots.swap_remove(index);
                    if matches!(verdict, Verdict::Abort) {
                        self.stack.tcp_abort(slot.stream);
                    } else {
                        self.stack.tcp_close(slot.stream);
                    }
                    self.service.closed(slot.conn);
                }
            }
        }
        next
    }

    /// The stack, for tests and for services that open their own sockets.
    pub fn stack_mut(&mut self) -> &mut Stack<P> {
        &mut self.stack
    }

    /// The service.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.slots.len()
    }
}

/// Prints where the service listens when the address is first known or changes (a new lease).
fn announce<P: Platform>(stack: &Stack<P>, options: &ServeOptions, announced: Option<Ipv4Cidr>) -> Option<Ipv4Cidr> {
    let address = stack.ipv4_address();
    if address != announced {
        match address {
            Some(cidr) => {
                crate::log(format_args!(
                    "{}: listening on {}://{}:{}/",
                    options.name,
                    options.scheme,
                    cidr.address(),
                    options.port
                ));
                // After the line, so a waiting wake sees the address first; only a boot's first says it.
                crate::ready();
            }
            None => crate::log(format_args!("{}: lost the address; waiting for DHCP", options.name)),
        }
    }
    address
}

/// When `slot`'s current deadline passes.
fn deadline<S: Service>(service: &S, slot: &Slot<S::Conn>, timeout: Duration) -> Instant {
    match slot.busy_since {
        // A begun request must be complete (and answered) within the timeout of its first byte.
        Some(since) if service.state(&slot.conn) == State::Busy && !service.has_output(&slot.conn) => since + timeout,
        // Idle, closing, or waiting for the peer to read: counted from the last progress.
        _ => slot.last_progress + timeout,
    }
}

/// Moves bytes between the socket and the service, and applies the deadline.
fn service<P: Platform, S: Service>(
    stack: &mut Stack<P>,
    service: &mut S,
    slot: &mut Slot<S::Conn>,
    now: Instant,
    timeout: Duration,
) -> Verdict {
    if let Some(verdict) = pump(stack, service, slot, now) {
        return verdict;
    }
    if stack.tcp_state(&slot.stream) == StreamState::Closed {
        return Verdict::Abort;
    }
    if now >= deadline(service, slot, timeout) {
        if service.state(&slot.conn) == State::Closing || service.has_output(&slot.conn) {
            // The peer read nothing for the timeout: it is not reading.
            return Verdict::Abort;
        }
        service.timeout(&mut slot.conn);
        slot.last_progress = now;
        slot.busy_since = None;
        // Send the last answer, if there is one; a peer that reads nothing is reset when the
        // timeout passes again.
        if let Some(verdict) = pump(stack, service, slot, now) {
            return verdict;
        }
    }
    Verdict::Keep
}

/// Moves bytes between the socket and the service until neither side progresses. `Some` when
/// the connection is over.
fn pump<P: Platform, S: Service>(
    stack: &mut Stack<P>,
    service: &mut S,
    slot: &mut Slot<S::Conn>,
    now: Instant,
) -> Option<Verdict> {
    loop {
        let was_idle = service.state(&slot.conn) == State::Idle;
        let mut received = 0;
        if !slot.input_ended {
            let conn = &mut slot.conn;
            match stack.tcp_recv_with(&slot.stream, |data| service.receive(conn, data)) {
                Ok(n) => received = n,
                Err(TcpError::Finished) => {
                    slot.input_ended = true;
                    service.end_of_input(&mut slot.conn);
                }
                Err(TcpError::Closed | TcpError::WrongStack) => return Some(Verdict::Abort),
            }
        }
        if received > 0 && was_idle {
            slot.busy_since = Some(now);
        }
        let mut sent = 0;
        if service.has_output(&slot.conn) {
            let conn = &mut slot.conn;
            sent = match stack.tcp_send_with(&slot.stream, |buf| service.send(conn, buf)) {
                Ok(n) => n,
                Err(_) => return Some(Verdict::Abort),
            };
        }
        if received > 0 || sent > 0 {
            slot.last_progress = now;
        }
        match service.state(&slot.conn) {
            State::Idle => slot.busy_since = None,
            State::Closing if !service.has_output(&slot.conn) => return Some(Verdict::Close),
            State::Busy | State::Closing => {}
        }
        if received == 0 && sent == 0 {
            return None;
        }
    }
}

/// A UDP service on a stack.
pub struct DatagramServer<P: Platform, S: DatagramService> {
    stack: Stack<P>,
    socket: UdpSocket,
    service: S,
    options: ServeOptions,
    /// One datagram in, one reply out: both at most the buffer size.
    buf: Vec<u8>,
    reply: Vec<u8>,
    announced: Option<Ipv4Cidr>,
}

impl<P: Platform, S: DatagramService> core::fmt::Debug for DatagramServer<P, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DatagramServer").field("options", &self.options).finish()
    }
}

impl<P: Platform, S: DatagramService> DatagramServer<P, S> {
    /// Binds `options.port`; datagrams of up to `options.rx_buffer` bytes are taken (longer ones
    /// are truncated by the stack), and replies longer than `options.tx_buffer` are dropped.
    pub fn udp(mut stack: Stack<P>, options: &ServeOptions, service: S) -> Result<Self, crate::BindError> {
        let socket = stack.udp_bind(options.port, &UdpOptions::default())?;
        let buf = alloc::vec![0; options.rx_buffer];
        Ok(DatagramServer { stack, socket, service, options: *options, buf, reply: Vec::new(), announced: None })
    }

    /// Serves forever.
    pub fn run(mut self) -> ! {
        loop {
            self.turn();
            self.stack.wait(None);
        }
    }

    /// One turn: poll, answer every datagram that arrived.
    pub fn turn(&mut self) {
        self.stack.poll();
        self.announced = announce(&self.stack, &self.options, self.announced);
        while let Ok(Some((len, from))) = self.stack.udp_recv(&self.socket, &mut self.buf) {
            self.reply.clear();
            let data = self.buf.get(..len).unwrap_or_default();
            self.service.datagram(from, data, &mut self.reply);
            if !self.reply.is_empty() && self.reply.len() <= self.options.tx_buffer {
                // A full transmit buffer drops the reply, as a network would: UDP promises nothing.
                let _ = self.stack.udp_send(&self.socket, from, &self.reply);
            }
        }
    }

    /// The stack, for tests.
    pub fn stack_mut(&mut self) -> &mut Stack<P> {
        &mut self.stack
    }
}
