//! The same appliance source builds for QEMU and for the tender, into kernels that each platform's
//! checks accept and the other's refuse.

use images::{
    Arch, Platform,
    build::{self, Profile},
    kernel::{self, KernelError, KernelFormat},
};

#[test]
fn hello_builds_for_the_tender_and_for_qemu_into_distinct_kernels() {
    let root = build::workspace_root();
    let tender = build::build_for_platform(&root, "hello", Arch::X86_64, Platform::Tender, Profile::Release)
        .unwrap_or_else(|e| panic!("tender build: {e}"));
    assert_eq!(tender.platform, Platform::Tender);
    assert_eq!(tender.info.format, KernelFormat::TenderElf);
    assert_eq!(
        tender.kernel,
        build::platform_image_dir(&root, Arch::X86_64, Platform::Tender, Profile::Release).join("hello.elf")
    );
    assert!(tender.artifact.starts_with(root.join("target/images/x86_64-tender")), "{}", tender.artifact.display());
    let tender_kernel = std::fs::read(&tender.kernel).expect("reading the tender kernel");
    assert_eq!(kernel::platform_of(&tender_kernel), Some(Platform::Tender));
    // Linked at 1 MiB and entered at its ELF entry point, which is the start of .text.
    assert_eq!(tender.info.entry, 0x10_0000);

    let qemu = build::build_for_platform(&root, "hello", Arch::X86_64, Platform::Qemu, Profile::Release)
        .unwrap_or_else(|e| panic!("QEMU build: {e}"));
    assert_eq!(qemu.info.format, KernelFormat::PvhElf);
    let qemu_kernel = std::fs::read(&qemu.kernel).expect("reading the QEMU kernel");
    assert_eq!(kernel::platform_of(&qemu_kernel), Some(Platform::Qemu));

    assert_eq!(kernel::validate_for(Arch::X86_64, Platform::Qemu, &tender_kernel), Err(KernelError::TenderKernel));
    assert_eq!(kernel::validate_for(Arch::X86_64, Platform::Tender, &qemu_kernel), Err(KernelError::NoTenderNote));
}
