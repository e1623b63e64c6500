//! Readiness (see `boot_contract::ready`): the appliance calls [`ready`] once it listens.

use core::sync::atomic::{AtomicBool, Ordering};

static SAID: AtomicBool = AtomicBool::new(false);

/// Tells the platform that the appliance listens and serves: the `Ready` hypercall under the
/// tender, the console line `mast: ready` on QEMU. Only the first call of a boot says it, so an
/// appliance may call it wherever it (re)announces its address.
pub fn ready() {
    if SAID.swap(true, Ordering::Relaxed) {
        return;
    }
    #[cfg(feature = "platform-tender")]
    crate::arch::tender::ready();
    #[cfg(not(feature = "platform-tender"))]
    crate::println!("{}", boot_contract::ready::CONSOLE_MARKER);
}
