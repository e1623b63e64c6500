//! Finding the QEMU binary for an architecture.

use std::path::{Path, PathBuf};

use images::Arch;

/// The QEMU system emulator for `arch` is not installed.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{binary} was not found on PATH. Install it with:\n    {}\n(on Debian bookworm that is QEMU 7.2; as root, `cargo \
     xtask test` installs QEMU 10 from bookworm-backports instead, which also boots the Raspberry Pi 4: see \
     docs/testing.md)",
    install_hint(*.arch)
)]
pub struct MissingQemu {
    pub arch: Arch,
    pub binary: &'static str,
}

/// The program name of QEMU's system emulator for `arch`.
pub const fn binary_name(arch: Arch) -> &'static str {
    match arch {
        Arch::Aarch64 => "qemu-system-aarch64",
        Arch::X86_64 => "qemu-system-x86_64",
    }
}

/// The Debian package that provides QEMU for `arch`.
pub const fn debian_package(arch: Arch) -> &'static str {
    match arch {
        Arch::Aarch64 => "qemu-system-arm",
        Arch::X86_64 => "qemu-system-x86",
    }
}

/// The exact command that installs QEMU for `arch` on Debian or Ubuntu.
pub fn install_hint(arch: Arch) -> String {
    format!("sudo apt-get install -y {}", debian_package(arch))
}

/// The path of QEMU's system emulator for `arch`, from `PATH`.
pub fn qemu_binary(arch: Arch) -> Result<PathBuf, MissingQemu> {
    let binary = binary_name(arch);
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| is_executable(candidate))
        .ok_or(MissingQemu { arch, binary })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_qemu_message_gives_the_install_command() {
        let message = MissingQemu { arch: Arch::Aarch64, binary: "qemu-system-aarch64" }.to_string();
        assert!(message.contains("sudo apt-get install -y qemu-system-arm"), "{message}");
        assert!(message.contains("bookworm-backports"), "{message}");
        assert!(install_hint(Arch::X86_64).ends_with("qemu-system-x86"));
    }
}
