//! Validates a bootable kernel file before anything boots it.
//!
//! A garbage, truncated or wrong-architecture file must be refused with a reason, not handed to
//! QEMU (which would hang or crash in ways that say nothing). The checks:
//!
//! - **aarch64** (raw arm64 Image): the arm64 header (magic `ARM\x64` at byte 56, a non-zero
//!   `image_size` at least as large as the file) and the Mast header that follows it at byte 64
//!   (magic `MAST`, format version, and the exact file size, which is what catches truncation).
//! - **x86_64** (ELF booted through PVH): a 64-bit little-endian x86_64 ELF whose segments all lie
//!   inside the file, with a `Xen` note of type 18 (`XEN_ELFNOTE_PHYS32_ENTRY`) whose entry point
//!   lies inside a loadable segment.
//! - **tender** (either architecture, [`validate_for`] with [`Platform::Tender`]): an ELF of the
//!   architecture whose segments lie inside the file, with the tender ABI note (`Mast`, type
//!   `tender_abi::ELF_NOTE_TYPE_ABI`) naming `tender_abi::ABI_VERSION`, and an entry point inside
//!   a loadable segment. A QEMU kernel is refused for the tender and a tender kernel for QEMU.

use std::{fmt, fs, io, path::Path};

use crate::{
    Arch, Platform,
    elf::{self, Elf, ElfError},
};

/// Where the arm64 Image header keeps its magic, and the magic itself.
pub const ARM64_MAGIC_OFFSET: usize = 56;
pub const ARM64_MAGIC: [u8; 4] = *b"ARM\x64";
/// The Mast header that follows the 64-byte arm64 header: magic, version, file size.
pub const MAST_HEADER_OFFSET: usize = 64;
pub const MAST_MAGIC: [u8; 4] = *b"MAST";
pub const MAST_HEADER_VERSION: u32 = 1;
const MAST_HEADER_LEN: usize = 16;

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit entry point of a PVH kernel.
pub const PVH_NOTE_TYPE: u32 = 18;

/// How a kernel file is booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// A raw arm64 Image, loaded at a 2 MiB-aligned base plus `text_offset`.
    Arm64Image,
    /// An ELF entered in 32-bit protected mode at its PVH entry point.
    PvhElf,
    /// An ELF for the tender, entered in 64-bit mode at its ELF entry point.
    TenderElf,
}

impl fmt::Display for KernelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KernelFormat::Arm64Image => "arm64 Image",
            KernelFormat::PvhElf => "PVH ELF",
            KernelFormat::TenderElf => "tender ELF",
        })
    }
}

/// What a valid kernel file contains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    pub arch: Arch,
    pub format: KernelFormat,
    /// Bytes in the file.
    pub file_size: u64,
    /// Bytes of memory the kernel occupies once loaded, including zero-initialised data.
    pub memory_size: u64,
    /// The entry point: an offset into the image (arm64) or a physical address (PVH).
    pub entry: u64,
    /// arm64 Images: the header's `text_offset`, the image's offset from a 2 MiB-aligned load base.
    /// 0 for QEMU `virt` images, 0x80000 for Raspberry Pi images (see `boot_contract::board`); 0 for PVH.
    pub text_offset: u64,
}

/// Why a file is not a bootable kernel for the architecture asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("empty file")]
    Empty,
    #[error("not an arm64 Image: {0}")]
    NotArm64Image(&'static str),
    #[error(
        "not a Mast image: no Mast header at byte {MAST_HEADER_OFFSET} (was it built with `cargo xtask image build`?)"
    )]
    NoMastHeader,
    #[error("unsupported Mast header version {found} (this tool reads version {MAST_HEADER_VERSION})")]
    UnsupportedMastVersion { found: u32 },
    #[error("truncated: the image header says {expected} bytes but the file has {actual}")]
    Truncated { expected: u64, actual: u64 },
    #[error("the file has {actual} bytes, more than the {expected} its header declares")]
    TrailingBytes { expected: u64, actual: u64 },
    #[error("not a valid ELF kernel: {0}")]
    Elf(#[from] ElfError),
    #[error("built for {found}, not {expected}")]
    WrongArch { expected: Arch, found: String },
    #[error("no PVH entry point: the ELF has no `Xen` note of type {PVH_NOTE_TYPE}, so QEMU cannot boot it directly")]
    NoPvhEntry,
    #[error("the PVH entry point {entry:#x} is outside every loadable segment")]
    EntryOutsideImage { entry: u64 },
    #[error(
        "no tender ABI note (an ELF note \"Mast\" of type {:#x}): this kernel was not built for the tender \
         (build it with --platform tender)",
        tender_abi::ELF_NOTE_TYPE_ABI
    )]
    NoTenderNote,
    #[error("built for tender ABI version {found}, but this tool speaks version {}", tender_abi::ABI_VERSION)]
    WrongTenderAbi { found: u32 },
    #[error("this is a tender kernel (it carries the tender ABI note); QEMU cannot boot it")]
    TenderKernel,
}

/// Why a kernel file could not be validated.
#[derive(Debug, thiserror::Error)]
pub enum ValidateFileError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} is not a bootable {arch} kernel: {source}")]
    Invalid { path: String, arch: Arch, source: KernelError },
}

/// Reads and validates a kernel file for `arch`.
pub fn validate_file(arch: Arch, path: &Path) -> Result<KernelInfo, ValidateFileError> {
    let bytes =
        fs::read(path).map_err(|source| ValidateFileError::Read { path: path.display().to_string(), source })?;
    validate(arch, &bytes).map_err(|source| ValidateFileError::Invalid {
        path: path.display().to_string(),
        arch,
        source,
    })
}

/// Validates `bytes` as a bootable kernel for `arch`.
pub fn validate(arch: Arch, bytes: &[u8]) -> Result<KernelInfo, KernelError> {
    if bytes.is_empty() {
        return Err(KernelError::Empty);
    }
    match arch {
        Arch::Aarch64 => validate_arm64_image(bytes),
        Arch::X86_64 => validate_pvh_elf(bytes),
    }
}

/// Validates `bytes` as a bootable kernel for `arch` on `platform`.
pub fn validate_for(arch: Arch, platform: Platform, bytes: &[u8]) -> Result<KernelInfo, KernelError> {
    match platform {
        Platform::Qemu => {
            if platform_of(bytes) == Some(Platform::Tender) {
                return Err(KernelError::TenderKernel);
            }
            validate(arch, bytes)
        }
        Platform::Tender => {
            if bytes.is_empty() {
                return Err(KernelError::Empty);
            }
            validate_tender_elf(arch, bytes)
        }
    }
}

/// The platform a kernel file was built for: the tender if it is an ELF with the tender ABI note
/// (of any version), QEMU if it is another kernel of a known architecture; `None` for garbage.
pub fn platform_of(bytes: &[u8]) -> Option<Platform> {
    if let Ok(elf) = Elf::parse(bytes)
        && elf.notes().is_ok_and(|notes| notes.iter().any(is_tender_note))
    {
        return Some(Platform::Tender);
    }
    detect_arch(bytes).map(|_| Platform::Qemu)
}

fn is_tender_note(note: &elf::Note<'_>) -> bool {
    note.name == tender_abi::ELF_NOTE_NAME.as_bytes() && note.kind == tender_abi::ELF_NOTE_TYPE_ABI
}

fn validate_tender_elf(arch: Arch, bytes: &[u8]) -> Result<KernelInfo, KernelError> {
    let elf = Elf::parse(bytes)?;
    if elf.machine != arch.elf_machine() {
        let found = match Arch::ALL.into_iter().find(|a| a.elf_machine() == elf.machine) {
            Some(arch) => arch.to_string(),
            None => format!("ELF machine {}", elf.machine),
        };
        return Err(KernelError::WrongArch { expected: arch, found });
    }
    let span = elf.load_span()?;
    let notes = elf.notes()?;
    let note = notes.iter().find(|note| is_tender_note(note)).ok_or(KernelError::NoTenderNote)?;
    let version = (note.desc.len() == 4).then(|| elf::le_u32(note.desc, 0)).ok_or(KernelError::NoTenderNote)?;
    if version != tender_abi::ABI_VERSION {
        return Err(KernelError::WrongTenderAbi { found: version });
    }
    let entry = elf.entry;
    let inside = elf
        .load_segments()
        .any(|s| (s.physical_address..s.physical_address.saturating_add(s.file_size)).contains(&entry));
    if !inside {
        return Err(KernelError::EntryOutsideImage { entry });
    }
    Ok(KernelInfo {
        arch,
        format: KernelFormat::TenderElf,
        file_size: bytes.len() as u64,
        memory_size: span.end - span.start,
        entry,
        text_offset: 0,
    })
}

/// Guesses the architecture of a kernel file from its first bytes.
pub fn detect_arch(bytes: &[u8]) -> Option<Arch> {
    if bytes.get(ARM64_MAGIC_OFFSET..ARM64_MAGIC_OFFSET + 4) == Some(&ARM64_MAGIC[..]) {
        return Some(Arch::Aarch64);
    }
    let elf = Elf::parse(bytes).ok()?;
    Arch::ALL.into_iter().find(|arch| arch.elf_machine() == elf.machine)
}

fn validate_arm64_image(bytes: &[u8]) -> Result<KernelInfo, KernelError> {
    if bytes.starts_with(b"\x7fELF") {
        return Err(KernelError::NotArm64Image("this is an ELF file; aarch64 appliances boot as raw Images"));
    }
    if bytes.len() < MAST_HEADER_OFFSET + MAST_HEADER_LEN {
        return Err(KernelError::NotArm64Image("shorter than the 64-byte Image header"));
    }
    if bytes[ARM64_MAGIC_OFFSET..ARM64_MAGIC_OFFSET + 4] != ARM64_MAGIC {
        return Err(KernelError::NotArm64Image("no \"ARM\\x64\" magic at byte 56"));
    }
    let image_size = elf::le_u64(bytes, 16);
    if image_size == 0 {
        return Err(KernelError::NotArm64Image("image_size is 0, so loaders cannot place it"));
    }
    if bytes[MAST_HEADER_OFFSET..MAST_HEADER_OFFSET + 4] != MAST_MAGIC {
        return Err(KernelError::NoMastHeader);
    }
    let version = elf::le_u32(bytes, MAST_HEADER_OFFSET + 4);
    if version != MAST_HEADER_VERSION {
        return Err(KernelError::UnsupportedMastVersion { found: version });
    }
    let expected = elf::le_u64(bytes, MAST_HEADER_OFFSET + 8);
    let actual = bytes.len() as u64;
    if actual < expected {
        return Err(KernelError::Truncated { expected, actual });
    }
    if actual > expected {
        return Err(KernelError::TrailingBytes { expected, actual });
    }
    if image_size < actual {
        return Err(KernelError::NotArm64Image("image_size is smaller than the file"));
    }
    Ok(KernelInfo {
        arch: Arch::Aarch64,
        format: KernelFormat::Arm64Image,
        file_size: actual,
        memory_size: image_size,
        entry: 0,
        text_offset: elf::le_u64(bytes, 8),
    })
}

fn validate_pvh_elf(bytes: &[u8]) -> Result<KernelInfo, KernelError> {
    if bytes.get(ARM64_MAGIC_OFFSET..ARM64_MAGIC_OFFSET + 4) == Some(&ARM64_MAGIC[..]) {
        return Err(KernelError::WrongArch { expected: Arch::X86_64, found: "aarch64 (an arm64 Image)".into() });
    }
    let elf = Elf::parse(bytes)?;
    if elf.machine != Arch::X86_64.elf_machine() {
        let found = match Arch::ALL.into_iter().find(|a| a.elf_machine() == elf.machine) {
            Some(arch) => arch.to_string(),
            None => format!("ELF machine {}", elf.machine),
        };
        return Err(KernelError::WrongArch { expected: Arch::X86_64, found });
    }
    let span = elf.load_span()?;
    let entry = elf
        .notes()?
        .into_iter()
        .find(|note| note.name == b"Xen" && note.kind == PVH_NOTE_TYPE)
        .and_then(|note| match note.desc.len() {
            4 => Some(u64::from(elf::le_u32(note.desc, 0))),
            8 => Some(elf::le_u64(note.desc, 0)),
            _ => None,
        })
        .ok_or(KernelError::NoPvhEntry)?;
    let inside = elf
        .load_segments()
        .any(|s| (s.physical_address..s.physical_address.saturating_add(s.file_size)).contains(&entry));
    if !inside {
        return Err(KernelError::EntryOutsideImage { entry });
    }
    Ok(KernelInfo {
        arch: Arch::X86_64,
        format: KernelFormat::PvhElf,
        file_size: bytes.len() as u64,
        memory_size: span.end - span.start,
        entry,
        text_offset: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::tests::build_elf;

    fn arm64_image(len: usize) -> Vec<u8> {
        let mut image = vec![0u8; len];
        image[16..24].copy_from_slice(&(len as u64 + 4096).to_le_bytes());
        image[ARM64_MAGIC_OFFSET..ARM64_MAGIC_OFFSET + 4].copy_from_slice(&ARM64_MAGIC);
        image[MAST_HEADER_OFFSET..MAST_HEADER_OFFSET + 4].copy_from_slice(&MAST_MAGIC);
        image[MAST_HEADER_OFFSET + 4..MAST_HEADER_OFFSET + 8].copy_from_slice(&MAST_HEADER_VERSION.to_le_bytes());
        image[MAST_HEADER_OFFSET + 8..MAST_HEADER_OFFSET + 16].copy_from_slice(&(len as u64).to_le_bytes());
        image
    }

    fn pvh_elf(entry: u64) -> Vec<u8> {
        build_elf(
            62,
            0x100000,
            &[(0x100000, &[0x90; 64], 8192)],
            &[(b"Xen", PVH_NOTE_TYPE, &(entry as u32).to_le_bytes())],
        )
    }

    #[test]
    fn accepts_a_well_formed_arm64_image() {
        let info = validate(Arch::Aarch64, &arm64_image(1000)).expect("valid image");
        assert_eq!(info.format, KernelFormat::Arm64Image);
        assert_eq!(info.file_size, 1000);
        assert_eq!(info.memory_size, 1000 + 4096);
        assert_eq!(info.text_offset, 0);
        let mut pi = arm64_image(1000);
        pi[8..16].copy_from_slice(&0x8_0000u64.to_le_bytes());
        assert_eq!(validate(Arch::Aarch64, &pi).map(|i| i.text_offset), Ok(0x8_0000));
    }

    #[test]
    fn every_truncation_of_an_arm64_image_is_refused() {
        let image = arm64_image(300);
        for len in 0..image.len() {
            assert!(validate(Arch::Aarch64, &image[..len]).is_err(), "accepted a cut to {len} bytes");
        }
        assert_eq!(validate(Arch::Aarch64, &image[..200]), Err(KernelError::Truncated { expected: 300, actual: 200 }));
    }

    #[test]
    fn arm64_garbage_and_mistakes_are_named() {
        assert_eq!(validate(Arch::Aarch64, &[]), Err(KernelError::Empty));
        assert!(matches!(validate(Arch::Aarch64, &[0x5a; 4096]), Err(KernelError::NotArm64Image(_))));
        assert!(matches!(validate(Arch::Aarch64, &pvh_elf(0x100000)), Err(KernelError::NotArm64Image(_))));
        let mut no_mast = arm64_image(200);
        no_mast[MAST_HEADER_OFFSET] = b'X';
        assert_eq!(validate(Arch::Aarch64, &no_mast), Err(KernelError::NoMastHeader));
        let mut future = arm64_image(200);
        future[MAST_HEADER_OFFSET + 4] = 9;
        assert_eq!(validate(Arch::Aarch64, &future), Err(KernelError::UnsupportedMastVersion { found: 9 }));
        let mut padded = arm64_image(200);
        padded.push(0);
        assert_eq!(validate(Arch::Aarch64, &padded), Err(KernelError::TrailingBytes { expected: 200, actual: 201 }));
    }

    #[test]
    fn accepts_a_pvh_elf() {
        let info = validate(Arch::X86_64, &pvh_elf(0x100010)).expect("valid ELF");
        assert_eq!(info.format, KernelFormat::PvhElf);
        assert_eq!(info.entry, 0x100010);
        assert_eq!(info.memory_size, 8192);
    }

    #[test]
    fn pvh_elf_mistakes_are_named() {
        assert_eq!(validate(Arch::X86_64, &pvh_elf(0x900000)), Err(KernelError::EntryOutsideImage { entry: 0x900000 }));
        let no_note = build_elf(62, 0x100000, &[(0x100000, &[0x90; 16], 16)], &[]);
        assert_eq!(validate(Arch::X86_64, &no_note), Err(KernelError::NoPvhEntry));
        let arm_elf = build_elf(183, 0, &[(0, &[0; 16], 16)], &[]);
        assert_eq!(
            validate(Arch::X86_64, &arm_elf),
            Err(KernelError::WrongArch { expected: Arch::X86_64, found: "aarch64".into() })
        );
        assert!(matches!(validate(Arch::X86_64, &arm64_image(200)), Err(KernelError::WrongArch { .. })));
        assert!(matches!(
            validate(Arch::X86_64, b"garbage, not a kernel at all........................................."),
            Err(KernelError::Elf(ElfError::BadMagic))
        ));
    }

    #[test]
    fn every_truncation_of_a_pvh_elf_is_refused() {
        let elf = pvh_elf(0x100000);
        for len in 0..elf.len() {
            assert!(validate(Arch::X86_64, &elf[..len]).is_err(), "accepted a cut to {len} bytes");
        }
    }

    fn tender_elf(machine: u16, version: u32) -> Vec<u8> {
        build_elf(
            machine,
            0x100000,
            &[(0x100000, &[0x90; 64], 8192)],
            &[(b"Mast", tender_abi::ELF_NOTE_TYPE_ABI, &version.to_le_bytes())],
        )
    }

    #[test]
    fn accepts_a_tender_elf_on_either_architecture() {
        for (arch, machine) in [(Arch::X86_64, 62), (Arch::Aarch64, 183)] {
            let info = validate_for(arch, Platform::Tender, &tender_elf(machine, tender_abi::ABI_VERSION))
                .expect("valid tender ELF");
            assert_eq!(info.format, KernelFormat::TenderElf);
            assert_eq!(info.arch, arch);
            assert_eq!(info.entry, 0x100000);
            assert_eq!(info.memory_size, 8192);
        }
    }

    #[test]
    fn tender_and_qemu_kernels_are_not_mixed_up() {
        let tender = tender_elf(62, tender_abi::ABI_VERSION);
        assert_eq!(platform_of(&tender), Some(Platform::Tender));
        assert_eq!(platform_of(&pvh_elf(0x100000)), Some(Platform::Qemu));
        assert_eq!(platform_of(&arm64_image(200)), Some(Platform::Qemu));
        assert_eq!(platform_of(b"nothing"), None);
        assert_eq!(validate_for(Arch::X86_64, Platform::Qemu, &tender), Err(KernelError::TenderKernel));
        assert_eq!(validate_for(Arch::X86_64, Platform::Tender, &pvh_elf(0x100000)), Err(KernelError::NoTenderNote));
        assert_eq!(
            validate_for(Arch::X86_64, Platform::Tender, &tender_elf(62, tender_abi::ABI_VERSION + 1)),
            Err(KernelError::WrongTenderAbi { found: tender_abi::ABI_VERSION + 1 })
        );
        assert!(matches!(
            validate_for(Arch::Aarch64, Platform::Tender, &tender),
            Err(KernelError::WrongArch { expected: Arch::Aarch64, .. })
        ));
        assert_eq!(validate_for(Arch::X86_64, Platform::Tender, &[]), Err(KernelError::Empty));
        for len in 0..tender.len() {
            assert!(validate_for(Arch::X86_64, Platform::Tender, &tender[..len]).is_err(), "accepted a cut to {len}");
        }
    }

    #[test]
    fn detects_the_architecture() {
        assert_eq!(detect_arch(&arm64_image(200)), Some(Arch::Aarch64));
        assert_eq!(detect_arch(&pvh_elf(0x100000)), Some(Arch::X86_64));
        assert_eq!(detect_arch(b"nothing"), None);
    }
}
