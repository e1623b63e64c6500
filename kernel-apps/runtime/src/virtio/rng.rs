//! The virtio-rng driver: the entropy source on QEMU `virt` and `microvm` (QEMU's
//! `virtio-rng-device`, backed by the host's `getrandom`).
//!
//! Published through [`crate::entropy`]. The device is claimed on first use and kept for the
//! appliance's life. Requests are polled: a seed is a few dozen bytes, which QEMU answers during
//! the notify itself, so the device's interrupt stays off and never wakes the event loop.

use spin::Mutex;
use virtio_drivers::{
    device::rng::VirtIORng,
    transport::{DeviceType, mmio::MmioTransport},
};

use super::{Hal, claim};

/// The driver, wrapped so that it may sit in a static.
struct Device(VirtIORng<Hal, MmioTransport<'static>>);

// SAFETY: the transport's raw pointer addresses the device's MMIO window, which stays mapped for
// the appliance's life; the runtime runs on one CPU without interrupt handlers, and the mutex
// below serialises every use, so moving the driver between "threads" cannot race on it.
unsafe impl Send for Device {}

/// `None` until the first request; `Some(None)` once the machine proved to have no device.
static DEVICE: Mutex<Option<Option<Device>>> = Mutex::new(None);

/// Fills `buf` with bytes from the virtio-rng device; `Err(())` if there is none or it failed.
pub(crate) fn fill(buf: &mut [u8]) -> Result<(), ()> {
    let mut device = DEVICE.lock();
    let device = device.get_or_insert_with(|| {
        let (transport, _slot) = claim(DeviceType::EntropySource).ok()?;
        let mut driver = VirtIORng::new(transport).ok()?;
        driver.disable_interrupts();
        Some(Device(driver))
    });
    let Some(Device(driver)) = device.as_mut() else { return Err(()) };
    let mut filled = 0;
    while filled < buf.len() {
        let rest = buf.get_mut(filled..).ok_or(())?;
        match driver.request_entropy(rest) {
            // A device that returns nothing would loop forever: treat it as broken.
            Ok(0) | Err(_) => return Err(()),
            Ok(n) => filled += n.min(rest.len()),
        }
    }
    Ok(())
}
