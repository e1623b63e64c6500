//! Mast appliance images: what they are, how they are built, and how a bare file is checked before
//! anything boots it.
//!
//! - [`Platform`]: the machines an appliance is built for (QEMU, or the `tender` monitor).
//! - [`Arch`]: the architectures an appliance is built for, with their targets and file formats.
//! - [`build`]: compiles an appliance crate for a bare-metal target and produces its bootable file.
//! - [`kernel`]: validates a bootable file (arm64 Image, PVH ELF, or tender ELF) and reports what it contains;
//!   garbage and truncated files are refused with an error that names what is wrong.
//! - [`elf`]: the small ELF64 reader both of those use; it never panics on malformed input.
//! - [`sdcard`]: bootable SD-card images (MBR + FAT32) for the Raspberry Pis.
#![forbid(unsafe_code)]

mod arch;
pub mod artifact;
pub mod build;
pub mod command;
pub mod elf;
pub mod kernel;
pub mod keys;
pub mod manifest;
mod platform;
pub mod sdcard;
pub mod site;

pub use arch::{Arch, ParseArchError};
pub use platform::{ParsePlatformError, Platform};
