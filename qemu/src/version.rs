//! Which QEMU is installed, and what the tests that need a newer one do without it.
//!
//! The Raspberry Pi 4 machine (`raspi4b`) first shipped in QEMU 9; Debian bookworm has 7.2, and its
//! `bookworm-backports` suite has 10, which is what `cargo xtask test` installs and CI runs. On an
//! older QEMU the Pi 4 tests print why they are skipped; with `MAST_REQUIRE_QEMU10=1` (set by CI)
//! they fail instead, so CI can never pass by skipping them.

use std::process::Command;

use images::Arch;

use crate::binary::qemu_binary;

/// The QEMU release CI runs and `cargo xtask test` installs.
pub const WANTED_MAJOR: u32 = 10;

/// A QEMU release number, e.g. 10.0.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// Reads the version from `qemu-system-* --version`'s first line ("QEMU emulator version 10.0.2
/// (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)").
pub fn parse(text: &str) -> Option<Version> {
    let rest = text.lines().next()?.split_once("version ")?.1;
    let number = rest.split_whitespace().next()?;
    let mut parts = number.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let micro = parts.next().flatten().unwrap_or(0);
    Some(Version { major, minor, micro })
}

/// The installed QEMU's version for `arch`; the error says why it is unknown.
pub fn installed(arch: Arch) -> Result<Version, String> {
    let binary = qemu_binary(arch).map_err(|e| e.to_string())?;
    let output = Command::new(&binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("running {} --version: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse(&text).ok_or_else(|| format!("{} --version printed no version: {text:?}", binary.display()))
}

/// Whether `text` (from `qemu-system-aarch64 -machine help`) lists `machine`.
fn lists_machine(text: &str, machine: &str) -> bool {
    text.lines().any(|line| line.split_whitespace().next() == Some(machine))
}

/// Why QEMU cannot boot a Raspberry Pi 4 (`raspi4b`) here, or `None` if it can.
pub fn raspi4b_unavailable_reason() -> Option<String> {
    let binary = match qemu_binary(Arch::Aarch64) {
        Ok(binary) => binary,
        Err(missing) => return Some(missing.to_string()),
    };
    let version = installed(Arch::Aarch64).map_or_else(|e| format!("unknown ({e})"), |v| v.to_string());
    match Command::new(&binary).args(["-machine", "help"]).output() {
        Ok(output) if lists_machine(&String::from_utf8_lossy(&output.stdout), "raspi4b") => None,
        Ok(_) => Some(format!(
            "QEMU {version} has no `raspi4b` machine (QEMU 9 and later have it; `cargo xtask test` installs QEMU \
             {WANTED_MAJOR} from bookworm-backports on Debian bookworm, see docs/testing.md)"
        )),
        Err(e) => Some(format!("running {} -machine help: {e}", binary.display())),
    }
}

/// Whether skipping a test for want of QEMU 10 is forbidden: `MAST_REQUIRE_QEMU10=1`.
pub fn required() -> bool {
    std::env::var("MAST_REQUIRE_QEMU10").is_ok_and(|v| v == "1")
}

/// For a test that boots `raspi4b`: `true` if it may run. Otherwise prints why the test is skipped
/// and returns `false`, or panics when `MAST_REQUIRE_QEMU10=1` says skipping is not acceptable.
pub fn raspi4b_available_for(test: &str) -> bool {
    match raspi4b_unavailable_reason() {
        None => true,
        Some(reason) if required() => {
            panic!("{test} cannot run here and MAST_REQUIRE_QEMU10=1 forbids skipping it: {reason}")
        }
        Some(reason) => {
            eprintln!("skipped {test}: {reason}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_qemus_banner() {
        let v10 = parse("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright");
        assert_eq!(v10, Some(Version { major: 10, minor: 0, micro: 2 }));
        let v72 = parse("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n");
        assert_eq!(v72.map(|v| v.to_string()).as_deref(), Some("7.2.19"));
        assert!(v72 < v10);
        assert_eq!(parse("QEMU emulator version 9.1"), Some(Version { major: 9, minor: 1, micro: 0 }));
        assert_eq!(parse("something else"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn machines_are_found_by_their_first_word() {
        let help = "Supported machines are:\nraspi3b              Raspberry Pi 3B (revision 1.2)\n\
                    raspi4b              Raspberry Pi 4B (revision 1.5)\n";
        assert!(lists_machine(help, "raspi4b"));
        assert!(!lists_machine("raspi3b  Raspberry Pi 3B\nother raspi4b mentioned", "raspi4b"));
    }
}
