//! UDP: bound sockets with bounded packet queues.

use alloc::{vec, vec::Vec};
use core::fmt;

use smoltcp::{
    iface::SocketHandle,
    socket::udp::{self, PacketBuffer, PacketMetadata},
    wire::{IpAddress, IpEndpoint},
};

use crate::{Endpoint, Platform, Stack};

/// Queue sizes of a UDP socket: at most `*_packets` datagrams and `*_bytes` payload bytes wait in
/// each direction; what does not fit is dropped (incoming) or refused (outgoing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpOptions {
    /// Incoming datagrams that may wait.
    pub rx_packets: usize,
    /// Incoming payload bytes that may wait.
    pub rx_bytes: usize,
    /// Outgoing datagrams that may wait.
    pub tx_packets: usize,
    /// Outgoing payload bytes that may wait.
    pub tx_bytes: usize,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions { rx_packets: 16, rx_bytes: 16 * 1024, tx_packets: 16, tx_bytes: 16 * 1024 }
    }
}

/// A bound UDP port. Only the stack that made it accepts it.
#[derive(Debug)]
pub struct UdpSocket {
    stack: u32,
    handle: SocketHandle,
    port: u16,
}

impl UdpSocket {
    /// The local port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Why a UDP socket could not be bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindError {
    /// Port 0 cannot be bound.
    PortZero,
    /// This stack already has a socket on the port.
    InUse,
    /// A queue size is 0.
    InvalidOptions,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BindError::PortZero => "cannot bind port 0",
            BindError::InUse => "a socket already has this port",
            BindError::InvalidOptions => "the queue sizes must be at least 1",
        })
    }
}

/// Why a datagram could not be sent or received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpError {
    /// The transmit queue is full; try again after the next poll.
    QueueFull,
    /// The destination cannot be sent to (unspecified address, port 0, no address yet).
    Unaddressable,
    /// The datagram is larger than the transmit queue.
    TooLarge,
    /// The received datagram did not fit the buffer; it was dropped.
    Truncated,
    /// The handle belongs to another stack.
    WrongStack,
}

impl fmt::Display for UdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UdpError::QueueFull => "the transmit queue is full",
            UdpError::Unaddressable => "the destination is not addressable",
            UdpError::TooLarge => "the datagram is larger than the transmit queue",
            UdpError::Truncated => "the datagram did not fit the buffer and was dropped",
            UdpError::WrongStack => "the handle belongs to another network stack",
        })
    }
}

/// The stack's UDP bookkeeping: the ports in use.
#[derive(Default)]
pub(crate) struct Sockets {
    ports: Vec<u16>,
}

impl<P: Platform> Stack<P> {
    /// Binds `port` on the interface's address.
    pub fn udp_bind(&mut self, port: u16, options: &UdpOptions) -> Result<UdpSocket, BindError> {
        if port == 0 {
            return Err(BindError::PortZero);
        }
        let UdpOptions { rx_packets, rx_bytes, tx_packets, tx_bytes } = *options;
        if [rx_packets, rx_bytes, tx_packets, tx_bytes].contains(&0) {
            return Err(BindError::InvalidOptions);
        }
        if self.udp.ports.contains(&port) {
            return Err(BindError::InUse);
        }
        let rx = PacketBuffer::new(vec![PacketMetadata::EMPTY; rx_packets], vec![0; rx_bytes]);
        let tx = PacketBuffer::new(vec![PacketMetadata::EMPTY; tx_packets], vec![0; tx_bytes]);
        let mut socket = udp::Socket::new(rx, tx);
        // A fresh socket is unbound and the port is not 0, which are bind's only conditions.
        let _ = socket.bind(port);
        let handle = self.sockets.add(socket);
        self.udp.ports.push(port);
        Ok(UdpSocket { stack: self.id, handle, port })
    }

    /// Queues one datagram to `to`; it leaves at the next poll.
    pub fn udp_send(&mut self, socket: &UdpSocket, to: Endpoint, data: &[u8]) -> Result<(), UdpError> {
        if socket.stack != self.id {
            return Err(UdpError::WrongStack);
        }
        if to.0.is_unspecified() || to.1 == 0 {
            return Err(UdpError::Unaddressable);
        }
        let udp = self.sockets.get_mut::<udp::Socket>(socket.handle);
        if data.len() > udp.payload_send_capacity() {
            return Err(UdpError::TooLarge);
        }
        udp.send_slice(data, IpEndpoint::new(to.0.into(), to.1)).map_err(|e| match e {
            udp::SendError::BufferFull => UdpError::QueueFull,
            udp::SendError::Unaddressable => UdpError::Unaddressable,
        })
    }

    /// The next datagram that arrived, copied into `buf`: its length and sender. `Ok(None)`:
    /// nothing waiting.
    pub fn udp_recv(&mut self, socket: &UdpSocket, buf: &mut [u8]) -> Result<Option<(usize, Endpoint)>, UdpError> {
        if socket.stack != self.id {
            return Err(UdpError::WrongStack);
        }
        match self.sockets.get_mut::<udp::Socket>(socket.handle).recv_slice(buf) {
            Ok((len, meta)) => match meta.endpoint.addr {
                IpAddress::Ipv4(address) => Ok(Some((len, (address, meta.endpoint.port)))),
            },
            Err(udp::RecvError::Exhausted) => Ok(None),
            Err(udp::RecvError::Truncated) => Err(UdpError::Truncated),
        }
    }

    /// Unbinds the socket and frees its queues.
    pub fn udp_close(&mut self, socket: UdpSocket) {
        if socket.stack != self.id {
            return;
        }
        self.sockets.remove(socket.handle);
        self.udp.ports.retain(|&p| p != socket.port);
    }
}
