//! Networking for appliances under test: QEMU user-mode networking with ports forwarded from the
//! host's loopback interface, and finding a free port for them.
//!
//! QEMU's user-mode network (slirp) gives the guest a private 10.0.2.0/24 network with a DHCP
//! server (the guest gets 10.0.2.15, the gateway is 10.0.2.2) and needs no privileges. A forward
//! makes QEMU listen on `127.0.0.1:HOST` and relay each connection to the guest's port; nothing
//! is reachable from outside the machine.
//!
//! QEMU accepts connections on a forwarded port as soon as it starts, before the guest listens,
//! and such early connections can stall: wait for the appliance's "listening" console line
//! before connecting.

use std::{io, net::TcpListener};

use crate::Machine;

impl Machine {
    /// Gives the VM a virtio-net device on QEMU's user-mode network (its DHCP server and gateway
    /// answer; nothing outside reaches in without a forward).
    pub fn user_network(mut self) -> Machine {
        self.network = true;
        self
    }

    /// Forwards `127.0.0.1:host_port` on the host to `guest_port` in the guest, giving the VM a
    /// virtio-net device on QEMU's user-mode network if it has none yet.
    pub fn forward_tcp(mut self, host_port: u16, guest_port: u16) -> Machine {
        self.tcp_forwards.push((host_port, guest_port));
        self
    }

    /// Forwards UDP datagrams to `127.0.0.1:host_port` on the host to `guest_port` in the guest
    /// (replies come back to the sender), giving the VM a user-mode network if it has none yet.
    pub fn forward_udp(mut self, host_port: u16, guest_port: u16) -> Machine {
        self.udp_forwards.push((host_port, guest_port));
        self
    }

    /// The `-netdev` value for the user-mode network, if the VM has one.
    pub(crate) fn netdev_arg(&self) -> Option<String> {
        if !self.network && self.tcp_forwards.is_empty() && self.udp_forwards.is_empty() {
            return None;
        }
        let mut netdev = String::from("user,id=mastnet0");
        for (host, guest) in &self.tcp_forwards {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        for (host, guest) in &self.udp_forwards {
            netdev.push_str(&format!(",hostfwd=udp:127.0.0.1:{host}-:{guest}"));
        }
        Some(netdev)
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now. Another process may take it before
/// QEMU does; callers that can retry should (QEMU then fails at once, saying it could not set up
/// the forward).
pub fn free_local_port() -> io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use images::Arch;

    use super::*;

    fn line(machine: &Machine) -> String {
        let args: Vec<String> =
            machine.command(Path::new("qemu")).get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        args.join(" ")
    }

    #[test]
    fn forwards_share_one_user_network_with_one_virtio_net_device() {
        let machine = Machine::new(Arch::Aarch64, "/k").forward_tcp(18080, 8080).forward_tcp(18081, 9090);
        let line = line(&machine);
        assert!(
            line.contains(
                "-netdev user,id=mastnet0,hostfwd=tcp:127.0.0.1:18080-:8080,hostfwd=tcp:127.0.0.1:18081-:9090 \
                 -device virtio-net-device,netdev=mastnet0"
            ),
            "{line}"
        );
        assert_eq!(line.matches("virtio-net-device").count(), 1);
    }

    #[test]
    fn no_forwards_no_network() {
        assert!(!line(&Machine::new(Arch::X86_64, "/k")).contains("netdev"));
    }

    #[test]
    fn a_network_without_forwards() {
        let line = line(&Machine::new(Arch::X86_64, "/k").user_network());
        assert!(line.contains("-netdev user,id=mastnet0 -device virtio-net-device,netdev=mastnet0"), "{line}");
    }

    #[test]
    fn free_ports_are_bindable() {
        let port = free_local_port().expect("a free port");
        assert!(port > 0);
        TcpListener::bind(("127.0.0.1", port)).expect("still free");
    }
}
