//! The network device: an existing host tap device, attached by name.
//!
//! The tender never creates interfaces or changes their configuration (that is the host's job, and
//! would need privileges the tender should not have); it only attaches to a tap that exists. The
//! file descriptor is non-blocking: the Poll hypercall reads until `EAGAIN` and waits with `ppoll`.

use std::{
    fs::{File, OpenOptions},
    hash::{DefaultHasher, Hash, Hasher},
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
};

use anyhow::{Context, Result, bail};

/// Interface names are at most 15 bytes plus a NUL (`IFNAMSIZ`).
const IFNAMSIZ: usize = 16;
/// `struct ifreq` is 40 bytes on 64-bit Linux: the name, then a union whose first member for
/// `TUNSETIFF` is the `short` flags.
const IFREQ_LEN: usize = 40;

/// An attached tap device.
#[derive(Debug)]
pub struct Tap {
    pub file: File,
    pub name: String,
}

impl Tap {
    /// Attaches to the existing tap device `name` (Ethernet frames, no packet-info header).
    pub fn open(name: &str) -> Result<Tap> {
        let mut request = ifreq(name)?;
        // Looked up in the caller's network namespace (unlike /sys/class/net, which shows the one
        // /sys was mounted in): a tender started inside a namespace finds the taps there.
        let c_name = std::ffi::CString::new(name).context("interface name")?;
        // SAFETY: `c_name` is a NUL-terminated string that lives across the call; the call only reads it.
        if unsafe { libc::if_nametoindex(c_name.as_ptr()) } == 0 {
            bail!(
                "--net {name}: no network interface named {name:?}; create it first, e.g. `ip tuntap add dev {name} mode tap`"
            );
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .context("opening /dev/net/tun (is the tun module loaded, and may this user open it?)")?;
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `request` is a 40-byte buffer laid
        // out as one (name, then flags) that lives across the call, and the fd is the one just opened.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF as _, request.as_mut_ptr()) };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            let hint = match error.raw_os_error() {
                Some(libc::EPERM) => "this user may not attach it (set its owner with `ip tuntap add ... user USER`)",
                Some(libc::EBUSY) => "another process holds it, or it is not a single-queue tap without packet info",
                // TUNSETIFF on an existing interface that is not a tap (or not one without packet info).
                Some(libc::EINVAL) => "it is a network interface but not a tap device (without packet info)",
                _ => "",
            };
            bail!("--net {name}: attaching tap {name:?} failed: {error} {hint}");
        }
        Ok(Tap { file, name: name.to_owned() })
    }
}

/// The `TUNSETIFF` request for tap `name` with `IFF_TAP | IFF_NO_PI`.
fn ifreq(name: &str) -> Result<[u8; IFREQ_LEN]> {
    if name.is_empty() || name.len() >= IFNAMSIZ || name.contains(['/', '\0']) || name.contains(char::is_whitespace) {
        bail!("--net {name:?}: not an interface name (1 to {} bytes, no '/', NUL or whitespace)", IFNAMSIZ - 1);
    }
    let mut request = [0u8; IFREQ_LEN];
    request[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI) as i16;
    request[IFNAMSIZ..IFNAMSIZ + 2].copy_from_slice(&flags.to_ne_bytes());
    Ok(request)
}

/// A MAC address for an interface on tap `name`: locally administered, unicast, and the same every
/// time for the same tap (so a DHCP server gives the appliance the same lease after a restart).
pub fn default_mac(name: &str) -> [u8; 6] {
    let mut hasher = DefaultHasher::new();
    name.hash(&mut hasher);
    let hash = hasher.finish().to_le_bytes();
    [0x02, hash[0], hash[1], hash[2], hash[3], hash[4]]
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = text.split(':').collect();
    let bad = || format!("{text:?} is not a MAC address like 02:00:00:00:00:01");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 != 0 {
        return Err(format!("{text} is a multicast address; an interface needs a unicast one"));
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn macs_parse_and_defaults_are_local_unicast() {
        assert_eq!(parse_mac("02:00:0a:FF:00:01"), Ok([2, 0, 10, 255, 0, 1]));
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00:1").is_err());
        assert!(parse_mac("zz:00:00:00:00:01").is_err());
        assert!(parse_mac("01:00:00:00:00:01").expect_err("multicast").contains("multicast"));
        let mac = default_mac("tap0");
        assert_eq!(mac[0] & 0b11, 0b10, "locally administered unicast");
        assert_eq!(mac, default_mac("tap0"));
    }

    #[test]
    fn interface_names_are_checked_before_any_syscall() {
        assert!(ifreq("tap0").is_ok());
        for bad in ["", "0123456789abcdef", "a/b", "a b"] {
            assert!(ifreq(bad).is_err(), "{bad:?}");
        }
        let request = ifreq("tap0").expect("valid");
        assert_eq!(&request[..5], b"tap0\0");
        assert_eq!(i16::from_ne_bytes([request[16], request[17]]), (libc::IFF_TAP | libc::IFF_NO_PI) as i16);
    }

    #[test]
    fn a_missing_tap_is_named() {
        let error = Tap::open("mastnone0").expect_err("no such interface").to_string();
        assert!(error.contains("no network interface named") && error.contains("ip tuntap add"), "{error}");
    }

    #[test]
    fn an_interface_that_is_not_a_tap_is_refused() {
        if !Path::new("/dev/net/tun").exists() {
            qemu::kvm::skip("an_interface_that_is_not_a_tap_is_refused", "no /dev/net/tun");
            return;
        }
        let error = Tap::open("lo").expect_err("lo is no tap").to_string();
        assert!(error.contains("not a tap device"), "{error}");
    }
}
