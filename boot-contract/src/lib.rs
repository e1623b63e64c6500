//! The boot contract of Mast kernels: every format that crosses the line between what boots a
//! kernel (a boot loader, QEMU, the host tools that build and run images) and the runtime inside
//! it. Both sides compile this crate, so the two cannot drift apart, the way `tender-abi` keeps
//! the tender and the runtime in step.
//!
//! - [`board`]: the aarch64 boards, what differs between them (UART, interrupt controller, memory
//!   map, link address, power-off), and how `images` names them;
//! - [`bundle`]: data bundles, the files an appliance reads, packed by `images` and read by the
//!   runtime from the initial ramdisk;
//! - [`fdt`] and [`devicetree`]: reading the flattened device tree an aarch64 loader passes;
//! - [`atags`]: the pre-device-tree protocol QEMU `raspi3b` uses;
//! - [`pvh`]: the PVH `hvm_start_info` an x86_64 loader passes;
//! - [`exit`]: the exit statuses an appliance reports, and how each platform carries them out;
//! - [`ready`]: how an appliance says it serves (the QEMU console marker).
//!
//! Everything here is pure: no hardware access, no `unsafe`, no allocation except where a bundle
//! is packed. Readers of loader input never panic on malformed bytes; each is unit-tested on the
//! host, against QEMU's own device trees among others (`testdata/`).
//!
//! Not here: the tender's hypercall contract (`tender-abi`), and the command line's splitting
//! (`runtime::args`).
#![cfg_attr(target_os = "none", no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod atags;
pub mod board;
pub mod bundle;
pub mod devicetree;
pub mod exit;
pub mod fdt;
pub mod pvh;
pub mod ready;

pub use exit::ExitCode;
