//! Where everything goes in guest RAM (see tender-abi's memory table), and the boot info that tells
//! the guest. Pure: no KVM, no memory; the VM setup writes what this plans.

use std::ops::Range;

use tender_abi::{
    ABI_VERSION, BOOT_INFO_MAGIC, BOOT_INFO_OFFSET, BootInfo, CMDLINE_MAX, FLAG_BLOCK, FLAG_NET, PAGE_SIZE,
    TENDER_AREA_END,
};

/// Why an image does not fit the RAM it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "the kernel occupies {start:#x}..{end:#x}, which is not inside guest RAM {ram_start:#x}..{ram_end:#x} above the tender's area (RAM + {TENDER_AREA_END:#x})"
    )]
    KernelOutside { start: u64, end: u64, ram_start: u64, ram_end: u64 },
    #[error(
        "the data part ({data_len} bytes) does not fit in RAM above the kernel (which ends at {kernel_end:#x}; RAM ends at {ram_end:#x}): give the guest more memory with --mem"
    )]
    DataDoesNotFit { data_len: u64, kernel_end: u64, ram_end: u64 },
    #[error("the command line is {len} bytes, more than the {CMDLINE_MAX} the tender passes")]
    CommandLineTooLong { len: usize },
}

/// Where the kernel, data part and free RAM lie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ram_base: u64,
    pub ram_size: u64,
    /// Where the data part goes (page-aligned, near the top of RAM) and its length; 0, 0 without one.
    pub data_addr: u64,
    pub data_len: u64,
    /// The heap the guest may use: above the kernel, below the data part.
    pub free: Range<u64>,
}

/// Plans RAM `[ram_base, ram_base + ram_size)` for a kernel occupying `kernel` (physical, from its
/// loadable segments) and a data part of `data_len` bytes.
pub fn plan(ram_base: u64, ram_size: u64, kernel: Range<u64>, data_len: u64) -> Result<Plan, LayoutError> {
    let ram_end = ram_base.saturating_add(ram_size);
    let lowest = ram_base + TENDER_AREA_END;
    if kernel.start < lowest || kernel.end > ram_end || kernel.start > kernel.end {
        return Err(LayoutError::KernelOutside { start: kernel.start, end: kernel.end, ram_start: ram_base, ram_end });
    }
    let kernel_end = align_up(kernel.end);
    let too_big = LayoutError::DataDoesNotFit { data_len, kernel_end: kernel.end, ram_end };
    let data_addr = if data_len == 0 {
        0
    } else {
        let addr = ram_end.checked_sub(data_len).ok_or(too_big.clone())? & !(PAGE_SIZE - 1);
        if addr < kernel_end {
            return Err(too_big);
        }
        addr
    };
    let free_end = if data_len == 0 { ram_end } else { data_addr };
    Ok(Plan { ram_base, ram_size, data_addr, data_len, free: kernel_end..free_end })
}

fn align_up(addr: u64) -> u64 {
    addr.saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

/// The devices the guest is told about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Devices {
    pub net_mac: Option<[u8; 6]>,
    pub block_sectors: Option<u64>,
}

/// What the guest needs to read its clock without an exit (see `BootInfo::tsc_at_creation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestClock {
    pub tsc_khz: u64,
    pub tsc_at_creation: u64,
    /// The host's wall clock when the guest's clock read zero (see `BootInfo::wall_clock_at_creation_ns`).
    pub wall_clock_at_creation_ns: u64,
}

/// The host's wall clock now, in nanoseconds since the Unix epoch; 0 if the host's clock is set
/// before 1970 or past 2554 (the guest then stays unsynchronised rather than wrong).
pub fn host_wall_clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|since| u64::try_from(since.as_nanos()).ok())
        .unwrap_or(0)
}

/// The guest-physical address of the boot info (and the command line right after it).
pub fn boot_info_addr(ram_base: u64) -> u64 {
    ram_base + BOOT_INFO_OFFSET
}

/// The boot info for `plan`, a command line of `cmdline_len` bytes and `devices`.
pub fn boot_info(plan: &Plan, cmdline_len: usize, clock: GuestClock, devices: Devices) -> BootInfo {
    let mut flags = 0;
    if devices.net_mac.is_some() {
        flags |= FLAG_NET;
    }
    if devices.block_sectors.is_some() {
        flags |= FLAG_BLOCK;
    }
    BootInfo {
        magic: BOOT_INFO_MAGIC,
        abi_version: ABI_VERSION,
        flags,
        ram_base: plan.ram_base,
        ram_size: plan.ram_size,
        free_start: plan.free.start,
        free_end: plan.free.end,
        cmdline_addr: boot_info_addr(plan.ram_base) + size_of::<BootInfo>() as u64,
        cmdline_len: cmdline_len as u64,
        data_addr: plan.data_addr,
        data_len: plan.data_len,
        tsc_khz: clock.tsc_khz,
        net_mac: devices.net_mac.unwrap_or_default(),
        _reserved: [0; 2],
        block_sectors: devices.block_sectors.unwrap_or(0),
        tsc_at_creation: clock.tsc_at_creation,
        wall_clock_at_creation_ns: clock.wall_clock_at_creation_ns,
    }
}

/// Joins the appliance's arguments into its command line the way the QEMU launchers do (an argument
/// that is empty or holds whitespace is double-quoted), so `runtime::args::split` gives them back.
pub fn command_line<S: AsRef<str>>(args: &[S]) -> Result<String, LayoutError> {
    let line = args
        .iter()
        .map(|arg| {
            let arg = arg.as_ref();
            if arg.is_empty() || arg.chars().any(|c| c.is_ascii_whitespace()) {
                format!("\"{arg}\"")
            } else {
                arg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    if line.len() as u64 > CMDLINE_MAX {
        return Err(LayoutError::CommandLineTooLong { len: line.len() });
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn data_goes_page_aligned_near_the_top_and_the_heap_between() {
        let plan = plan(0, 16 * MIB, MIB..MIB + 0x1_2345, 10_000).expect("fits");
        assert_eq!(plan.data_addr, 16 * MIB - 12_288, "10000 bytes rounded down to a page boundary");
        assert!(plan.data_addr + plan.data_len <= 16 * MIB);
        assert_eq!(plan.free, MIB + 0x1_3000..plan.data_addr);
    }

    #[test]
    fn without_data_the_heap_runs_to_the_end() {
        let plan = plan(0x4000_0000, 16 * MIB, 0x4020_0000..0x4021_0000, 0).expect("fits");
        assert_eq!((plan.data_addr, plan.data_len), (0, 0));
        assert_eq!(plan.free, 0x4021_0000..0x4000_0000 + 16 * MIB);
    }

    #[test]
    fn kernels_outside_ram_or_over_the_tender_area_are_refused() {
        assert!(matches!(plan(0, 16 * MIB, 0x1000..0x9000, 0), Err(LayoutError::KernelOutside { .. })));
        assert!(matches!(plan(0, 16 * MIB, MIB..17 * MIB, 0), Err(LayoutError::KernelOutside { .. })));
        assert!(matches!(plan(0x4000_0000, 16 * MIB, MIB..2 * MIB, 0), Err(LayoutError::KernelOutside { .. })));
    }

    #[test]
    fn data_that_does_not_fit_is_refused() {
        assert!(matches!(plan(0, 4 * MIB, MIB..3 * MIB, 2 * MIB), Err(LayoutError::DataDoesNotFit { .. })));
        assert!(matches!(plan(0, 4 * MIB, MIB..2 * MIB, u64::MAX), Err(LayoutError::DataDoesNotFit { .. })));
        assert!(plan(0, 4 * MIB, MIB..2 * MIB, 2 * MIB).is_ok(), "exactly fits");
    }

    #[test]
    fn boot_info_describes_the_plan() {
        let plan = plan(0, 16 * MIB, MIB..2 * MIB, 4096).expect("fits");
        let devices = Devices { net_mac: Some([2, 0, 0, 0, 0, 1]), block_sectors: None };
        let info = boot_info(
            &plan,
            11,
            GuestClock { tsc_khz: 2_400_000, tsc_at_creation: 7, wall_clock_at_creation_ns: 1_800_000_000_000_000_000 },
            devices,
        );
        assert_eq!(info.magic, BOOT_INFO_MAGIC);
        assert_eq!(info.flags, FLAG_NET);
        assert_eq!(info.cmdline_addr, BOOT_INFO_OFFSET + 120);
        assert_eq!((info.tsc_khz, info.tsc_at_creation), (2_400_000, 7));
        assert_eq!(info.wall_clock_at_creation_ns, 1_800_000_000_000_000_000);
        assert_eq!((info.data_addr, info.data_len), (16 * MIB - 4096, 4096));
        assert_eq!((info.free_start, info.free_end), (2 * MIB, 16 * MIB - 4096));
        assert_eq!(info.net_mac, [2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn command_lines_quote_like_the_qemu_launchers() {
        assert_eq!(command_line(&["hello", "edge world", ""]).expect("short"), r#"hello "edge world" """#);
        assert_eq!(command_line::<&str>(&[]).expect("empty"), "");
        let long = vec!["x".repeat(100); 30];
        assert!(matches!(command_line(&long), Err(LayoutError::CommandLineTooLong { .. })));
    }
}
