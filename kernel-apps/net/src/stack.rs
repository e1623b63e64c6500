//! The stack: one interface, its address, its sockets, and the event loop's two calls.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use smoltcp::{
    iface::{Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet},
    phy::Device,
    socket::dhcpv4,
    time::Instant,
    wire::{EthernetAddress, IpCidr, Ipv4Address, Ipv4Cidr},
};

use crate::{IpConfig, earliest, tcp, udp};

/// What the stack needs from the machine it runs on.
pub trait Platform {
    /// The network device, as smoltcp drives it.
    type Device: Device;

    /// The device.
    fn device(&mut self) -> &mut Self::Device;

    /// The monotonic clock.
    fn now(&self) -> Instant;

    /// Sleeps until the device may have something to do (a frame arrived, a transmission
    /// finished) or `deadline` passes, whichever is first; `None` means no deadline. It may return
    /// early, never late by more than the platform's timer resolution.
    fn sleep_until(&mut self, deadline: Option<Instant>);
}

/// Gives each stack an identity, so handles from one stack are refused by another.
static NEXT_STACK_ID: AtomicU32 = AtomicU32::new(1);

/// A TCP/IP stack over one network device. See the crate docs for the event loop.
pub struct Stack<P: Platform> {
    pub(crate) platform: P,
    pub(crate) iface: Interface,
    pub(crate) sockets: SocketSet<'static>,
    pub(crate) id: u32,
    pub(crate) now: Instant,
    dhcp: Option<SocketHandle>,
    address: Option<Ipv4Cidr>,
    gateway: Option<Ipv4Address>,
    pub(crate) tcp: tcp::Sockets,
    /// A stream was closed or aborted since the last poll.
    pub(crate) released: bool,
    pub(crate) udp: udp::Sockets,
}

impl<P: Platform> core::fmt::Debug for Stack<P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Stack")
            .field("id", &self.id)
            .field("address", &self.address)
            .field("gateway", &self.gateway)
            .field("dhcp", &self.dhcp.is_some())
            .finish_non_exhaustive()
    }
}

impl<P: Platform> Stack<P> {
    /// A stack on `platform`'s device with hardware address `mac`, configured by `config`.
    pub fn new(mut platform: P, mac: [u8; 6], config: IpConfig) -> Stack<P> {
        let now = platform.now();
        let mut iface_config = Config::new(EthernetAddress(mac).into());
        // The seed picks initial TCP sequence numbers and DHCP transaction ids. The hardware
        // address differs between appliances and the clock between boots; neither is secret, which
        // is acceptable for the threats the manifest's isolation model leaves to the network.
        let mac_bits = mac.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        iface_config.random_seed = mac_bits ^ (now.total_micros() as u64).rotate_left(17);
        let iface = Interface::new(iface_config, platform.device(), now);
        let mut stack = Stack {
            platform,
            iface,
            sockets: SocketSet::new(Vec::new()),
            id: NEXT_STACK_ID.fetch_add(1, Ordering::Relaxed),
            now,
            dhcp: None,
            address: None,
            gateway: None,
            tcp: tcp::Sockets::default(),
            released: false,
            udp: udp::Sockets::default(),
        };
        match config {
            IpConfig::Static { address, gateway } => stack.configure(Some(address), gateway),
            IpConfig::Dhcp => stack.dhcp = Some(stack.sockets.add(dhcpv4::Socket::new())),
        }
        stack
    }

    /// The interface's address; `None` while DHCP has not obtained one.
    pub fn ipv4_address(&self) -> Option<Ipv4Cidr> {
        self.address
    }

    /// The default gateway, if there is one.
    pub fn gateway(&self) -> Option<Ipv4Address> {
        self.gateway
    }

    /// The clock, as of the last [`Stack::poll`].
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The platform (the device and clock) under the stack.
    pub fn platform(&self) -> &P {
        &self.platform
    }

    /// The platform, mutably: for tests that inject faults into the device.
    pub fn platform_mut(&mut self) -> &mut P {
        &mut self.platform
    }

    /// Moves frames between the device and the sockets, runs the stack's timers, and updates
    /// connection pools. Returns whether any socket may have changed state; the caller then looks
    /// at its sockets.
    pub fn poll(&mut self) -> bool {
        self.now = self.platform.now();
        // smoltcp's `Interface::poll`, one received frame at a time, so that connection pools can
        // grow between two frames (see `tcp`): a burst of connection attempts in one poll each
        // finds a listening socket.
        self.iface.poll_maintenance(self.now);
        let mut changed = false;
        loop {
            match self.iface.poll_ingress_single(self.now, self.platform.device(), &mut self.sockets) {
                PollIngressSingleResult::None => break,
                PollIngressSingleResult::PacketProcessed => {}
                PollIngressSingleResult::SocketStateChanged => {
                    changed = true;
                    self.tcp_grow_pools();
                }
            }
        }
        while self.iface.poll_egress(self.now, self.platform.device(), &mut self.sockets)
            == PollResult::SocketStateChanged
        {
            changed = true;
        }
        self.dhcp_events();
        // smoltcp reports a possible change whenever a segment came in or went out, which covers
        // every transition of a TCP socket (a timeout sends a reset; a close, a FIN). Releases by
        // the appliance are covered by `released`.
        if changed || core::mem::take(&mut self.released) {
            self.tcp_maintain();
        }
        changed
    }

    /// When the stack next needs [`Stack::poll`] (a retransmission, a delayed ACK, a DHCP
    /// renewal); `Some(now)` or earlier when it has work already; `None` when only a frame from
    /// the network can give it work.
    pub fn poll_at(&mut self) -> Option<Instant> {
        let now = self.platform.now();
        self.iface.poll_at(now, &self.sockets)
    }

    /// Sleeps until a frame arrives, the stack's next timer, or `deadline`, whichever is first.
    /// Returns at once when the stack already has work (data queued to send, for instance), so the
    /// event loop is: poll, handle sockets, wait.
    pub fn wait(&mut self, deadline: Option<Instant>) {
        let now = self.platform.now();
        let until = earliest(self.iface.poll_at(now, &self.sockets), deadline);
        if until.is_some_and(|until| until <= now) {
            return;
        }
        self.platform.sleep_until(until);
    }

    fn dhcp_events(&mut self) {
        let Some(handle) = self.dhcp else { return };
        let event = self.sockets.get_mut::<dhcpv4::Socket>(handle).poll();
        let change = match event {
            None => return,
            Some(dhcpv4::Event::Configured(lease)) => Some((lease.address, lease.router)),
            Some(dhcpv4::Event::Deconfigured) => None,
        };
        match change {
            Some((address, router)) => self.configure(Some(address), router),
            None => self.configure(None, None),
        }
    }

    fn configure(&mut self, address: Option<Ipv4Cidr>, gateway: Option<Ipv4Address>) {
        self.iface.update_ip_addrs(|addrs| {
            addrs.clear();
            if let Some(address) = address {
                // Capacity for one address is guaranteed by smoltcp's configuration.
                let _ = addrs.push(IpCidr::Ipv4(address));
            }
        });
        let routes = self.iface.routes_mut();
        routes.remove_default_ipv4_route();
        if let Some(gateway) = gateway {
            // Fails only when the route table is full, and it was just emptied of the default.
            let _ = routes.add_default_ipv4_route(gateway);
        }
        self.address = address;
        self.gateway = gateway;
    }
}
