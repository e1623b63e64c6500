//! TCP/IP for Mast appliances: [smoltcp] behind a small, safe API.
//!
//! An appliance opens the stack once (`Net::open` on the bare-metal targets, which finds the
//! machine's network device: virtio-net on QEMU, the tender's rings on the tender), then runs one
//! event loop:
//!
//! ```ignore
//! let mut net = net::Net::open(net::IpConfig::from_args(ctx.args())?)?;
//! let listener = net.tcp_listen(8080, &net::ListenOptions::default())?;
//! loop {
//!     net.poll();                                   // move packets between the wire and sockets
//!     while let Some(stream) = net.tcp_accept(&listener) { /* keep it */ }
//!     /* read and write streams: tcp_recv, tcp_send, tcp_close … */
//!     net.wait(my_next_deadline);                   // sleep until a packet or a deadline
//! }
//! ```
//!
//! # What it owns
//! - [`Stack`]: one network interface (Ethernet, IPv4), its address (static, or DHCPv4 until a
//!   lease arrives), and every socket. Sockets are named by handles ([`TcpListener`],
//!   [`TcpStream`], [`UdpSocket`]) that only this stack accepts; every operation goes through the
//!   stack, so there is no shared mutable state and no `unsafe` here.
//! - Listeners with a **bounded pool** of connections ([`ListenOptions::max_connections`]): a
//!   listening socket is always ready while the pool has room (so a burst of connection attempts
//!   is accepted in one poll), and a connection's socket listens again once it has closed. When
//!   the pool is exhausted, further connection attempts are refused with a reset. Memory is
//!   therefore bounded; it is allocated as the pool first needs it (an idle listener holds one
//!   connection's buffers), and kept.
//! - Timeouts at the TCP level: a connection whose peer sends nothing for
//!   [`ListenOptions::timeout`] is aborted, which also bounds the time a closing connection can
//!   hold its slot. Application-level timeouts (idle or slow clients) belong to the appliance,
//!   which passes its own deadlines to [`Stack::wait`].
//! - Timers: an appliance keeps its own deadlines as [`Instant`]s ([`Stack::now`] plus a
//!   [`Duration`]) and passes the earliest ([`earliest`]) to [`Stack::wait`], which also wakes for
//!   the stack's own timers. Nothing runs behind the appliance's back: after `wait` returns, the
//!   loop polls and checks its deadlines.
//! - [`serve`]: the event loop itself, shared by every network appliance: a [`serve::Service`]
//!   (per-connection state, fed bytes, producing bytes) or [`serve::DatagramService`] on a port,
//!   with the pool, deadlines and closing policy in one place. Appliances use this rather than
//!   writing the loop below themselves.
//! - [`Platform`]: what the stack needs from the machine (a smoltcp device, a clock, a way to
//!   sleep). `Net` is the stack over the runtime's network device (`runtime::netdev`), which
//!   sleeps in the runtime's event-loop wait; [`sim::Simulated`] is a stack over any smoltcp device with a
//!   simulated clock, which is how the host tests run deterministically and fast.
//!
//! # Guarantees
//! - Never panics on network input (smoltcp's guarantee) or on misuse of handles: a handle from
//!   another stack is refused with an error.
//! - No busy waiting: [`Stack::wait`] sleeps until a device event, the stack's next timer
//!   (retransmission, delayed ACK, DHCP) or the caller's deadline, whichever is first.
//!
//! # Not supported
//! - IPv6, IP fragmentation, DNS, more than one interface, raw sockets.
//! - Blocking calls and async: everything is non-blocking and driven by the event loop.
//! - TCP window scaling beyond smoltcp's defaults, selective ACK, and socket options other than
//!   those in [`ListenOptions`] and [`ConnectOptions`].
#![cfg_attr(target_os = "none", no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod config;
#[cfg(target_os = "none")]
mod device;
pub mod serve;
pub mod sim;
pub mod sntp;
mod stack;
mod tcp;
mod udp;

pub use config::{ConfigError, IpConfig};
#[cfg(target_os = "none")]
pub use device::{Net, OpenError, RuntimePlatform};
pub use smoltcp::time::{Duration, Instant};
pub use smoltcp::wire::{Ipv4Address, Ipv4Cidr};
pub use stack::{Platform, Stack};
pub use tcp::{
    ConnectError, ConnectOptions, ListenError, ListenOptions, StreamState, TcpError, TcpListener, TcpStream,
};
pub use udp::{BindError, UdpError, UdpOptions, UdpSocket};

/// A console line: the runtime's console on an appliance, standard error on the host.
#[cfg(target_os = "none")]
pub(crate) fn log(line: core::fmt::Arguments<'_>) {
    runtime::println!("{line}");
}

/// A console line: the runtime's console on an appliance, standard error on the host.
#[cfg(not(target_os = "none"))]
pub(crate) fn log(line: core::fmt::Arguments<'_>) {
    std::eprintln!("{line}");
}

/// Tells the platform the appliance listens and serves (`runtime::ready`: the tender's `Ready`
/// hypercall, or QEMU's console marker), so an on-demand wake completes the moment it can answer.
#[cfg(target_os = "none")]
pub(crate) fn ready() {
    runtime::ready();
}

/// Readiness on the host: nobody waits for it.
#[cfg(not(target_os = "none"))]
pub(crate) fn ready() {}

/// An IPv4 address and port.
pub type Endpoint = (Ipv4Address, u16);

/// The earlier of two optional deadlines (`None` means "no deadline").
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_ignores_missing_deadlines() {
        let (a, b) = (Instant::from_millis(5), Instant::from_millis(7));
        assert_eq!(earliest(Some(a), Some(b)), Some(a));
        assert_eq!(earliest(Some(b), None), Some(b));
        assert_eq!(earliest(None, Some(a)), Some(a));
        assert_eq!(earliest(None, None), None);
    }
}
