//! What the device tree (or, without one, the board) says about the machine, gathered once at boot.
//!
//! Boot needs five facts: where RAM is (memory nodes) and which parts of it are reserved
//! (`/memreserve/` entries and `/reserved-memory`), where the devices are (top-level nodes' `reg`, to
//! map them), which UART is the console, how to reach PSCI, and the command line. Addresses are
//! taken as the top-level bus gives them; see [`crate::fdt`] for what that leaves out. On boards
//! whose trees give bus addresses (the Pis, see [`Board::tree_addresses_usable`]) the console and
//! device windows come from the [`Board`] instead.
//!
//! Without a device tree ([`without_tree`]) RAM comes from QEMU's ATAGs when x0 points at some,
//! else from the board's fallback; the command line and initrd from the ATAGs, if any.

use crate::{
    atags::Atags,
    board::{Board, PowerOff},
    fdt::{Fdt, Node, Region},
};

use super::{
    mmu::{self, GigabyteSet},
    power::Conduit,
};

/// A fixed-capacity list of regions: boot gathers them before the heap exists.
#[derive(Clone, Copy)]
pub(super) struct RegionList<const N: usize> {
    regions: [Region; N],
    len: usize,
    /// Regions that did not fit.
    pub(super) dropped: usize,
}

impl<const N: usize> RegionList<N> {
    const fn new() -> Self {
        RegionList { regions: [Region { address: 0, size: 0 }; N], len: 0, dropped: 0 }
    }

    /// Appends `region`, ignoring empty ones and counting those that do not fit.
    pub(super) fn push(&mut self, region: Region) {
        if region.size == 0 {
            return;
        }
        match self.regions.get_mut(self.len) {
            Some(slot) => {
                *slot = region;
                self.len += 1;
            }
            None => self.dropped += 1,
        }
    }

    pub(super) fn as_slice(&self) -> &[Region] {
        self.regions.get(..self.len).unwrap_or(&[])
    }
}

/// The machine, as boot needs it.
pub(super) struct Platform {
    /// The machine in words, for the banner.
    pub(super) name: &'static str,
    /// `/chosen/bootargs`; `None` if it is present but not UTF-8.
    pub(super) cmdline: Option<&'static str>,
    /// The console PL011's base address.
    pub(super) uart: usize,
    pub(super) psci: Option<Conduit>,
    /// RAM, clipped to what the identity map reaches.
    pub(super) ram: RegionList<8>,
    /// RAM the heap must avoid: the tree's reservations; boot adds the image and the tree itself.
    pub(super) reserved: RegionList<40>,
    /// Gigabytes holding devices (the console included).
    pub(super) devices: GigabyteSet,
    /// The timer frequency from the tree, for firmware that leaves CNTFRQ_EL0 unset.
    pub(super) timer_hz: Option<u64>,
    /// The initrd (`/chosen/linux,initrd-start` to `-end`): the appliance's data bundle.
    pub(super) initrd: Option<Region>,
}

/// The top of what the identity map reaches.
const MAPPED_END: u64 = (mmu::ENTRIES as u64) << mmu::GIB_SHIFT;

/// The machine from the board's defaults and, if the loader left some, ATAGs.
pub(super) fn without_tree(board: &Board, atags: Option<Atags<'static>>) -> Platform {
    let mut ram = RegionList::new();
    let memory = atags.and_then(|a| a.memory).or(board.fallback_ram);
    if let Some(memory) = memory {
        ram.push(board.clip_ram(memory));
    }
    let mut reserved = RegionList::new();
    let initrd = atags.and_then(|a| a.initrd);
    if let Some(initrd) = initrd {
        reserved.push(initrd);
    }
    Platform {
        name: board.description,
        cmdline: match atags.and_then(|a| a.cmdline) {
            None => Some(""),
            Some(line) => line.ok(),
        },
        uart: board.uart as usize,
        psci: None,
        ram,
        reserved,
        devices: GigabyteSet::default(),
        timer_hz: None,
        initrd,
    }
}

/// Reads the machine description from `fdt`, for `board` (chosen from the tree's `compatible`).
///
/// Everything boot needs sits in top-level nodes on the machines supported, so one pass over the
/// root's children answers all of it; only a console UART nested deeper costs a full walk. (Under
/// emulation a walk of QEMU's 7 KiB tree costs a noticeable part of a millisecond.)
pub(super) fn discover(fdt: &Fdt<'static>, board: &Board) -> Platform {
    let mut ram = RegionList::new();
    let mut reserved = RegionList::new();
    let mut devices = GigabyteSet::default();
    let mut chosen = None;
    let mut psci = None;
    let mut timer_hz = None;
    let mut first_pl011 = None;
    fdt.reservations().for_each(|r| reserved.push(r));

    for node in fdt.root().children() {
        if node.property("device_type").and_then(|p| p.as_str()) == Some("memory") {
            for region in node.reg() {
                let region = board.clip_ram(region);
                let end = region.end().min(MAPPED_END);
                ram.push(Region { address: region.address, size: end.saturating_sub(region.address) });
            }
            continue;
        }
        if board.tree_addresses_usable {
            node.reg().for_each(|region| devices.insert(region));
        }
        match node.name() {
            "chosen" => chosen = Some(node),
            "reserved-memory" => node.children().flat_map(|c| c.reg()).for_each(|r| reserved.push(r)),
            _ => {}
        }
        let Some(compatible) = node.property("compatible") else { continue };
        for name in compatible.strings() {
            if name.starts_with("arm,psci-") {
                // PSCI 0.2 or later: 0.1 has no SYSTEM_OFF (and is compatible "arm,psci" alone).
                psci = node.property("method").and_then(|p| p.as_str()).and_then(|method| match method {
                    "hvc" => Some(Conduit::Hvc),
                    "smc" => Some(Conduit::Smc),
                    _ => None,
                });
            } else if name == "arm,armv8-timer" {
                timer_hz = node.property("clock-frequency").and_then(|p| p.as_u64());
            } else if name == "arm,pl011" && first_pl011.is_none() && node.is_enabled() {
                first_pl011 = Some(node);
            }
        }
    }

    let fallback_uart = board.uart as usize;
    let uart = if board.tree_addresses_usable {
        console_uart(fdt, chosen, first_pl011).unwrap_or(fallback_uart)
    } else {
        fallback_uart
    };
    devices.insert(Region { address: uart as u64, size: 0x1000 });
    let psci = psci.filter(|_| board.power_off == PowerOff::Psci);
    let cmdline = match chosen.and_then(|c| c.property("bootargs")) {
        None => Some(""),
        Some(bootargs) => bootargs.as_str(),
    };
    let initrd = chosen.and_then(|c| {
        let start = c.property("linux,initrd-start")?.as_u64()?;
        let end = c.property("linux,initrd-end")?.as_u64()?;
        (end > start).then(|| Region { address: start, size: end - start })
    });
    if let Some(initrd) = initrd {
        reserved.push(initrd);
    }
    Platform { name: machine_name(fdt, board), cmdline, uart, psci, ram, reserved, devices, timer_hz, initrd }
}

/// The machine in words: QEMU's `virt` calls itself `linux,dummy-virt`, which reads badly; other
/// machines by their `model`, else the board's description.
fn machine_name(fdt: &Fdt<'static>, board: &Board) -> &'static str {
    let root = fdt.root();
    let compatible = root.property("compatible").and_then(|p| p.strings().next());
    let model = root.property("model").and_then(|p| p.as_str());
    match compatible {
        Some("linux,dummy-virt") => "qemu-virt",
        _ => model.unwrap_or(board.description),
    }
}

/// The console: the `/chosen/stdout-path` node if it is a PL011, else the first enabled PL011 (at
/// the top level if there is one there, else anywhere).
fn console_uart(fdt: &Fdt<'static>, chosen: Option<Node<'static>>, top_level: Option<Node<'static>>) -> Option<usize> {
    let stdout = chosen
        .and_then(|c| c.property("stdout-path").or_else(|| c.property("linux,stdout-path")))
        .and_then(|p| p.as_str())
        // `serial0:115200n8`: options follow the path after a colon.
        .map(|path| path.split_once(':').map_or(path, |(path, _options)| path))
        .and_then(|path| fdt.find_node(path))
        .filter(|node| node.is_compatible("arm,pl011"));
    let node = stdout.or(top_level).or_else(|| fdt.nodes().find(|n| n.is_compatible("arm,pl011") && n.is_enabled()))?;
    let address = node.reg().next()?.address;
    if address >= MAPPED_END {
        return None;
    }
    usize::try_from(address).ok()
}
