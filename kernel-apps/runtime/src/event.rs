//! The event loop's sleep: wait for a device interrupt or a deadline, whichever comes first.
//!
//! An appliance with devices runs one loop: service the devices, do its work, then
//! [`wait_until`] its next deadline. The wait costs no CPU: the core stops in `wfi` (aarch64) or
//! `hlt` (x86_64) until an enabled interrupt (a device's, or the timer the runtime sets for the
//! deadline) arrives. Interrupts only wake the core; no handler does any work in interrupt
//! context, so the loop never races with one.
//!
//! On the tender there are no interrupts: the wait is one `Poll` hypercall, which returns when a
//! frame arrives or the deadline passes (see `arch::tender`).
//!
//! After a wake the caller must service every device whose interrupt it enabled (for virtio-net,
//! [`crate::virtio::net::NetDevice::ack_interrupt`], then its queues) before waiting again: the
//! next wait completes the interrupt the last one took, and an interrupt still asserted then wakes
//! it at once.

use crate::{arch, time::Instant};

/// Sleeps until an enabled interrupt arrives or the clock reaches `deadline` (`None`: no
/// deadline). Returns at once if the deadline has passed. It may also return early (a spurious
/// wake, another device's interrupt), so callers check their own conditions and wait again.
pub fn wait_until(deadline: Option<Instant>) {
    let deadline_ns = deadline.map(|d| u64::try_from(d.since_reset().as_nanos()).unwrap_or(u64::MAX));
    #[cfg(not(feature = "platform-tender"))]
    arch::irq::wait(deadline_ns);
    #[cfg(feature = "platform-tender")]
    arch::tender::wait(deadline_ns);
}
