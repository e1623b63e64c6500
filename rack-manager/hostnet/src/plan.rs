//! The address plan: slot `n` of a subnet is the `n`-th /30 in it. Pure, so it is tested alone.

use std::{fmt, net::Ipv4Addr, str::FromStr};

/// The prefix length of every instance's link: a /30 holds exactly the host and the guest.
pub const LINK_PREFIX_LEN: u8 = 30;

/// A range of IPv4 addresses cut into /30 links, one per slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix_len: u8,
}

/// The default range: 10.64.0.0/14, 65,536 links.
pub const DEFAULT_SUBNET: Subnet = Subnet { network: Ipv4Addr::new(10, 64, 0, 0), prefix_len: 14 };

/// One instance's link: its slot, tap name, and both ends' addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub slot: u32,
    /// The host end (the tap's address, and the guest's gateway).
    pub host: Ipv4Addr,
    /// The guest end.
    pub guest: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not a subnet for instance links: {problem} (example: 10.64.0.0/14)")]
pub struct SubnetError {
    pub given: String,
    pub problem: &'static str,
}

impl Subnet {
    /// How many links fit.
    pub fn slots(&self) -> u32 {
        1 << (LINK_PREFIX_LEN - self.prefix_len)
    }

    /// The link of `slot`, if the subnet has that many.
    pub fn link(&self, slot: u32) -> Option<Link> {
        if slot >= self.slots() {
            return None;
        }
        let base = u32::from(self.network) + slot * 4;
        Some(Link { slot, host: Ipv4Addr::from(base + 1), guest: Ipv4Addr::from(base + 2) })
    }
}

impl FromStr for Subnet {
    type Err = SubnetError;

    fn from_str(given: &str) -> Result<Subnet, SubnetError> {
        let error = |problem| SubnetError { given: given.to_owned(), problem };
        let (address, length) = given.split_once('/').ok_or_else(|| error("no /prefix length"))?;
        let network: Ipv4Addr = address.parse().map_err(|_| error("not an IPv4 address"))?;
        let prefix_len: u8 = length.parse().map_err(|_| error("the prefix length is not a number"))?;
        if !(8..=LINK_PREFIX_LEN).contains(&prefix_len) {
            return Err(error("the prefix length must be between 8 and 30"));
        }
        let host_bits = u32::MAX >> prefix_len;
        if u32::from(network) & host_bits != 0 {
            return Err(error("the address has bits set past the prefix length"));
        }
        Ok(Subnet { network, prefix_len })
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl Link {
    /// The tap device's name: `<prefix><slot>` (at most 15 bytes, Linux's limit, for prefixes of
    /// up to 5 bytes).
    pub fn tap(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.slot)
    }

    /// The guest's boot arguments for its static address (see `kernel-apps/net/src/config.rs`).
    pub fn guest_args(&self) -> [String; 2] {
        [format!("ip={}/{LINK_PREFIX_LEN}", self.guest), format!("gw={}", self.host)]
    }

    /// The host end with its prefix, as `ip addr add` takes it.
    pub fn host_cidr(&self) -> String {
        format!("{}/{LINK_PREFIX_LEN}", self.host)
    }

    /// A locally administered MAC address unique to the slot (`02:6d:74` is "mt").
    pub fn guest_mac(&self) -> String {
        let [_, a, b, c] = self.slot.to_be_bytes();
        format!("02:6d:74:{a:02x}:{b:02x}:{c:02x}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn slots_are_consecutive_slash_30s() {
        let first = DEFAULT_SUBNET.link(0).expect("slot 0");
        assert_eq!((first.host, first.guest), (Ipv4Addr::new(10, 64, 0, 1), Ipv4Addr::new(10, 64, 0, 2)));
        let later = DEFAULT_SUBNET.link(999).expect("slot 999");
        assert_eq!((later.host, later.guest), (Ipv4Addr::new(10, 64, 15, 157), Ipv4Addr::new(10, 64, 15, 158)));
        assert_eq!(later.guest_args(), ["ip=10.64.15.158/30".to_owned(), "gw=10.64.15.157".to_owned()]);
        assert_eq!(later.host_cidr(), "10.64.15.157/30");
        assert_eq!(later.tap("mt"), "mt999");
        assert_eq!(later.guest_mac(), "02:6d:74:00:03:e7");
    }

    #[test]
    fn every_slot_is_inside_the_subnet_and_none_overlap() {
        let subnet: Subnet = "192.168.4.0/24".parse().expect("valid");
        assert_eq!(subnet.slots(), 64);
        let mut seen = HashSet::new();
        for slot in 0..subnet.slots() {
            let link = subnet.link(slot).expect("in range");
            for address in [link.host, link.guest] {
                assert_eq!(address.octets()[..3], [192, 168, 4], "{address} is outside the subnet");
                assert!(seen.insert(address), "{address} handed out twice");
            }
        }
        assert_eq!(subnet.link(64), None, "past the end");
        assert_eq!(DEFAULT_SUBNET.slots(), 65_536);
        let last = DEFAULT_SUBNET.link(65_535).expect("the last slot");
        assert_eq!(last.guest, Ipv4Addr::new(10, 67, 255, 254));
    }

    #[test]
    fn bad_subnets_are_refused_with_the_reason() {
        for (given, problem) in [
            ("10.64.0.0", "no /prefix"),
            ("10.64.0/14", "not an IPv4"),
            ("10.64.0.0/31", "between 8 and 30"),
            ("10.64.0.1/14", "bits set"),
            ("10.64.0.0/x", "not a number"),
        ] {
            let error = given.parse::<Subnet>().expect_err(given).to_string();
            assert!(error.contains(problem), "{given}: {error}");
        }
        assert_eq!("10.64.0.0/14".parse::<Subnet>(), Ok(DEFAULT_SUBNET));
        assert_eq!(DEFAULT_SUBNET.to_string(), "10.64.0.0/14");
    }
}
