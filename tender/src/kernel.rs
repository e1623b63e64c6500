//! Checks that a kernel was built for this tender before any of it is loaded: an ELF for the host's
//! architecture carrying tender-abi's note with this ABI version.

use std::ops::Range;

use images::elf::{Elf, ElfError};
use tender_abi::{ABI_VERSION, ELF_NOTE_NAME, ELF_NOTE_TYPE_ABI};

/// `e_machine` values.
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

/// Why a kernel cannot run on this tender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error(
        "the kernel was built for QEMU ({found}), not for the tender; rebuild with `cargo xtask image build <app> --platform tender`"
    )]
    BuiltForQemu { found: &'static str },
    #[error("the kernel is not a usable ELF file: {0}")]
    Elf(#[from] ElfError),
    #[error("the kernel is for {found} (ELF machine {machine}), but this tender runs {host} guests")]
    WrongMachine { machine: u16, found: &'static str, host: &'static str },
    #[error("the kernel speaks tender ABI version {found}, this tender version {ABI_VERSION}: rebuild one to match")]
    WrongAbi { found: u32 },
    #[error("the kernel's tender ABI note has a {len}-byte descriptor; it must be 4 bytes")]
    BadNote { len: usize },
    #[error("the kernel has no loadable segment")]
    NoSegments,
    #[error("the kernel's entry point {entry:#x} is not inside any of its loadable segments")]
    EntryOutside { entry: u64 },
}

/// What the loader needs to know about a checked kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    pub entry: u64,
    /// The physical memory its loadable segments occupy.
    pub span: Range<u64>,
}

/// The architecture this tender runs guests for, as ELF names it.
pub const HOST_MACHINE: (u16, &str) =
    if cfg!(target_arch = "aarch64") { (EM_AARCH64, "aarch64") } else { (EM_X86_64, "x86_64") };

/// Checks `bytes` (see the module docs).
pub fn check(bytes: &[u8]) -> Result<KernelInfo, KernelError> {
    // QEMU's aarch64 kernels are raw arm64 Images: "ARM\x64" at offset 56.
    if bytes.get(56..60) == Some(b"ARM\x64") {
        return Err(KernelError::BuiltForQemu { found: "a raw arm64 Image" });
    }
    let elf = Elf::parse(bytes)?;
    let (host_machine, host) = HOST_MACHINE;
    if elf.machine != host_machine {
        let found = match elf.machine {
            EM_X86_64 => "x86_64",
            EM_AARCH64 => "aarch64",
            _ => "another architecture",
        };
        return Err(KernelError::WrongMachine { machine: elf.machine, found, host });
    }
    let notes = elf.notes()?;
    let abi = notes.iter().find(|n| n.name == ELF_NOTE_NAME.as_bytes() && n.kind == ELF_NOTE_TYPE_ABI);
    let Some(abi) = abi else {
        let pvh = notes.iter().any(|n| n.name == b"Xen" && n.kind == 18);
        let found = if pvh { "it has the PVH entry note and no tender ABI note" } else { "it has no tender ABI note" };
        return Err(KernelError::BuiltForQemu { found });
    };
    let version: [u8; 4] = abi.desc.try_into().map_err(|_| KernelError::BadNote { len: abi.desc.len() })?;
    let found = u32::from_le_bytes(version);
    if found != ABI_VERSION {
        return Err(KernelError::WrongAbi { found });
    }
    let span = elf.load_span().map_err(|_| KernelError::NoSegments)?;
    let entry = elf.entry;
    let loaded = |s: &&images::elf::Segment| entry >= s.virtual_address && entry - s.virtual_address < s.file_size;
    if !elf.load_segments().any(|s| loaded(&s)) {
        return Err(KernelError::EntryOutside { entry });
    }
    Ok(KernelInfo { entry, span })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF64 executable for `machine`: one PT_NOTE segment holding `notes` (name, type,
    /// descriptor) and one PT_LOAD of `code` at `load_address`, entered at its start.
    pub fn elf(machine: u16, load_address: u64, code: &[u8], notes: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut note_bytes = Vec::new();
        for (name, kind, desc) in notes {
            let name = [name.as_bytes(), b"\0"].concat();
            note_bytes.extend((name.len() as u32).to_le_bytes());
            note_bytes.extend((desc.len() as u32).to_le_bytes());
            note_bytes.extend(kind.to_le_bytes());
            note_bytes.extend(&name);
            note_bytes.resize(note_bytes.len().next_multiple_of(4), 0);
            note_bytes.extend(*desc);
            note_bytes.resize(note_bytes.len().next_multiple_of(4), 0);
        }
        let headers = 64 + 2 * 56;
        let note_offset = headers as u64;
        let code_offset = (headers + note_bytes.len()).next_multiple_of(16) as u64;
        let mut out = Vec::new();
        out.extend(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        out.extend(2u16.to_le_bytes()); // ET_EXEC
        out.extend(machine.to_le_bytes());
        out.extend(1u32.to_le_bytes());
        out.extend(load_address.to_le_bytes()); // entry
        out.extend(64u64.to_le_bytes()); // phoff
        out.extend(0u64.to_le_bytes()); // shoff
        out.extend(0u32.to_le_bytes());
        out.extend([64u16, 56, 2, 64, 0, 0].iter().flat_map(|v| v.to_le_bytes()));
        let phdr = |kind: u32, offset: u64, addr: u64, size: u64| {
            let mut p = Vec::new();
            p.extend(kind.to_le_bytes());
            p.extend(7u32.to_le_bytes());
            p.extend(offset.to_le_bytes());
            p.extend(addr.to_le_bytes());
            p.extend(addr.to_le_bytes());
            p.extend(size.to_le_bytes());
            p.extend(size.to_le_bytes());
            p.extend(4096u64.to_le_bytes());
            p
        };
        out.extend(phdr(4, note_offset, 0, note_bytes.len() as u64));
        out.extend(phdr(1, code_offset, load_address, code.len() as u64));
        out.extend(&note_bytes);
        out.resize(code_offset as usize, 0);
        out.extend(code);
        out
    }

    fn abi_note() -> (&'static str, u32, &'static [u8]) {
        const VERSION: [u8; 4] = ABI_VERSION.to_le_bytes();
        (ELF_NOTE_NAME, ELF_NOTE_TYPE_ABI, &VERSION)
    }

    #[test]
    fn a_kernel_with_the_note_is_accepted() {
        let bytes = elf(HOST_MACHINE.0, 0x10_0000, &[0xf4; 10], &[abi_note()]);
        assert_eq!(check(&bytes), Ok(KernelInfo { entry: 0x10_0000, span: 0x10_0000..0x10_000a }));
    }

    #[test]
    fn qemu_kernels_are_refused_with_the_rebuild_command() {
        let pvh = elf(HOST_MACHINE.0, 0x10_0000, &[0xf4], &[("Xen", 18, &[0, 0, 0x10, 0])]);
        let message = check(&pvh).expect_err("no tender note").to_string();
        assert!(message.contains("built for QEMU") && message.contains("--platform tender"), "{message}");
        let mut image = vec![0u8; 128];
        image[56..60].copy_from_slice(b"ARM\x64");
        assert!(matches!(check(&image), Err(KernelError::BuiltForQemu { .. })));
    }

    #[test]
    fn other_versions_machines_and_garbage_are_refused() {
        let old = elf(HOST_MACHINE.0, 0x10_0000, &[0xf4], &[(ELF_NOTE_NAME, ELF_NOTE_TYPE_ABI, &[9, 0, 0, 0])]);
        assert_eq!(check(&old), Err(KernelError::WrongAbi { found: 9 }));
        let short = elf(HOST_MACHINE.0, 0x10_0000, &[0xf4], &[(ELF_NOTE_NAME, ELF_NOTE_TYPE_ABI, &[1])]);
        assert_eq!(check(&short), Err(KernelError::BadNote { len: 1 }));
        let other = if HOST_MACHINE.0 == EM_X86_64 { EM_AARCH64 } else { EM_X86_64 };
        assert!(matches!(check(&elf(other, 0x10_0000, &[0], &[abi_note()])), Err(KernelError::WrongMachine { .. })));
        assert!(matches!(check(b"garbage"), Err(KernelError::Elf(_))));
        let mut stray = elf(HOST_MACHINE.0, 0x10_0000, &[0xf4; 4], &[abi_note()]);
        stray[24..32].copy_from_slice(&0x20_0000u64.to_le_bytes()); // e_entry
        assert_eq!(check(&stray), Err(KernelError::EntryOutside { entry: 0x20_0000 }));
    }
}
