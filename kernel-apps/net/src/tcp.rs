//! TCP: listeners with fixed connection pools, outgoing connections, and stream I/O.
//!
//! Every TCP socket the stack owns sits in a slot. A listener's slots live as long as the stack:
//! each one listens, is handed to the appliance by [`Stack::tcp_accept`] once its handshake
//! completes, and listens again once the appliance has closed it and the connection has finished
//! closing. The pool grows on demand up to its size: the listener starts with one listening slot,
//! and the stack adds another whenever a frame has taken the last one (between two frames, see
//! `Stack::poll`), so every connection attempt still finds a listening socket until the pool is
//! exhausted, while an idle appliance holds the buffers of one connection instead of all of them
//! (memory that, on the tender, the host never has to provide). An outgoing connection's slot is created by
//! [`Stack::tcp_connect`] and removed when it has finished closing.

use alloc::{vec, vec::Vec};
use core::fmt;

use smoltcp::{
    iface::SocketHandle,
    socket::tcp::{self, State},
    time::Duration,
    wire::IpEndpoint,
};

use crate::{Endpoint, Platform, Stack};

/// How a listener's connections behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenOptions {
    /// The most connections open at once (the pool size). Connection attempts beyond it are
    /// refused with a reset. Each costs `rx_buffer + tx_buffer` bytes, allocated when the pool
    /// first needs that many connections at once, and kept.
    pub max_connections: usize,
    /// Receive buffer per connection, in bytes: also the TCP window offered to the peer.
    pub rx_buffer: usize,
    /// Transmit buffer per connection, in bytes.
    pub tx_buffer: usize,
    /// Abort a connection whose peer has sent nothing for this long, in any state (half-open
    /// handshakes and closing connections included). An idle connection counts as silent unless
    /// `keep_alive` is shorter. `None`: never.
    pub timeout: Option<Duration>,
    /// Send TCP keep-alives after this much silence. `None`: never.
    pub keep_alive: Option<Duration>,
    /// Send small segments at once instead of waiting for earlier data to be acknowledged
    /// (disables Nagle's algorithm). Request/response protocols want this.
    pub nodelay: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            max_connections: 16,
            rx_buffer: 4096,
            tx_buffer: 8192,
            timeout: Some(Duration::from_secs(60)),
            keep_alive: None,
            nodelay: true,
        }
    }
}

/// How an outgoing connection behaves; the fields mean what they mean in [`ListenOptions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Receive buffer, in bytes: also the TCP window offered to the peer.
    pub rx_buffer: usize,
    /// Transmit buffer, in bytes.
    pub tx_buffer: usize,
    /// Abort the connection when the peer has sent nothing for this long. `None`: never.
    pub timeout: Option<Duration>,
    /// Send TCP keep-alives after this much silence. `None`: never.
    pub keep_alive: Option<Duration>,
    /// Send small segments at once (disables Nagle's algorithm).
    pub nodelay: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        let listen = ListenOptions::default();
        ConnectOptions {
            rx_buffer: listen.rx_buffer,
            tx_buffer: listen.tx_buffer,
            timeout: listen.timeout,
            keep_alive: listen.keep_alive,
            nodelay: listen.nodelay,
        }
    }
}

/// A listening port and its connection pool. Only the stack that made it accepts it.
#[derive(Debug)]
pub struct TcpListener {
    stack: u32,
    index: usize,
    port: u16,
}

impl TcpListener {
    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// One TCP connection. Give it back with [`Stack::tcp_close`] or [`Stack::tcp_abort`]: its slot
/// is reused only then (dropping the handle keeps the slot busy for the stack's lifetime).
#[derive(Debug)]
#[must_use = "a stream's slot is only reused after tcp_close or tcp_abort"]
pub struct TcpStream {
    stack: u32,
    slot: usize,
}

/// Where a connection stands, as the appliance sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamState {
    /// An outgoing connection's handshake is in progress.
    Connecting,
    /// Both directions are open.
    Open,
    /// The peer has finished sending (its FIN arrived); data may still be sent to it, and data it
    /// sent before may still be waiting to be read.
    PeerClosed,
    /// The connection is over: reset, timed out, or refused. Nothing more can be sent or read.
    Closed,
}

/// Why a stream operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpError {
    /// The peer finished sending and everything it sent has been read: end of stream.
    Finished,
    /// The connection cannot carry data in this direction any more (reset, timed out, or closed).
    Closed,
    /// The handle belongs to another stack.
    WrongStack,
}

impl fmt::Display for TcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcpError::Finished => "the peer finished sending",
            TcpError::Closed => "the connection is closed",
            TcpError::WrongStack => "the handle belongs to another network stack",
        })
    }
}

/// Why a listener could not be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenError {
    /// Port 0 cannot be listened on.
    PortZero,
    /// This stack already has a listener on the port.
    InUse,
    /// `max_connections` or a buffer size is 0.
    InvalidOptions,
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ListenError::PortZero => "cannot listen on port 0",
            ListenError::InUse => "a listener already has this port",
            ListenError::InvalidOptions => "max_connections and the buffer sizes must be at least 1",
        })
    }
}

/// Why an outgoing connection could not be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// The remote address or port is not usable (unspecified address, port 0), or the interface
    /// has no address yet.
    Unaddressable,
    /// A buffer size is 0.
    InvalidOptions,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectError::Unaddressable => "the remote endpoint is unusable or the interface has no address yet",
            ConnectError::InvalidOptions => "the buffer sizes must be at least 1",
        })
    }
}

/// The stack's TCP bookkeeping.
#[derive(Default)]
pub(crate) struct Sockets {
    listeners: Vec<Listener>,
    slots: Vec<Slot>,
    /// Slots of removed outgoing connections, for reuse.
    free: Vec<usize>,
    next_ephemeral: u16,
}

struct Listener {
    port: u16,
    /// How its connections are made, for the slots added as the pool grows.
    options: ListenOptions,
    slots: Vec<usize>,
    /// Where the next accept starts looking, so that no slot is favoured.
    cursor: usize,
    /// Whether a socket may have changed state since an accept last found nothing: scanning the
    /// pool costs a visit to every socket, which slow (emulated) CPUs notice.
    changed: bool,
}

struct Slot {
    handle: SocketHandle,
    /// The listener that owns the slot, or `None` for an outgoing connection.
    listener: Option<usize>,
    state: SlotState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Waiting for a connection (listener slots only).
    Listening,
    /// Handed to the appliance.
    InUse,
    /// Closed or aborted by the appliance; the connection is finishing.
    Closing,
    /// Removed (outgoing slots only), reusable.
    Free,
}

/// The first port of the dynamic range (RFC 6335), where outgoing connections get their ports.
const EPHEMERAL_FIRST: u16 = 49152;

fn new_socket(
    rx: usize,
    tx: usize,
    timeout: Option<Duration>,
    keep_alive: Option<Duration>,
    nodelay: bool,
) -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; rx]), tcp::SocketBuffer::new(vec![0; tx]));
    socket.set_timeout(timeout);
    socket.set_keep_alive(keep_alive);
    socket.set_nagle_enabled(!nodelay);
    socket
}

impl<P: Platform> Stack<P> {
    /// Listens on `port` with a pool of up to `options.max_connections` connections, allocated as
    /// they are first needed (see the module docs).
    pub fn tcp_listen(&mut self, port: u16, options: &ListenOptions) -> Result<TcpListener, ListenError> {
        if port == 0 {
            return Err(ListenError::PortZero);
        }
        if options.max_connections == 0 || options.rx_buffer == 0 || options.tx_buffer == 0 {
            return Err(ListenError::InvalidOptions);
        }
        if self.tcp.listeners.iter().any(|l| l.port == port) {
            return Err(ListenError::InUse);
        }
        let index = self.tcp.listeners.len();
        self.tcp.listeners.push(Listener { port, options: *options, slots: Vec::new(), cursor: 0, changed: false });
        self.add_listening_slot(index);
        Ok(TcpListener { stack: self.id, index, port })
    }

    /// Adds a listening slot to listener `index`'s pool.
    fn add_listening_slot(&mut self, index: usize) {
        let Some(listener) = self.tcp.listeners.get(index) else { return };
        let options = listener.options;
        let mut socket =
            new_socket(options.rx_buffer, options.tx_buffer, options.timeout, options.keep_alive, options.nodelay);
        // A fresh socket is closed and the port is not 0, which are listen's only conditions.
        let _ = socket.listen(listener.port);
        let handle = self.sockets.add(socket);
        let slot_index = self.tcp.slots.len();
        self.tcp.slots.push(Slot { handle, listener: Some(index), state: SlotState::Listening });
        if let Some(listener) = self.tcp.listeners.get_mut(index) {
            listener.slots.push(slot_index);
        }
    }

    /// After a frame: gives every listener whose pool can still grow a socket in the LISTEN state,
    /// if the frame took its last one (a SYN makes a listening socket SYN-RECEIVED). Cheap when
    /// nothing changed: the scan stops at the first socket still listening.
    pub(crate) fn tcp_grow_pools(&mut self) {
        for index in 0..self.tcp.listeners.len() {
            let Some(listener) = self.tcp.listeners.get(index) else { continue };
            if listener.slots.len() >= listener.options.max_connections {
                continue;
            }
            let listening = listener.slots.iter().rev().any(|&slot_index| {
                self.tcp.slots.get(slot_index).is_some_and(|slot| {
                    slot.state == SlotState::Listening
                        && self.sockets.get::<tcp::Socket>(slot.handle).state() == State::Listen
                })
            });
            if !listening {
                self.add_listening_slot(index);
            }
        }
    }

    /// A connection whose handshake has completed on `listener`, if there is one.
    pub fn tcp_accept(&mut self, listener: &TcpListener) -> Option<TcpStream> {
        if listener.stack != self.id {
            return None;
        }
        let entry = self.tcp.listeners.get_mut(listener.index)?;
        if !entry.changed {
            return None;
        }
        let count = entry.slots.len();
        for step in 0..count {
            let position = (entry.cursor + step) % count;
            let Some(&slot_index) = entry.slots.get(position) else { continue };
            let Some(slot) = self.tcp.slots.get_mut(slot_index) else { continue };
            if slot.state != SlotState::Listening {
                continue;
            }
            let state = self.sockets.get::<tcp::Socket>(slot.handle).state();
            // CloseWait: the client sent its request and its FIN before we looked; still a
            // connection to serve.
            if matches!(state, State::Established | State::CloseWait) {
                slot.state = SlotState::InUse;
                entry.cursor = (position + 1) % count;
                return Some(TcpStream { stack: self.id, slot: slot_index });
            }
        }
        entry.changed = false;
        None
    }

    /// Opens a connection to `remote` from an ephemeral port. The stream is
    /// [`StreamState::Connecting`] until the handshake completes.
    pub fn tcp_connect(&mut self, remote: Endpoint, options: &ConnectOptions) -> Result<TcpStream, ConnectError> {
        if options.rx_buffer == 0 || options.tx_buffer == 0 {
            return Err(ConnectError::InvalidOptions);
        }
        let mut socket =
            new_socket(options.rx_buffer, options.tx_buffer, options.timeout, options.keep_alive, options.nodelay);
        let port = self.ephemeral_port();
        let remote = IpEndpoint::new(remote.0.into(), remote.1);
        socket.connect(self.iface.context(), remote, port).map_err(|_| ConnectError::Unaddressable)?;
        let handle = self.sockets.add(socket);
        let slot = Slot { handle, listener: None, state: SlotState::InUse };
        let index = match self.tcp.free.pop() {
            Some(index) => {
                if let Some(entry) = self.tcp.slots.get_mut(index) {
                    *entry = slot;
                }
                index
            }
            None => {
                self.tcp.slots.push(slot);
                self.tcp.slots.len() - 1
            }
        };
        Ok(TcpStream { stack: self.id, slot: index })
    }

    /// A port for an outgoing connection: the dynamic range in turn, skipping ports in use.
    fn ephemeral_port(&mut self) -> u16 {
        let span = u16::MAX - EPHEMERAL_FIRST + 1;
        for _ in 0..span {
            let port = EPHEMERAL_FIRST + self.tcp.next_ephemeral % span;
            self.tcp.next_ephemeral = self.tcp.next_ephemeral.wrapping_add(1) % span;
            let taken = self.tcp.slots.iter().any(|slot| {
                slot.state != SlotState::Free
                    && self.sockets.get::<tcp::Socket>(slot.handle).local_endpoint().is_some_and(|e| e.port == port)
            });
            if !taken {
                return port;
            }
        }
        // Every dynamic port is in use: smoltcp tells connections apart by the remote endpoint too.
        EPHEMERAL_FIRST
    }

    fn stream_socket(&mut self, stream: &TcpStream) -> Result<&mut tcp::Socket<'static>, TcpError> {
        if stream.stack != self.id {
            return Err(TcpError::WrongStack);
        }
        let slot = self.tcp.slots.get(stream.slot).ok_or(TcpError::WrongStack)?;
        Ok(self.sockets.get_mut::<tcp::Socket>(slot.handle))
    }

    fn stream_socket_ref(&self, stream: &TcpStream) -> Option<&tcp::Socket<'static>> {
        if stream.stack != self.id {
            return None;
        }
        let slot = self.tcp.slots.get(stream.slot)?;
        Some(self.sockets.get::<tcp::Socket>(slot.handle))
    }

    /// Where the connection stands.
    pub fn tcp_state(&self, stream: &TcpStream) -> StreamState {
        let Some(socket) = self.stream_socket_ref(stream) else { return StreamState::Closed };
        match socket.state() {
            State::SynSent | State::SynReceived => StreamState::Connecting,
            State::Established => StreamState::Open,
            State::CloseWait => StreamState::PeerClosed,
            _ => StreamState::Closed,
        }
    }

    /// The peer's address and port.
    pub fn tcp_peer(&self, stream: &TcpStream) -> Option<Endpoint> {
        let endpoint = self.stream_socket_ref(stream)?.remote_endpoint()?;
        match endpoint.addr {
            smoltcp::wire::IpAddress::Ipv4(address) => Some((address, endpoint.port)),
        }
    }

    /// Reads what has arrived into `buf`. `Ok(0)`: nothing yet. `Err(TcpError::Finished)`: the
    /// peer finished sending and everything has been read.
    pub fn tcp_recv(&mut self, stream: &TcpStream, buf: &mut [u8]) -> Result<usize, TcpError> {
        match self.stream_socket(stream)?.recv_slice(buf) {
            Ok(n) => Ok(n),
            Err(tcp::RecvError::Finished) => Err(TcpError::Finished),
            Err(tcp::RecvError::InvalidState) => Err(TcpError::Closed),
        }
    }

    /// Hands what has arrived to `consume` in place (no copy), up to twice when the receive buffer
    /// wraps; `consume` returns how many bytes it took, and the rest stays for later. Returns the
    /// total taken; errors as for [`Stack::tcp_recv`].
    pub fn tcp_recv_with(
        &mut self,
        stream: &TcpStream,
        mut consume: impl FnMut(&[u8]) -> usize,
    ) -> Result<usize, TcpError> {
        let socket = self.stream_socket(stream)?;
        let mut total = 0;
        for _ in 0..2 {
            let taken = socket.recv(|data| {
                let taken = consume(data).min(data.len());
                (taken, (taken, data.len()))
            });
            match taken {
                Ok((taken, offered)) => {
                    total += taken;
                    if taken < offered || offered == 0 {
                        break;
                    }
                }
                Err(tcp::RecvError::Finished) if total == 0 => return Err(TcpError::Finished),
                Err(tcp::RecvError::InvalidState) if total == 0 => return Err(TcpError::Closed),
                Err(_) => break,
            }
        }
        Ok(total)
    }

    /// Queues `data` for sending; returns how much fit in the transmit buffer (possibly 0).
    pub fn tcp_send(&mut self, stream: &TcpStream, data: &[u8]) -> Result<usize, TcpError> {
        self.stream_socket(stream)?.send_slice(data).map_err(|_| TcpError::Closed)
    }

    /// Lets `produce` write straight into the transmit buffer (no copy), up to twice when it
    /// wraps; `produce` returns how many bytes it wrote. Returns the total queued.
    pub fn tcp_send_with(
        &mut self,
        stream: &TcpStream,
        mut produce: impl FnMut(&mut [u8]) -> usize,
    ) -> Result<usize, TcpError> {
        let socket = self.stream_socket(stream)?;
        let mut total = 0;
        for _ in 0..2 {
            let written = socket.send(|space| {
                let written = produce(space).min(space.len());
                (written, (written, space.len()))
            });
            match written {
                Ok((written, space)) => {
                    total += written;
                    if written < space || space == 0 {
                        break;
                    }
                }
                Err(_) if total == 0 => return Err(TcpError::Closed),
                Err(_) => break,
            }
        }
        Ok(total)
    }

    /// Free space in the transmit buffer, in bytes.
    pub fn tcp_send_space(&self, stream: &TcpStream) -> usize {
        self.stream_socket_ref(stream).map_or(0, |s| if s.may_send() { s.send_capacity() - s.send_queue() } else { 0 })
    }

    /// Bytes queued for sending and not yet acknowledged by the peer.
    pub fn tcp_send_queue(&self, stream: &TcpStream) -> usize {
        self.stream_socket_ref(stream).map_or(0, |s| s.send_queue())
    }

    /// Bytes received and not yet read.
    pub fn tcp_recv_queue(&self, stream: &TcpStream) -> usize {
        self.stream_socket_ref(stream).map_or(0, |s| s.recv_queue())
    }

    /// Closes the connection gracefully: what is queued is still sent, then a FIN. The slot is
    /// reused once the connection has finished closing (or after the listener's timeout if the
    /// peer disappears).
    pub fn tcp_close(&mut self, stream: TcpStream) {
        self.release(stream, false);
    }

    /// Aborts the connection: a reset is sent and queued data is dropped.
    pub fn tcp_abort(&mut self, stream: TcpStream) {
        self.release(stream, true);
    }

    fn release(&mut self, stream: TcpStream, abort: bool) {
        if stream.stack != self.id {
            return;
        }
        let Some(slot) = self.tcp.slots.get_mut(stream.slot) else { return };
        if slot.state != SlotState::InUse {
            return;
        }
        slot.state = SlotState::Closing;
        self.released = true;
        let socket = self.sockets.get_mut::<tcp::Socket>(slot.handle);
        if abort { socket.abort() } else { socket.close() }
    }

    /// How many of `listener`'s connections are handed out or still closing.
    pub fn tcp_connections(&self, listener: &TcpListener) -> usize {
        if listener.stack != self.id {
            return 0;
        }
        let Some(entry) = self.tcp.listeners.get(listener.index) else { return 0 };
        entry.slots.iter().filter(|&&i| self.tcp.slots.get(i).is_some_and(|s| s.state != SlotState::Listening)).count()
    }

    /// After a poll in which sockets may have changed state: listener slots whose connection has
    /// finished listen again; outgoing slots whose connection has finished are removed; and
    /// listeners look for new connections at their next accept.
    pub(crate) fn tcp_maintain(&mut self) {
        for listener in &mut self.tcp.listeners {
            listener.changed = true;
        }
        for (index, slot) in self.tcp.slots.iter_mut().enumerate() {
            let finished = match slot.state {
                SlotState::Closing | SlotState::Listening => {
                    let socket = self.sockets.get::<tcp::Socket>(slot.handle);
                    // TIME-WAIT is finished for our purposes: the peer has closed, and what the
                    // state guards against (a late duplicate segment) costs at most a reset.
                    matches!(socket.state(), State::Closed | State::TimeWait)
                }
                SlotState::InUse | SlotState::Free => false,
            };
            if !finished {
                continue;
            }
            match slot.listener.and_then(|l| self.tcp.listeners.get(l)) {
                Some(listener) => {
                    let socket = self.sockets.get_mut::<tcp::Socket>(slot.handle);
                    // listen() resets the socket; it only refuses open sockets, and this one is
                    // closed or in TIME-WAIT.
                    let _ = socket.listen(listener.port);
                    slot.state = SlotState::Listening;
                }
                None => {
                    self.sockets.remove(slot.handle);
                    slot.state = SlotState::Free;
                    self.tcp.free.push(index);
                }
            }
        }
    }
}
