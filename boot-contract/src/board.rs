//! The boards the aarch64 port knows, and what differs between them. Owned by the aarch64 port.
//!
//! Everything board-specific sits in one [`Board`] value: the console UART, the interrupt
//! controller and the timer's interrupt line, the memory map the runtime assumes when nobody
//! describes it, the device windows that must be mapped as Device memory, and how the machine powers
//! off. The aarch64 boot code uses the board in three steps:
//!
//! 1. **Build time** picks a board with a runtime cargo feature (`board-rpi3`, `board-rpi4`; none
//!    means QEMU `virt`), because the link address differs: `virt` loads the image at 0x4020_0000,
//!    the Raspberry Pi firmware at 0x80000 ([`Board::link_address`]). Appliance crates never name
//!    the board; `images::build` turns `--board` into the feature.
//! 2. **Run time**, when the loader passes a device tree, its root `compatible` strings refine the
//!    choice ([`from_compatible`]): a Pi image (both Pis share the link address) boots on either Pi.
//!    A tree naming a board the image was not linked for cannot happen (the image would not be
//!    running at its link address), so an unknown `compatible` keeps the build-time board.
//! 3. **Without a device tree** (QEMU `raspi3b` passes none unless `-dtb` is given; it passes
//!    ATAGs instead) the board's [`Board::fallback_ram`] and fixed device windows are used.
//!    `virt` has no such fallback: it always passes a tree, and one missing is a boot failure.
//!
//! Pure data and string matching: unit-tested on the host.
//!
//! # Not supported
//! - Interrupts: the interrupt controller and timer line are described here (for the interrupt
//!   work to consume) but nothing drives them yet.
//! - The Pi's mini-UART (the console is always the PL011), Ethernet, USB, SD card, GPIO and mailbox.
//! - Translating device addresses through the tree's `ranges`: the Pi boards' peripheral windows
//!   are fixed here rather than read from `/soc`.

use crate::fdt::Region;

/// The boards the runtime boots on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BoardKind {
    /// QEMU `virt` (and boards that describe themselves fully in a device tree and load at RAM
    /// base + 2 MiB).
    Virt,
    /// Raspberry Pi 3 (BCM2837): QEMU `raspi3b` and the real Model B / B+.
    Rpi3,
    /// Raspberry Pi 4 (BCM2711): QEMU `raspi4b` (QEMU 9 and later) and the real Model B.
    Rpi4,
}

/// The interrupt controller a board routes the timer through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InterruptController {
    /// A GICv2 (or the GIC-400): distributor and CPU interface bases.
    GicV2 {
        /// The distributor's (GICD) base address.
        distributor: u64,
        /// The CPU interface's (GICC) base address.
        cpu_interface: u64,
    },
    /// QEMU `virt`'s GIC (v2 by default, v3 with `gic-version=3`) is found in its device tree.
    FromDeviceTree,
    /// The BCM2836 "ARM local" block of the Pi 3: per-core timer interrupt routing
    /// (`Core0 timers interrupt control` at +0x40) and per-core IRQ sources (+0x60).
    Bcm2836Local {
        /// The block's base address.
        base: u64,
    },
}

/// How the board's timer interrupt reaches the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerInterrupt {
    /// A GIC private peripheral interrupt (the non-secure EL1 physical timer is PPI 14, INTID 30).
    GicPpi {
        /// The interrupt's INTID.
        intid: u32,
    },
    /// The BCM2836 local controller: the timer's bit in the core's timer control register
    /// (bit 1, `nCNTPNSIRQ`) and in its IRQ source register.
    Bcm2836Local {
        /// The timer's bit in both registers.
        bit: u32,
    },
}

/// How the machine powers off once semihosting (QEMU) is not there to take the status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PowerOff {
    /// PSCI `SYSTEM_OFF`, through the conduit the device tree's `/psci` names.
    Psci,
    /// The Pi has no PSCI and no power switch: the boot CPU halts in `wfi` with interrupts masked,
    /// after the status is on the console. (The PM watchdog could reset the board, but a reset
    /// would boot the appliance again, which is not what an exit means.)
    Halt,
}

/// One board's description.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Board {
    /// Which board this is.
    pub kind: BoardKind,
    /// Short name, as `--board` spells it.
    pub name: &'static str,
    /// The board in words, for the boot banner.
    pub description: &'static str,
    /// Where the image is linked and must be loaded.
    pub link_address: u64,
    /// The console PL011's base address when the device tree cannot give a CPU address for it.
    pub uart: u64,
    /// Whether the device tree's addresses for the UART and devices are CPU addresses. The Pi's
    /// trees give VideoCore bus addresses (0x7e20_1000 for the PL011) behind `/soc` `ranges`.
    pub tree_addresses_usable: bool,
    /// Device windows mapped as Device-nGnRnE, whatever the tree says.
    pub devices: &'static [Region],
    /// RAM assumed when neither a device tree nor ATAGs describe it.
    pub fallback_ram: Option<Region>,
    /// RAM never extends to or past this address: the peripherals start here.
    pub ram_limit: u64,
    /// The interrupt controller the timer's interrupt goes through.
    pub interrupts: InterruptController,
    /// How the timer's interrupt reaches the CPU.
    pub timer_interrupt: TimerInterrupt,
    /// How the machine powers off without semihosting.
    pub power_off: PowerOff,
}

const MIB: u64 = 1 << 20;

/// QEMU `virt`.
pub const VIRT: Board = Board {
    kind: BoardKind::Virt,
    name: "virt",
    description: "qemu-virt",
    link_address: 0x4020_0000,
    uart: 0x0900_0000,
    tree_addresses_usable: true,
    devices: &[],
    fallback_ram: None,
    ram_limit: u64::MAX,
    interrupts: InterruptController::FromDeviceTree,
    timer_interrupt: TimerInterrupt::GicPpi { intid: 30 },
    power_off: PowerOff::Psci,
};

/// Raspberry Pi 3: peripherals at 0x3f00_0000 (16 MiB), the BCM2836 local block at 0x4000_0000.
pub const RPI3: Board = Board {
    kind: BoardKind::Rpi3,
    name: "rpi3",
    description: "Raspberry Pi 3 (BCM2837)",
    link_address: 0x8_0000,
    uart: 0x3f20_1000,
    tree_addresses_usable: false,
    devices: &[Region { address: 0x3f00_0000, size: 16 * MIB }, Region { address: 0x4000_0000, size: 0x1000 }],
    // A 1 GiB board with the firmware's default `gpu_mem=64`: the ARM owns the first 948 MiB, the
    // VideoCore the rest up to the peripherals. Assuming less than the board has is safe.
    fallback_ram: Some(Region { address: 0, size: 0x3b40_0000 }),
    ram_limit: 0x3f00_0000,
    interrupts: InterruptController::Bcm2836Local { base: 0x4000_0000 },
    timer_interrupt: TimerInterrupt::Bcm2836Local { bit: 1 },
    power_off: PowerOff::Halt,
};

/// Raspberry Pi 4 in its default "low peripheral" mode: peripherals at 0xfc00_0000..0xff80_0000,
/// the ARM local block and GIC-400 at 0xff80_0000.
pub const RPI4: Board = Board {
    kind: BoardKind::Rpi4,
    name: "rpi4",
    description: "Raspberry Pi 4 (BCM2711)",
    link_address: 0x8_0000,
    uart: 0xfe20_1000,
    tree_addresses_usable: false,
    devices: &[Region { address: 0xfc00_0000, size: 0x0400_0000 }],
    // Every Pi 4 has at least 1 GiB; the firmware keeps 76 MiB below 1 GiB for the VideoCore by
    // default, and the first gigabyte is what the 32-bit DMA engines reach.
    fallback_ram: Some(Region { address: 0, size: 0x3b40_0000 }),
    ram_limit: 0xfc00_0000,
    interrupts: InterruptController::GicV2 { distributor: 0xff84_1000, cpu_interface: 0xff84_2000 },
    timer_interrupt: TimerInterrupt::GicPpi { intid: 30 },
    power_off: PowerOff::Halt,
};

/// Every board, for listings and tests.
pub const ALL: [Board; 3] = [VIRT, RPI3, RPI4];

impl Board {
    /// The board called `name` (`virt`, `rpi3`, `rpi4`).
    pub fn named(name: &str) -> Option<Board> {
        ALL.into_iter().find(|b| b.name == name)
    }

    /// Clips `region` to the RAM this board can have: below its peripherals.
    pub fn clip_ram(&self, region: Region) -> Region {
        let end = region.end().min(self.ram_limit);
        Region { address: region.address, size: end.saturating_sub(region.address) }
    }
}

/// The board a device tree's root `compatible` strings name, most specific first (as the tree
/// lists them); `None` when no string is known.
///
/// The Pi firmware's trees say e.g. `"raspberrypi,3-model-b-plus", "brcm,bcm2837"`; QEMU `virt`
/// says `"linux,dummy-virt"`.
pub fn from_compatible<'a>(strings: impl IntoIterator<Item = &'a str>) -> Option<Board> {
    strings.into_iter().find_map(|s| match s {
        "linux,dummy-virt" => Some(VIRT),
        "brcm,bcm2837" | "brcm,bcm2710" => Some(RPI3),
        "brcm,bcm2711" => Some(RPI4),
        _ if s.starts_with("raspberrypi,3-") => Some(RPI3),
        _ if s.starts_with("raspberrypi,4-") => Some(RPI4),
        _ => None,
    })
}

/// The board a run-time device tree chooses, given the board the image was built for: the tree's
/// board if it is known and shares the build board's link address, else the build board.
pub fn refine<'a>(built: Board, compatible: impl IntoIterator<Item = &'a str>) -> Board {
    match from_compatible(compatible) {
        Some(found) if found.link_address == built.link_address => found,
        _ => built,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pi_firmwares_compatible_strings_name_the_pi() {
        assert_eq!(from_compatible(["raspberrypi,3-model-b", "brcm,bcm2837"]), Some(RPI3));
        assert_eq!(from_compatible(["raspberrypi,3-model-b-plus", "brcm,bcm2837"]), Some(RPI3));
        assert_eq!(from_compatible(["raspberrypi,4-model-b", "brcm,bcm2711"]), Some(RPI4));
        assert_eq!(from_compatible(["raspberrypi,400", "brcm,bcm2711"]), Some(RPI4));
        assert_eq!(from_compatible(["linux,dummy-virt"]), Some(VIRT));
    }

    #[test]
    fn unknown_or_missing_compatible_strings_name_nothing() {
        assert_eq!(from_compatible(["acme,widget", "acme,soc"]), None);
        assert_eq!(from_compatible([]), None);
        assert_eq!(from_compatible([""]), None);
    }

    #[test]
    fn refining_keeps_the_build_board_unless_the_tree_names_a_compatible_one() {
        assert_eq!(refine(RPI3, ["raspberrypi,4-model-b", "brcm,bcm2711"]), RPI4);
        assert_eq!(refine(RPI4, ["raspberrypi,3-model-b"]), RPI3);
        assert_eq!(refine(RPI3, ["acme,widget"]), RPI3);
        // A Pi image cannot be running on virt (different link address): keep what was built.
        assert_eq!(refine(RPI3, ["linux,dummy-virt"]), RPI3);
        assert_eq!(refine(VIRT, ["raspberrypi,3-model-b"]), VIRT);
    }

    #[test]
    fn names_round_trip_and_ram_is_clipped_below_the_peripherals() {
        for board in ALL {
            assert_eq!(Board::named(board.name), Some(board));
        }
        assert_eq!(Board::named("rpi5"), None);
        assert_eq!(RPI3.clip_ram(Region { address: 0, size: 1 << 30 }), Region { address: 0, size: 0x3f00_0000 });
        assert_eq!(RPI3.clip_ram(Region { address: 0x4000_0000, size: 4096 }).size, 0);
        for board in [RPI3, RPI4] {
            let ram = board.fallback_ram.expect("Pi boards have a fallback");
            assert!(ram.end() <= board.ram_limit && ram.contains(board.link_address));
            assert!(board.devices.iter().any(|d| d.contains(board.uart)));
        }
    }
}
