//! The virtio-mmio transports: from the command line when the loader describes them, else QEMU
//! `microvm`'s fixed layout.
//!
//! QEMU `microvm` (with `auto-kernel-cmdline=on`, its default) and Firecracker append
//! `virtio_mmio.device=<size>@<base>:<irq>` to the command line for each transport with a device;
//! those arguments are the runtime's (appliances never see them, see [`crate::args`]). Without
//! them the runtime probes `microvm`'s transports: eight 512-byte windows from 0xfeb0_0000, on
//! IOAPIC lines 5 to 12 (QEMU 7.2 `hw/i386/microvm.c`, without the second IOAPIC). Probing an
//! empty window is harmless: it reads as device id 0.
//!
//! # Not supported
//! - `microvm` with a second IOAPIC (`ioapic2=on`, the default with ACPI), whose 24 transports
//!   sit on lines 24 and up, unless the loader describes them on the command line; and ACPI.

use spin::Once;

use crate::{
    args,
    virtio::{MmioSlot, MmioSlots},
};

/// QEMU `microvm`'s transports without a second IOAPIC.
const MICROVM_BASE: usize = 0xfeb0_0000;
const MICROVM_SLOT_SIZE: usize = 0x200;
const MICROVM_SLOTS: usize = 8;
const MICROVM_FIRST_GSI: u32 = 5;
/// The window the boot code maps for devices (uncached): 3 to 4 GiB.
const DEVICE_WINDOW: core::ops::Range<u64> = 0xc000_0000..0x1_0000_0000;

static CMDLINE: Once<&'static str> = Once::new();
static SLOTS: Once<MmioSlots> = Once::new();

/// Keeps the command line for discovery. Called once by boot.
pub(super) fn remember(cmdline: &'static str) {
    CMDLINE.call_once(|| cmdline);
}

/// The virtio-mmio transports, found on first use.
pub(crate) fn virtio_slots() -> &'static [MmioSlot] {
    SLOTS
        .call_once(|| {
            let mut slots = MmioSlots::new();
            let cmdline = CMDLINE.get().copied().unwrap_or("");
            for arg in args::split(cmdline) {
                let Some(device) = args::virtio_mmio_device(&arg) else { continue };
                // Only windows inside the mapped device window can be reached.
                if DEVICE_WINDOW.contains(&device.base) && device.base.saturating_add(device.size) <= DEVICE_WINDOW.end
                {
                    slots.push(MmioSlot {
                        base: device.base as usize,
                        size: device.size as usize,
                        irq: device.irq,
                        coherent: true,
                    });
                }
            }
            if slots.as_slice().is_empty() {
                for index in 0..MICROVM_SLOTS {
                    slots.push(MmioSlot {
                        base: MICROVM_BASE + index * MICROVM_SLOT_SIZE,
                        size: MICROVM_SLOT_SIZE,
                        irq: MICROVM_FIRST_GSI + index as u32,
                        coherent: true,
                    });
                }
            }
            slots
        })
        .as_slice()
}
