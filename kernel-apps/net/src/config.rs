//! How the interface gets its address: DHCPv4, or static from boot arguments.

use alloc::string::{String, ToString};
use core::fmt;

use smoltcp::wire::{Ipv4Address, Ipv4Cidr};

/// The interface's IPv4 configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpConfig {
    /// Ask a DHCPv4 server; the stack has no address until a lease arrives.
    Dhcp,
    /// A fixed address, and optionally a default gateway.
    Static {
        /// The interface's address and prefix length.
        address: Ipv4Cidr,
        /// Where packets for other networks go; `None` reaches only the local network.
        gateway: Option<Ipv4Address>,
    },
}

/// A boot argument that does not say what [`IpConfig::from_args`] expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The argument, as given.
    pub arg: String,
    /// What is wrong with it, and what would be right.
    pub problem: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "boot argument {:?}: {}", self.arg, self.problem)
    }
}

impl IpConfig {
    /// Reads the network boot arguments: `ip=A.B.C.D/N` (address and prefix length) and
    /// `gw=A.B.C.D` (default gateway). Without `ip=` the configuration is DHCP. Other arguments
    /// are ignored, so an appliance can pass all of its arguments; a repeated argument's last
    /// value wins.
    pub fn from_args<S: AsRef<str>>(args: &[S]) -> Result<IpConfig, ConfigError> {
        let mut address = None;
        let mut gateway = None;
        for arg in args {
            let arg = arg.as_ref();
            let error = |problem| ConfigError { arg: arg.to_string(), problem };
            if let Some(value) = arg.strip_prefix("ip=") {
                address =
                    Some(parse_cidr(value).ok_or_else(|| {
                        error("expected ip=A.B.C.D/N, an IPv4 address and a prefix length from 1 to 32")
                    })?);
            } else if let Some(value) = arg.strip_prefix("gw=") {
                gateway = Some(value.parse::<Ipv4Address>().map_err(|_| error("expected gw=A.B.C.D"))?);
            }
        }
        match (address, gateway) {
            (Some(address), gateway) => {
                if let Some(gateway) = gateway
                    && !address.contains_addr(&gateway)
                {
                    return Err(ConfigError {
                        arg: alloc::format!("gw={gateway}"),
                        problem: "the gateway must be inside the ip= network",
                    });
                }
                Ok(IpConfig::Static { address, gateway })
            }
            (None, Some(gateway)) => Err(ConfigError {
                arg: alloc::format!("gw={gateway}"),
                problem: "a gateway needs an address: add ip=A.B.C.D/N (or drop gw= to use DHCP)",
            }),
            (None, None) => Ok(IpConfig::Dhcp),
        }
    }
}

/// `A.B.C.D/N` with `N` in 1..=32 and a unicast address.
fn parse_cidr(text: &str) -> Option<Ipv4Cidr> {
    let (address, prefix) = text.split_once('/')?;
    let address: Ipv4Address = address.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let usable = (1..=32).contains(&prefix) && !address.is_unspecified() && !address.is_multicast();
    usable.then(|| Ipv4Cidr::new(address, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_arguments_means_dhcp() {
        assert_eq!(IpConfig::from_args::<&str>(&[]), Ok(IpConfig::Dhcp));
        assert_eq!(IpConfig::from_args(&["--verbose", "x=1"]), Ok(IpConfig::Dhcp));
    }

    #[test]
    fn static_address_and_gateway() {
        let config = IpConfig::from_args(&["ip=10.0.2.15/24", "gw=10.0.2.2"]);
        assert_eq!(
            config,
            Ok(IpConfig::Static {
                address: Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 15), 24),
                gateway: Some(Ipv4Address::new(10, 0, 2, 2)),
            })
        );
        let config = IpConfig::from_args(&["ip=192.168.1.9/16"]);
        assert!(matches!(config, Ok(IpConfig::Static { gateway: None, .. })));
    }

    #[test]
    fn bad_arguments_are_named() {
        for args in [
            &["ip=10.0.2.15"][..],
            &["ip=10.0.2.15/33"],
            &["ip=10.0.2.15/0"],
            &["ip=10.0.2/24"],
            &["ip=0.0.0.0/8"],
            &["ip=224.0.0.1/4"],
            &["ip=10.0.2.15/24", "gw=10.0.2"],
            &["gw=10.0.2.2"],
            &["ip=10.0.2.15/24", "gw=10.0.3.2"],
        ] {
            let error = IpConfig::from_args(args).expect_err("must be refused");
            assert!(!error.problem.is_empty());
            assert!(args.iter().any(|a| error.to_string().contains(a)), "{error} names one of {args:?}");
        }
    }
}
