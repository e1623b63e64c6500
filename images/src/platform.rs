use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// The machine an appliance is built to run on. The appliance's source is the same for every
/// platform; the runtime's `platform-*` feature picks the boot protocol, console, clock and devices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// QEMU: `virt` (and the Pi boards) on aarch64, `microvm` through PVH on x86_64.
    #[default]
    Qemu,
    /// `tender`, Mast's per-appliance KVM monitor: an ELF carrying the tender ABI note, entered in
    /// 64-bit mode with the tender's boot information (see the `tender-abi` crate).
    Tender,
}

impl Platform {
    pub const ALL: [Platform; 2] = [Platform::Qemu, Platform::Tender];

    /// The name used on the command line and in paths.
    pub const fn name(self) -> &'static str {
        match self {
            Platform::Qemu => "qemu",
            Platform::Tender => "tender",
        }
    }

    /// The runtime feature that selects this platform, if it is not the default.
    pub const fn runtime_feature(self) -> Option<&'static str> {
        match self {
            Platform::Qemu => None,
            Platform::Tender => Some("runtime/platform-tender"),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A platform name that is not one of [`Platform::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown platform {0:?}: expected qemu or tender")]
pub struct ParsePlatformError(pub String);

impl FromStr for Platform {
    type Err = ParsePlatformError;

    fn from_str(s: &str) -> Result<Platform, ParsePlatformError> {
        Platform::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| ParsePlatformError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for platform in Platform::ALL {
            assert_eq!(platform.name().parse::<Platform>(), Ok(platform));
        }
        assert_eq!("firecracker".parse::<Platform>(), Err(ParsePlatformError("firecracker".into())));
        assert_eq!(Platform::default(), Platform::Qemu);
    }
}
