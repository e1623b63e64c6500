use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// A CPU architecture an appliance can be built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// 64-bit Arm: QEMU `virt` and Arm boards; booted as a raw arm64 Image.
    Aarch64,
    /// x86_64: QEMU `microvm` under KVM; booted as an ELF through PVH.
    X86_64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Aarch64, Arch::X86_64];

    /// The Rust target the appliance is compiled for.
    pub const fn target_triple(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64-unknown-none",
            Arch::X86_64 => "x86_64-unknown-none",
        }
    }

    /// The name used on the command line and in paths.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::X86_64 => "x86_64",
        }
    }

    /// The ELF `e_machine` value of this architecture's binaries.
    pub const fn elf_machine(self) -> u16 {
        match self {
            Arch::Aarch64 => 183, // EM_AARCH64
            Arch::X86_64 => 62,   // EM_X86_64
        }
    }

    /// The extension of the bootable file: a raw Image on aarch64, an ELF on x86_64.
    pub const fn image_extension(self) -> &'static str {
        match self {
            Arch::Aarch64 => "img",
            Arch::X86_64 => "elf",
        }
    }

    /// The architecture of the machine running this program, if appliances exist for it.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "aarch64" => Some(Arch::Aarch64),
            "x86_64" => Some(Arch::X86_64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An architecture name that is not one of [`Arch::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown architecture {0:?}: expected aarch64 or x86_64")]
pub struct ParseArchError(String);

impl FromStr for Arch {
    type Err = ParseArchError;

    fn from_str(s: &str) -> Result<Arch, ParseArchError> {
        match s {
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            "x86_64" | "x86-64" | "amd64" => Ok(Arch::X86_64),
            other => Err(ParseArchError(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for arch in Arch::ALL {
            assert_eq!(arch.name().parse::<Arch>(), Ok(arch));
        }
    }

    #[test]
    fn common_aliases_parse() {
        assert_eq!("arm64".parse::<Arch>(), Ok(Arch::Aarch64));
        assert_eq!("amd64".parse::<Arch>(), Ok(Arch::X86_64));
    }

    #[test]
    fn unknown_names_say_what_is_expected() {
        let err = "riscv64".parse::<Arch>().expect_err("riscv64 is not supported");
        assert_eq!(err.to_string(), r#"unknown architecture "riscv64": expected aarch64 or x86_64"#);
    }
}
