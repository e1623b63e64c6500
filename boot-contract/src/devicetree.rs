//! What the device tree says about interrupts and virtio devices. Owned by the aarch64 port, pure
//! so that it is tested on the host against QEMU's own trees.
//!
//! Three questions, each answered from one node so that boot can ask them during its single pass
//! over the root's children:
//!
//! - [`gic`]: is this node the interrupt controller, which version, and where are its registers?
//! - [`virtual_timer_intid`]: which interrupt does the generic timer's virtual timer raise?
//! - [`virtio_mmio`]: is this node a virtio-mmio transport, where, with which interrupt, and is it
//!   DMA-coherent?
//!
//! # Not supported
//! - Interrupt parents other than the one GIC: every `interrupts` property is read as a GIC
//!   specifier (type, number, flags), which is what QEMU `virt` and most single-GIC boards use.
//! - Nodes below the top level (their `reg` would need translation through `ranges`), and
//!   `interrupts-extended`.

use crate::fdt::{Node, Region};

/// The GIC architecture versions the runtime drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicVersion {
    /// GICv2 (GIC-400, Cortex-A15/A7/A9 GICs): distributor and memory-mapped CPU interface.
    V2,
    /// GICv3: distributor, redistributors, and the CPU interface as system registers.
    V3,
}

/// Where the interrupt controller's registers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gic {
    /// GICv2 or GICv3.
    pub version: GicVersion,
    /// The distributor (GICD).
    pub distributor: Region,
    /// GICv2: the CPU interface (GICC). GICv3: the first redistributor region (GICR).
    pub cpu: Region,
}

/// The interrupt controller described by `node`, if it is one the runtime drives.
pub fn gic(node: &Node<'_>) -> Option<Gic> {
    node.property("interrupt-controller")?;
    let version = node.property("compatible")?.strings().find_map(|name| match name {
        "arm,gic-v3" => Some(GicVersion::V3),
        "arm,gic-400" | "arm,cortex-a15-gic" | "arm,cortex-a9-gic" | "arm,cortex-a7-gic" => Some(GicVersion::V2),
        _ => None,
    })?;
    let mut reg = node.reg();
    let distributor = reg.next()?;
    let cpu = reg.next()?;
    Some(Gic { version, distributor, cpu })
}

/// GIC specifier type: shared peripheral interrupt.
const GIC_SPI: u32 = 0;
/// GIC specifier type: private peripheral interrupt.
const GIC_PPI: u32 = 1;

/// The interrupt id (INTID) a three-cell GIC specifier names: SPIs start at 32, PPIs at 16.
pub fn gic_intid(kind: u32, number: u32) -> Option<u32> {
    match kind {
        GIC_SPI if number < 988 => Some(32 + number),
        GIC_PPI if number < 16 => Some(16 + number),
        _ => None,
    }
}

/// The virtual timer's INTID, if `node` is the Arm generic timer. Its `interrupts` list the
/// secure physical, non-secure physical, virtual and hypervisor timers, in that order.
pub fn virtual_timer_intid(node: &Node<'_>) -> Option<u32> {
    let compatible = node.property("compatible")?;
    if !compatible.strings().any(|c| c == "arm,armv8-timer" || c == "arm,armv7-timer") {
        return None;
    }
    let mut cells = node.property("interrupts")?.cells().skip(2 * 3);
    gic_intid(cells.next()?, cells.next()?)
}

/// A virtio-mmio transport from the device tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioMmio {
    /// Its register window.
    pub region: Region,
    /// Its interrupt's INTID.
    pub intid: u32,
    /// Whether device accesses to memory are coherent with the CPU's caches (`dma-coherent`).
    pub coherent: bool,
}

/// The virtio-mmio transport described by `node`, if it is an enabled one.
pub fn virtio_mmio(node: &Node<'_>) -> Option<VirtioMmio> {
    if !node.is_compatible("virtio,mmio") || !node.is_enabled() {
        return None;
    }
    let region = node.reg().next()?;
    let mut cells = node.property("interrupts")?.cells();
    let intid = gic_intid(cells.next()?, cells.next()?)?;
    Some(VirtioMmio { region, intid, coherent: node.property("dma-coherent").is_some() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdt::Fdt;

    /// QEMU 7.2 `-M virt -cpu cortex-a72 -m 64M` with one `virtio-net-device` (GICv2, the default).
    static VIRT_NET: &[u8] = include_bytes!("../testdata/qemu-virt-net.dtb");
    /// QEMU 7.2 `-M virt,gic-version=3 -cpu cortex-a72 -m 64M`.
    static VIRT_GICV3: &[u8] = include_bytes!("../testdata/qemu-virt-gicv3.dtb");

    #[test]
    fn finds_qemus_gicv2_and_virtual_timer() {
        let fdt = Fdt::new(VIRT_NET).expect("valid tree");
        let gics: Vec<Gic> = fdt.root().children().filter_map(|n| gic(&n)).collect();
        assert_eq!(
            gics,
            [Gic {
                version: GicVersion::V2,
                distributor: Region { address: 0x0800_0000, size: 0x1_0000 },
                cpu: Region { address: 0x0801_0000, size: 0x1_0000 },
            }]
        );
        let timers: Vec<u32> = fdt.root().children().filter_map(|n| virtual_timer_intid(&n)).collect();
        assert_eq!(timers, [27]);
    }

    #[test]
    fn finds_qemus_gicv3() {
        let fdt = Fdt::new(VIRT_GICV3).expect("valid tree");
        let found = fdt.root().children().find_map(|n| gic(&n)).expect("a GIC");
        assert_eq!(found.version, GicVersion::V3);
        assert_eq!(found.distributor.address, 0x0800_0000);
        assert_eq!(found.cpu, Region { address: 0x080a_0000, size: 0xf6_0000 });
    }

    #[test]
    fn finds_all_32_virtio_transports_coherent_with_their_interrupts() {
        let fdt = Fdt::new(VIRT_NET).expect("valid tree");
        let mut slots: Vec<VirtioMmio> = fdt.root().children().filter_map(|n| virtio_mmio(&n)).collect();
        slots.sort_by_key(|s| s.region.address);
        assert_eq!(slots.len(), 32);
        for (i, slot) in slots.iter().enumerate() {
            let i = i as u64;
            assert_eq!(slot.region, Region { address: 0x0a00_0000 + i * 0x200, size: 0x200 });
            assert_eq!(u64::from(slot.intid), 32 + 16 + i, "SPI 16 + slot");
            assert!(slot.coherent);
        }
    }

    #[test]
    fn specifiers_outside_the_gic_ranges_are_refused() {
        assert_eq!(gic_intid(GIC_SPI, 0), Some(32));
        assert_eq!(gic_intid(GIC_PPI, 11), Some(27));
        assert_eq!(gic_intid(GIC_PPI, 16), None);
        assert_eq!(gic_intid(GIC_SPI, 988), None);
        assert_eq!(gic_intid(2, 0), None);
    }
}
