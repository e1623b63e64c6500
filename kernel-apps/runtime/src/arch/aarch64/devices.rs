//! The devices a network appliance uses, from the device tree: the interrupt controller, the
//! virtual timer's interrupt, and the virtio-mmio transports.
//!
//! Boot remembers the (validated, `'static`) tree; the first question after boot walks the root's
//! children once and keeps the answers, so appliances without devices never pay for the walk.
//! Every node asked about is a top-level node, whose registers boot has already mapped as Device
//! memory (see `platform`).

use spin::Once;

use crate::{
    devicetree::{self, Gic},
    fdt::Fdt,
    virtio::{MmioSlot, MmioSlots},
};

/// What the tree says, as the interrupt and virtio code need it.
pub(super) struct Devices {
    pub(super) gic: Option<Gic>,
    /// The EL1 virtual timer's INTID (27, PPI 11, when the tree does not say).
    pub(super) timer_intid: u32,
    pub(super) virtio: MmioSlots,
}

/// The virtual timer's INTID in the Arm Base System Architecture, for trees without `/timer`.
const DEFAULT_VIRTUAL_TIMER_INTID: u32 = 27;

static TREE: Once<Fdt<'static>> = Once::new();
static DEVICES: Once<Devices> = Once::new();

/// Keeps the tree for later questions. Called once by boot.
pub(super) fn remember(fdt: Fdt<'static>) {
    TREE.call_once(|| fdt);
}

/// The devices, found on first use.
pub(super) fn devices() -> &'static Devices {
    DEVICES.call_once(|| {
        let mut found = Devices { gic: None, timer_intid: DEFAULT_VIRTUAL_TIMER_INTID, virtio: MmioSlots::new() };
        let mut coherent = true;
        if let Some(fdt) = TREE.get() {
            for node in fdt.root().children() {
                if let Some(gic) = devicetree::gic(&node) {
                    found.gic = found.gic.or(Some(gic));
                } else if let Some(intid) = devicetree::virtual_timer_intid(&node) {
                    found.timer_intid = intid;
                } else if let Some(virtio) = devicetree::virtio_mmio(&node) {
                    coherent &= virtio.coherent;
                    let (Ok(base), Ok(size)) =
                        (usize::try_from(virtio.region.address), usize::try_from(virtio.region.size))
                    else {
                        continue;
                    };
                    found.virtio.push(MmioSlot { base, size, irq: virtio.intid, coherent: virtio.coherent });
                }
            }
        }
        super::dma::set_coherent(coherent);
        found
    })
}

/// The virtio-mmio transports the tree describes.
pub(crate) fn virtio_slots() -> &'static [MmioSlot] {
    devices().virtio.as_slice()
}
