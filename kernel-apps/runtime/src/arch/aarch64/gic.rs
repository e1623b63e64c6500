//! The Arm Generic Interrupt Controller: GICv2 (GIC-400, QEMU `virt`'s default) and GICv3.
//!
//! The runtime uses interrupts only to wake the CPU from `wfi`: PSTATE.I stays set, so no
//! interrupt is ever taken as an exception, and `wfi` still returns when one is pending (Arm ARM
//! D1.16.2, "WFI wake-up events"). After waking, [`acknowledge`] takes the pending interrupt (so
//! its pending state clears and it stops waking the CPU) and the event loop services the devices;
//! [`end`] completes it before the next sleep, by which time the device has lowered its line. A
//! level-sensitive interrupt whose line is still high then becomes pending again and wakes the
//! next `wfi` at once, so nothing is lost.
//!
//! All interrupts get the same priority, so one acknowledged interrupt masks the others until it
//! is ended: each wake takes at most one, and another pending one wakes the next sleep.
//!
//! Owned: the distributor's configuration of the interrupts the runtime enables, this CPU's
//! interface (GICv2) or redistributor and system-register interface (GICv3).
//!
//! # Not supported
//! - GICv3 entered at EL2 without firmware having enabled the EL1 system-register interface
//!   (ICC_SRE_EL2.Enable); QEMU and KVM guests enter at EL1, where it is usable.
//! - Interrupt routing to other CPUs, priorities, preemption, SGIs, LPIs and the ITS.

use core::{
    arch::asm,
    ptr,
    sync::atomic::{AtomicU8, AtomicUsize, Ordering},
};

use crate::devicetree::{Gic as GicDescription, GicVersion};

// Distributor registers (GICv2 and GICv3).
const GICD_CTLR: usize = 0x000;
const GICD_ISENABLER: usize = 0x100;
const GICD_IGROUPR: usize = 0x080;
const GICD_IPRIORITYR: usize = 0x400;
const GICD_ITARGETSR: usize = 0x800;
const GICD_ICFGR: usize = 0xc00;
const GICD_IROUTER: usize = 0x6000;
/// GICv3 GICD_CTLR: register write pending.
const GICD_CTLR_RWP: u32 = 1 << 31;

// GICv2 CPU interface registers.
const GICC_CTLR: usize = 0x00;
const GICC_PMR: usize = 0x04;
const GICC_BPR: usize = 0x08;
const GICC_IAR: usize = 0x0c;
const GICC_EOIR: usize = 0x10;

// GICv3 redistributor registers: RD_base frame, then the SGI_base frame 64 KiB above it.
const GICR_TYPER: usize = 0x08;
const GICR_WAKER: usize = 0x14;
const GICR_SGI_BASE: usize = 0x1_0000;
const GICR_TYPER_LAST: u64 = 1 << 4;
const GICR_TYPER_VLPIS: u64 = 1 << 1;
const GICR_WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const GICR_WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;

/// The priority of every interrupt the runtime enables: the middle of the range, below the
/// priority mask of 0xff.
const PRIORITY: u8 = 0x80;
/// INTIDs from here on are special (1020–1023: spurious and friends) and are never acknowledged.
const SPECIAL_INTIDS: u32 = 1020;
/// The first shared peripheral interrupt; below are the CPU's own SGIs and PPIs.
const FIRST_SPI: u32 = 32;

const VERSION_NONE: u8 = 0;
const VERSION_2: u8 = 2;
const VERSION_3: u8 = 3;

/// Which GIC [`init`] found (0 until then).
static VERSION: AtomicU8 = AtomicU8::new(VERSION_NONE);
static DISTRIBUTOR: AtomicUsize = AtomicUsize::new(0);
/// GICv2: the CPU interface. GICv3: this CPU's redistributor (RD_base).
static CPU: AtomicUsize = AtomicUsize::new(0);

fn read32(address: usize) -> u32 {
    // SAFETY: callers pass GIC registers inside the regions the device tree gave [`init`], which
    // boot mapped as Device memory for the appliance's lifetime; the registers are 32-bit aligned.
    unsafe { ptr::read_volatile(address as *const u32) }
}

fn write32(address: usize, value: u32) {
    // SAFETY: as in `read32`.
    unsafe { ptr::write_volatile(address as *mut u32, value) }
}

fn read64(address: usize) -> u64 {
    // SAFETY: as in `read32`; GICR_TYPER is a 64-bit register, 64-bit aligned.
    unsafe { ptr::read_volatile(address as *const u64) }
}

fn write64(address: usize, value: u64) {
    // SAFETY: as in `read32`; GICD_IROUTER<n> are 64-bit registers, 64-bit aligned.
    unsafe { ptr::write_volatile(address as *mut u64, value) }
}

/// Sets the byte for `intid` in a byte-per-interrupt register array, by word read-modify-write
/// (GICv3 allows byte accesses to these, but GICv2 implementations need not).
fn write_byte_field(base: usize, intid: u32, value: u8) {
    let word = base + (intid as usize & !3);
    let shift = (intid % 4) * 8;
    let current = read32(word);
    write32(word, (current & !(0xff << shift)) | (u32::from(value) << shift));
}

/// Sets `bits` wide field `intid` of a bit-field register array to `value`.
fn write_bit_field(base: usize, intid: u32, bits: u32, value: u32) {
    let per_word = 32 / bits;
    let word = base + (intid / per_word) as usize * 4;
    let shift = (intid % per_word) * bits;
    let mask = ((1u32 << bits) - 1) << shift;
    let current = read32(word);
    write32(word, (current & !mask) | ((value << shift) & mask));
}

/// This CPU's affinity (MPIDR_EL1 Aff3.Aff2.Aff1.Aff0) packed as GICR_TYPER and GICD_IROUTER
/// hold it: Aff3 in bits 39:32 of IROUTER and 31:24 of TYPER[63:32].
fn affinity() -> (u32, u64) {
    let mpidr = read_sysreg!("mpidr_el1");
    let aff0_2 = mpidr & 0xff_ffff;
    let aff3 = (mpidr >> 32) & 0xff;
    (((aff3 << 24) | aff0_2) as u32, (aff3 << 32) | aff0_2)
}

/// Why the interrupt controller cannot be used.
#[derive(Clone, Copy, Debug)]
pub(super) enum GicError {
    /// No redistributor in the region matches this CPU's affinity.
    NoRedistributor,
    /// The redistributor did not wake up.
    RedistributorAsleep,
}

/// Brings up the distributor and this CPU's interface. Idempotent; called before the first
/// interrupt is enabled.
pub(super) fn init(gic: &GicDescription) -> Result<(), GicError> {
    if VERSION.load(Ordering::Acquire) != VERSION_NONE {
        return Ok(());
    }
    let distributor = gic.distributor.address as usize;
    let cpu = gic.cpu.address as usize;
    match gic.version {
        GicVersion::V2 => {
            // Enable both groups' forwarding in the distributor and signalling in the interface;
            // without the security extensions (QEMU, and every non-secure view) bit 0 is the one
            // that matters, and bit 1 is ignored or enables group 1.
            write32(distributor + GICD_CTLR, 0b11);
            write32(cpu + GICC_PMR, 0xff);
            write32(cpu + GICC_BPR, 0);
            write32(cpu + GICC_CTLR, 0b11);
            CPU.store(cpu, Ordering::Relaxed);
        }
        GicVersion::V3 => {
            // Affinity routing and both groups (bits 4, 1, 0 in either security view).
            write32(distributor + GICD_CTLR, 0x13);
            wait_rwp(distributor);
            let redistributor = find_redistributor(cpu, gic.cpu.size as usize).ok_or(GicError::NoRedistributor)?;
            let waker = read32(redistributor + GICR_WAKER);
            write32(redistributor + GICR_WAKER, waker & !GICR_WAKER_PROCESSOR_SLEEP);
            let mut awake = false;
            for _ in 0..1_000_000 {
                if read32(redistributor + GICR_WAKER) & GICR_WAKER_CHILDREN_ASLEEP == 0 {
                    awake = true;
                    break;
                }
                core::hint::spin_loop();
            }
            if !awake {
                return Err(GicError::RedistributorAsleep);
            }
            // SAFETY: the ICC_* system registers exist on a GICv3 CPU; enabling the system
            // register interface (SRE), opening the priority mask and enabling group 1 only
            // affect interrupt signalling, and interrupts stay masked in PSTATE.
            unsafe {
                asm!(
                    "mrs {tmp}, S3_0_C12_C12_5", // ICC_SRE_EL1
                    "orr {tmp}, {tmp}, #1",
                    "msr S3_0_C12_C12_5, {tmp}",
                    "isb",
                    "msr S3_0_C4_C6_0, {pmr}",   // ICC_PMR_EL1
                    "msr S3_0_C12_C12_3, xzr",   // ICC_BPR1_EL1
                    "msr S3_0_C12_C12_7, {one}", // ICC_IGRPEN1_EL1
                    "isb",
                    tmp = out(reg) _,
                    pmr = in(reg) 0xffu64,
                    one = in(reg) 1u64,
                    options(nostack, preserves_flags),
                )
            };
            CPU.store(redistributor, Ordering::Relaxed);
        }
    }
    DISTRIBUTOR.store(distributor, Ordering::Relaxed);
    let version = match gic.version {
        GicVersion::V2 => VERSION_2,
        GicVersion::V3 => VERSION_3,
    };
    VERSION.store(version, Ordering::Release);
    Ok(())
}

/// Waits for a GICv3 distributor write to take effect (bounded: a broken GIC must not hang boot).
fn wait_rwp(distributor: usize) {
    for _ in 0..1_000_000 {
        if read32(distributor + GICD_CTLR) & GICD_CTLR_RWP == 0 {
            return;
        }
        core::hint::spin_loop();
    }
}

/// The redistributor frame of this CPU: frames follow each other (128 KiB each, 256 KiB with
/// virtual LPIs) until one has GICR_TYPER.Last set.
fn find_redistributor(base: usize, size: usize) -> Option<usize> {
    let (affinity, _) = affinity();
    let mut frame = base;
    while frame < base + size {
        let typer = read64(frame + GICR_TYPER);
        if (typer >> 32) as u32 == affinity {
            return Some(frame);
        }
        if typer & GICR_TYPER_LAST != 0 {
            return None;
        }
        frame += if typer & GICR_TYPER_VLPIS != 0 { 0x4_0000 } else { 0x2_0000 };
    }
    None
}

/// Routes `intid` to this CPU and enables it, level-sensitive or edge-triggered. Does nothing
/// before [`init`].
pub(super) fn enable(intid: u32, level: bool) {
    let distributor = DISTRIBUTOR.load(Ordering::Relaxed);
    let cpu = CPU.load(Ordering::Relaxed);
    let trigger = if level { 0b00 } else { 0b10 };
    match VERSION.load(Ordering::Acquire) {
        VERSION_2 => {
            write_byte_field(distributor + GICD_IPRIORITYR, intid, PRIORITY);
            if intid >= FIRST_SPI {
                // ITARGETSR0..7 read as this CPU's own target mask (GICv2 §4.3.12).
                let own = (read32(distributor + GICD_ITARGETSR) & 0xff) as u8;
                write_byte_field(distributor + GICD_ITARGETSR, intid, own.max(1));
                write_bit_field(distributor + GICD_ICFGR, intid, 2, trigger);
            }
            write32(distributor + GICD_ISENABLER + (intid / 32) as usize * 4, 1 << (intid % 32));
        }
        VERSION_3 => {
            if intid >= FIRST_SPI {
                write_bit_field(distributor + GICD_IGROUPR, intid, 1, 1);
                write_byte_field(distributor + GICD_IPRIORITYR, intid, PRIORITY);
                write_bit_field(distributor + GICD_ICFGR, intid, 2, trigger);
                write64(distributor + GICD_IROUTER + intid as usize * 8, affinity().1);
                write32(distributor + GICD_ISENABLER + (intid / 32) as usize * 4, 1 << (intid % 32));
                wait_rwp(distributor);
            } else {
                // SGIs and PPIs are configured in this CPU's redistributor (SGI_base frame).
                let sgi = cpu + GICR_SGI_BASE;
                write_bit_field(sgi + GICD_IGROUPR, intid, 1, 1);
                write_byte_field(sgi + GICD_IPRIORITYR, intid, PRIORITY);
                write32(sgi + GICD_ISENABLER, 1 << intid);
            }
        }
        _ => {}
    }
}

/// Takes the highest-priority pending interrupt, making it active; `None` if none is pending.
pub(super) fn acknowledge() -> Option<u32> {
    let intid = match VERSION.load(Ordering::Acquire) {
        VERSION_2 => read32(CPU.load(Ordering::Relaxed) + GICC_IAR) & 0x3ff,
        VERSION_3 => {
            let intid: u64;
            // SAFETY: reading ICC_IAR1_EL1 acknowledges the interrupt it returns, which is what
            // this function is for; it touches no memory.
            unsafe { asm!("mrs {}, S3_0_C12_C12_0", out(reg) intid, options(nomem, nostack, preserves_flags)) };
            intid as u32 & 0xff_ffff
        }
        _ => return None,
    };
    (intid < SPECIAL_INTIDS).then_some(intid)
}

/// Completes an interrupt taken by [`acknowledge`] (priority drop and deactivation).
pub(super) fn end(intid: u32) {
    match VERSION.load(Ordering::Acquire) {
        VERSION_2 => write32(CPU.load(Ordering::Relaxed) + GICC_EOIR, intid),
        VERSION_3 => {
            // SAFETY: writing ICC_EOIR1_EL1 with an INTID this CPU acknowledged completes it; it
            // touches no memory.
            unsafe {
                asm!("msr S3_0_C12_C12_1, {}", in(reg) u64::from(intid), options(nomem, nostack, preserves_flags))
            };
        }
        _ => {}
    }
}
