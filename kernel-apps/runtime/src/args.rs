//! Splits the kernel command line into arguments.
//!
//! The command line arrives from `-append` (QEMU), `/chosen/bootargs` (device tree) or the PVH start
//! info. Arguments are separated by ASCII whitespace; a double-quoted span keeps its spaces, and the
//! quotes themselves are removed. An unterminated quote runs to the end of the line rather than
//! failing: a misquoted boot line should still boot.
//!
//! Some arguments belong to the runtime, not the appliance: loaders describe devices on the command
//! line (QEMU `microvm` and Firecracker append `virtio_mmio.device=<size>@<base>:<irq>` for each
//! virtio-mmio transport). [`appliance_args`] leaves those out, so an appliance sees the same
//! arguments whichever loader booted it; [`virtio_mmio_device`] reads them.

use alloc::{string::String, vec::Vec};

/// Splits `cmdline` into arguments (see the module docs for the rules).
pub fn split(cmdline: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut in_arg = false;
    let mut quoted = false;
    for ch in cmdline.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                in_arg = true;
            }
            c if c.is_ascii_whitespace() && !quoted => {
                if in_arg {
                    args.push(core::mem::take(&mut current));
                    in_arg = false;
                }
            }
            c => {
                current.push(c);
                in_arg = true;
            }
        }
    }
    if in_arg {
        args.push(current);
    }
    args
}

/// The prefix of the arguments that describe virtio-mmio transports (Linux's syntax).
const VIRTIO_MMIO_DEVICE: &str = "virtio_mmio.device=";

/// Whether `arg` is for the runtime rather than the appliance.
pub fn is_runtime_owned(arg: &str) -> bool {
    arg.starts_with(VIRTIO_MMIO_DEVICE)
}

/// The appliance's arguments: [`split`], without the runtime's own ([`is_runtime_owned`]).
pub fn appliance_args(cmdline: &str) -> Vec<String> {
    let mut args = split(cmdline);
    args.retain(|arg| !is_runtime_owned(arg));
    args
}

/// A virtio-mmio transport described on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioMmioDevice {
    /// The physical address of its registers.
    pub base: u64,
    /// The size of its register window in bytes.
    pub size: u64,
    /// Its interrupt line, in the platform's numbering (a GSI on x86).
    pub irq: u32,
}

/// Reads `virtio_mmio.device=<size>@<base>:<irq>[:<id>]`, Linux's syntax: `size` in bytes with an
/// optional `K`, `M` or `G` suffix, numbers in decimal or `0x` hexadecimal. `None` for any other
/// argument, and for one that does not parse (the runtime then ignores it).
pub fn virtio_mmio_device(arg: &str) -> Option<VirtioMmioDevice> {
    let spec = arg.strip_prefix(VIRTIO_MMIO_DEVICE)?;
    let (size, rest) = spec.split_once('@')?;
    let (base, rest) = rest.split_once(':')?;
    // A platform device id may follow the interrupt; it is not needed.
    let irq = rest.split_once(':').map_or(rest, |(irq, _id)| irq);
    let (digits, scale) = match size.as_bytes().last()? {
        b'K' | b'k' => (&size[..size.len() - 1], 1 << 10),
        b'M' | b'm' => (&size[..size.len() - 1], 1 << 20),
        b'G' | b'g' => (&size[..size.len() - 1], 1 << 30),
        _ => (size, 1),
    };
    let size = number(digits)?.checked_mul(scale)?;
    let irq = u32::try_from(number(irq)?).ok()?;
    (size > 0).then_some(VirtioMmioDevice { base: number(base)?, size, irq })
}

/// A decimal or `0x`-prefixed hexadecimal number.
fn number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::{VirtioMmioDevice, appliance_args, split, virtio_mmio_device};

    #[test]
    fn splits_on_runs_of_whitespace() {
        assert_eq!(split("  a b\t\tc\n"), ["a", "b", "c"]);
    }

    #[test]
    fn empty_line_has_no_arguments() {
        assert!(split("").is_empty());
        assert!(split("   ").is_empty());
    }

    #[test]
    fn quotes_keep_spaces_and_are_removed() {
        assert_eq!(split(r#"greet "hello world" x"#), ["greet", "hello world", "x"]);
        assert_eq!(split(r#"a"b c"d"#), ["ab cd"]);
    }

    #[test]
    fn empty_quotes_are_an_empty_argument() {
        assert_eq!(split(r#"a "" b"#), ["a", "", "b"]);
    }

    #[test]
    fn unterminated_quote_runs_to_end() {
        assert_eq!(split(r#"a "b c"#), ["a", "b c"]);
    }

    #[test]
    fn non_ascii_is_kept() {
        assert_eq!(split("héllo wörld"), ["héllo", "wörld"]);
    }

    #[test]
    fn runtime_arguments_are_not_the_appliances() {
        let line = "a virtio_mmio.device=512@0xfeb00e00:12 b";
        assert_eq!(appliance_args(line), ["a", "b"]);
        assert_eq!(split(line).len(), 3);
    }

    #[test]
    fn reads_microvm_and_firecracker_device_arguments() {
        assert_eq!(
            virtio_mmio_device("virtio_mmio.device=512@0xfeb00e00:12"),
            Some(VirtioMmioDevice { base: 0xfeb0_0e00, size: 512, irq: 12 })
        );
        assert_eq!(
            virtio_mmio_device("virtio_mmio.device=4K@0xd0000000:5:3"),
            Some(VirtioMmioDevice { base: 0xd000_0000, size: 4096, irq: 5 })
        );
    }

    #[test]
    fn malformed_device_arguments_are_ignored() {
        for arg in [
            "virtio_mmio.device=",
            "virtio_mmio.device=512",
            "virtio_mmio.device=512@0xfeb00e00",
            "virtio_mmio.device=0@0x1000:5",
            "virtio_mmio.device=x@0x1000:5",
            "virtio_mmio.device=512@0xzz:5",
            "virtio_mmio.device=512@0x1000:99999999999",
            "virtio_mmio.device=99999999999999G@0x1000:5",
            "ip=10.0.2.15",
        ] {
            assert_eq!(virtio_mmio_device(arg), None, "{arg}");
        }
    }
}
