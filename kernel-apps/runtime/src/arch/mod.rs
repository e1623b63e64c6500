//! The architecture boundary. Everything machine-specific lives below this module.
//!
//! Each architecture module provides exactly these items, and nothing outside `arch` reaches past
//! them:
//!
//! - a boot entry (assembly) that sets up a stack, zeroes `.bss`, brings the CPU to a state where
//!   Rust runs (MMU/paging, FP access, exception vectors), gathers a [`BootInfo`] and calls
//!   [`crate::boot::start`], which never returns;
//! - `fn console_write(bytes: &[u8])`: blocking write of raw bytes to the console UART;
//! - `fn now_ns() -> u64`: the monotonic clock, nanoseconds since reset;
//! - `fn exit(status: ExitCode) -> !`: power off, reporting `status` to the host where the platform
//!   can (see [`crate::exit`]);
//! - `fn wait_forever() -> !`: stop in the lowest-power wait the CPU has (QEMU ports; the tender
//!   stops the guest on exit instead).
//!
//! With the `virtio` feature, also:
//!
//! - `irq::enable(irq: u32) -> bool`: route a device interrupt (platform numbering) to this CPU;
//!   `false` when the machine has no interrupt controller the runtime drives;
//! - `irq::wait(deadline_ns: Option<u64>)`: sleep until an enabled interrupt or the deadline (see
//!   [`crate::event`]);
//! - `dma::share` / `dma::unshare`: cache maintenance around device DMA (see [`crate::virtio`]);
//! - `virtio_slots() -> &'static [MmioSlot]`: the platform's virtio-mmio register windows.
//!
//! With the `platform-tender` feature the machine is the tender instead of QEMU, and [`tender`]
//! provides the items above (except the virtio ones: with the `virtio` feature it offers its own
//! network device and `tender::wait` for the event loop, and always `tender::block`). The entry
//! there does not zero `.bss`: the tender hands over zeroed RAM.
//!
//! [`BootInfo`]: crate::boot::BootInfo

// QEMU: one port per architecture.
#[cfg(all(target_arch = "aarch64", not(feature = "platform-tender")))]
mod aarch64;
#[cfg(all(target_arch = "aarch64", not(feature = "platform-tender")))]
pub(crate) use aarch64::{console_write, exit, now_ns, wait_forever};
#[cfg(all(target_arch = "aarch64", feature = "virtio", not(feature = "platform-tender")))]
pub(crate) use aarch64::{dma, irq, virtio_slots};

#[cfg(all(target_arch = "x86_64", not(feature = "platform-tender")))]
mod x86_64;
#[cfg(all(target_arch = "x86_64", not(feature = "platform-tender")))]
pub(crate) use x86_64::{console_write, exit, now_ns, privileged, wait_forever};
#[cfg(all(target_arch = "x86_64", feature = "virtio", not(feature = "platform-tender")))]
pub(crate) use x86_64::{dma, irq, virtio_slots};

// The tender: one platform for both architectures, with a CPU half for each.
#[cfg(feature = "platform-tender")]
pub(crate) mod tender;
#[cfg(all(target_arch = "x86_64", feature = "platform-tender"))]
pub(crate) use tender::privileged;
#[cfg(feature = "platform-tender")]
pub(crate) use tender::{console_write, exit, now_ns};
