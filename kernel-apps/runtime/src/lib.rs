//! The Mast runtime: a library OS that turns one Rust crate into a bootable appliance.
//!
//! An appliance links this crate and names its entry function with [`entry!`]. The runtime owns
//! everything below that function: the boot protocol of each platform, the MMU and exception
//! vectors, the console, the heap, the monotonic clock and powering off with a status the host sees.
//!
//! # Layers
//! - `arch::{aarch64, x86_64}`: the only code that knows the machine; it holds all the assembly and
//!   most of the `unsafe`. It hands a `BootInfo` (memory, command line, entry time) to the shared
//!   boot path.
//! - shared modules (`console`, `time`, heap, boot, panic): the same on every architecture.
//! - with the `virtio` feature (network appliances only): `event` (the event loop's
//!   interrupt-driven sleep), `netdev` (the platform's network device), `block` (the disk API
//!   appliances use), `entropy` (random bytes and a seeded CSPRNG) and, on QEMU, `virtio` (device
//!   discovery, the DMA `Hal`, the virtio-net, virtio-blk and virtio-rng drivers); their hardware halves are `arch::*::{irq, gic, dma, devices}`, or
//!   `arch::tender` on the tender.
//! - pure modules ([`args`], [`atags`], [`board`], [`devicetree`], [`exit`], [`fdt`], [`fault`],
//!   [`page_guard`], [`pvh`], [`tsc`]): no hardware access, unit-tested on the host.
//!
//! # Supported
//! - aarch64 on QEMU `virt` (cortex-a72), entered as an arm64 Image (QEMU `-kernel`, U-Boot `booti`),
//!   and on the Raspberry Pi 3 and 4 (QEMU `raspi3b` and `raspi4b`, real boards) as `kernel8.img`
//!   ([`board`]).
//! - x86_64 on QEMU `microvm`, entered through PVH (the `Xen` ELF note), under KVM.
//! - `tender`, Mast's per-appliance KVM monitor (the `platform-tender` feature; contract in the
//!   `tender-abi` crate): x86_64 runs, aarch64 is compile-checked. Console, clock, exit, the event
//!   loop's sleep, the network device (`netdev`) and a block device (`block`) go through
//!   hypercalls and shared rings (see `arch::tender`).
//!
//! # Not supported (yet)
//! - more than one CPU: secondary cores are never started (those a loader starts anyway, as QEMU
//!   `raspi3b` does, park in `wfe`);
//! - interrupt handlers: with the `virtio` feature, interrupts (GICv2/v3 on aarch64, local APIC
//!   and IOAPIC on x86_64) only wake the CPU from the event loop's sleep (`event`); no code runs
//!   in interrupt context;
//! - stack frames larger than a page: every platform catches an overflow with a 4 KiB guard page
//!   below the stack (a fault report naming a stack overflow, status 102), which a single frame of
//!   several KiB could step over.
#![cfg_attr(target_os = "none", no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod args;
pub mod fault;
pub mod page_guard;
pub mod tsc;
pub mod wallclock;
// The boot contract's formats, where the runtime's own code and its appliances have always found them.
pub use boot_contract::{atags, board, bundle, devicetree, exit, fdt, pvh};

#[cfg(target_os = "none")]
mod arch;
#[cfg(all(target_os = "none", feature = "virtio"))]
pub mod block;
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
pub mod console;
#[cfg(all(target_os = "none", feature = "virtio"))]
pub mod entropy;
#[cfg(all(target_os = "none", feature = "virtio"))]
pub mod event;
#[cfg(target_os = "none")]
mod heap;
#[cfg(target_os = "none")]
mod panic;
#[cfg(target_os = "none")]
mod ready;
#[cfg(target_os = "none")]
pub mod time;
#[cfg(target_os = "none")]
pub use ready::ready;
#[cfg(all(target_os = "none", feature = "virtio", not(feature = "platform-tender")))]
pub mod virtio;

/// The platform's network device: virtio-net on QEMU, the tender's ring device on the tender.
/// Both have the same shape (`NetDevice::{open, mac_address, has_interrupts, ack_interrupt,
/// receive, recycle, can_transmit, tx_frame, transmit, dropped, count_dropped}`, `RxFrame::packet`,
/// `TxFrame::packet_mut`, `OpenError: Display`, `MAX_FRAME`, `QUEUE_SIZE`), so a network stack
/// built on this module runs on either unchanged.
#[cfg(all(target_os = "none", feature = "virtio"))]
pub mod netdev {
    #[cfg(feature = "platform-tender")]
    pub use crate::arch::tender::net::{MAX_FRAME, NetDevice, OpenError, QUEUE_SIZE, RxFrame, TxFrame};
    #[cfg(not(feature = "platform-tender"))]
    pub use crate::virtio::net::{MAX_FRAME, NetDevice, OpenError, QUEUE_SIZE, RxFrame, TxFrame};
}

#[cfg(target_os = "none")]
pub use boot::{BootTimes, Context};
pub use exit::ExitCode;

/// x86_64: runs `function(argument)` at CPL 0 and returns. The runtime runs appliances at CPL 3
/// (under PVM nested KVM, CPL 0 code is emulated, ~2 µs an instruction), so an appliance that needs
/// a privileged instruction (port I/O, control registers; the `hostile` test appliance) asks for
/// it here. Each call is a trip through a fault into emulated code: keep `function` short.
#[cfg(all(target_os = "none", target_arch = "x86_64"))]
pub fn privileged(function: extern "C" fn(u64), argument: u64) {
    arch::privileged(function, argument);
}

/// Names the appliance's entry function: `fn(&mut runtime::Context) -> runtime::ExitCode`.
///
/// The runtime calls it once, after the heap, console and clock are ready, and powers the machine
/// off with the status it returns.
///
/// ```ignore
/// runtime::entry!(main);
/// fn main(ctx: &mut runtime::Context) -> runtime::ExitCode { runtime::ExitCode::SUCCESS }
/// ```
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        // The symbol name is the whole contract between the runtime and the appliance: the runtime
        // declares it and calls it after boot. Exporting a symbol is `unsafe_code` to the compiler,
        // which is why this one item is allowed it even in `#![deny(unsafe_code)]` crates.
        #[allow(unsafe_code)]
        #[unsafe(export_name = "__mast_app_main")]
        fn __mast_app_main(ctx: &mut $crate::Context) -> $crate::ExitCode {
            let main: fn(&mut $crate::Context) -> $crate::ExitCode = $main;
            main(ctx)
        }
    };
}
