//! The monotonic clock: kvmclock under KVM, the TSC at its CPUID frequency otherwise.
//!
//! kvmclock is KVM's paravirtual clock: the guest gives the hypervisor the physical address of a
//! `pvclock_vcpu_time_info` through an MSR, and the hypervisor keeps a snapshot there from which
//! the guest computes nanoseconds with `rdtsc` and no VM exit. QEMU sets the clock to zero when the
//! VM starts running, so it measures "time since reset", which is what the boot times report.
//!
//! Without kvmclock (QEMU TCG, other hypervisors) the clock is a best effort: the TSC divided by
//! its frequency from CPUID leaf 0x15 or 0x16. That counts from whenever the TSC was reset (under
//! TCG, QEMU's start), and when the CPU reports neither leaf (QEMU's default TCG CPU does not)
//! the clock reads 0 forever. Nothing in the runtime depends on the clock beyond reporting.

use core::arch::x86_64::{__cpuid, _rdtsc};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crate::tsc::{self, PvclockSnapshot};

/// CPUID leaf with the hypervisor's signature in EBX, ECX, EDX.
const CPUID_HYPERVISOR: u32 = 0x4000_0000;
/// CPUID leaf with KVM's paravirtual feature bits in EAX.
const CPUID_KVM_FEATURES: u32 = 0x4000_0001;
/// KVM feature bit: the kvmclock MSRs at 0x4b564d00 and up.
const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;
/// The kvmclock MSR: the physical address of the time info, with bit 0 to enable it.
const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;

const SOURCE_NONE: u8 = 0;
const SOURCE_KVMCLOCK: u8 = 1;
const SOURCE_TSC: u8 = 2;

static SOURCE: AtomicU8 = AtomicU8::new(SOURCE_NONE);
/// The TSC frequency when [`SOURCE`] is `SOURCE_TSC`.
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// `struct pvclock_vcpu_time_info`, written by the hypervisor, read by [`now_ns`].
#[repr(C, align(64))]
struct PvclockTimeInfo {
    version: u32,
    pad0: u32,
    tsc_timestamp: u64,
    system_time: u64,
    tsc_to_system_mul: u32,
    tsc_shift: i8,
    flags: u8,
    pad: [u8; 2],
}

/// The page the hypervisor writes. It lives in `.bss` (zeroed at boot), is aligned so it never
/// straddles a page, and is only ever read volatilely.
struct SharedTimeInfo(UnsafeCell<PvclockTimeInfo>);

// SAFETY: the only writer is the hypervisor; the guest only reads, volatilely, under the version
// protocol, and it runs on one CPU.
unsafe impl Sync for SharedTimeInfo {}

static TIME_INFO: SharedTimeInfo = SharedTimeInfo(UnsafeCell::new(PvclockTimeInfo {
    version: 0,
    pad0: 0,
    tsc_timestamp: 0,
    system_time: 0,
    tsc_to_system_mul: 0,
    tsc_shift: 0,
    flags: 0,
    pad: [0; 2],
}));

/// What the clock runs on, in words, for the boot banner.
pub(super) fn hypervisor() -> Hypervisor {
    // Leaf 0x40000000 is reserved for hypervisors; on bare metal it reads as zeros or as another
    // leaf's values, which match no signature.
    let leaf = __cpuid(CPUID_HYPERVISOR);
    let mut signature = [0u8; 12];
    signature[0..4].copy_from_slice(&leaf.ebx.to_le_bytes());
    signature[4..8].copy_from_slice(&leaf.ecx.to_le_bytes());
    signature[8..12].copy_from_slice(&leaf.edx.to_le_bytes());
    match &signature {
        b"KVMKVMKVM\0\0\0" => Hypervisor::Kvm,
        b"TCGTCGTCGTCG" => Hypervisor::Tcg,
        _ => Hypervisor::Other,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Hypervisor {
    Kvm,
    Tcg,
    Other,
}

/// Starts kvmclock if KVM offers it, else the TSC fallback. Called once, early in boot.
pub(super) fn init(hypervisor: Hypervisor) {
    // Under KVM this leaf holds the paravirtual feature bits; it is read only then.
    let kvm_features = if hypervisor == Hypervisor::Kvm { __cpuid(CPUID_KVM_FEATURES).eax } else { 0 };
    if kvm_features & KVM_FEATURE_CLOCKSOURCE2 != 0 {
        let address = TIME_INFO.0.get() as u64;
        // SAFETY: KVM advertised this MSR. It makes the hypervisor write the time info at
        // `address`, a static the runtime owns for the rest of its life, identity-mapped so the
        // virtual address is the physical one; bit 0 enables the updates.
        unsafe { wrmsr(MSR_KVM_SYSTEM_TIME_NEW, address | 1) };
        SOURCE.store(SOURCE_KVMCLOCK, Ordering::Relaxed);
        return;
    }
    // Leaves 0x15 and 0x16 are read only when leaf 0 says they exist.
    let max_leaf = __cpuid(0).eax;
    let leaf_15 = if max_leaf >= 0x15 {
        let r = __cpuid(0x15);
        [r.eax, r.ebx, r.ecx]
    } else {
        [0; 3]
    };
    let leaf_16 = if max_leaf >= 0x16 { __cpuid(0x16).eax } else { 0 };
    if let Some(hz) = tsc::cpuid_frequency_hz(leaf_15, leaf_16) {
        TSC_HZ.store(hz, Ordering::Relaxed);
        SOURCE.store(SOURCE_TSC, Ordering::Relaxed);
    }
}

/// Whether the clock is kvmclock, whose zero KVM's wall clock is given at (see `kvm_wall`).
pub(super) fn is_kvmclock() -> bool {
    SOURCE.load(Ordering::Relaxed) == SOURCE_KVMCLOCK
}

/// Nanoseconds since reset (see the module docs for what "reset" means without kvmclock).
pub(crate) fn now_ns() -> u64 {
    nanos_at(rdtsc())
}

/// The clock at an earlier (or current) TSC reading, such as the one the boot code took at the
/// first instruction.
pub(super) fn nanos_at(tsc_value: u64) -> u64 {
    match SOURCE.load(Ordering::Relaxed) {
        SOURCE_KVMCLOCK => kvmclock_snapshot().nanos_at(tsc_value),
        SOURCE_TSC => tsc::ticks_to_nanos(tsc_value, TSC_HZ.load(Ordering::Relaxed)),
        _ => 0,
    }
}

/// The TSC value at which the clock reads `nanos` (for a TSC-deadline timer); `None` without a
/// clock.
#[cfg(feature = "virtio")]
pub(super) fn tsc_at(nanos: u64) -> Option<u64> {
    match SOURCE.load(Ordering::Relaxed) {
        SOURCE_KVMCLOCK => Some(kvmclock_snapshot().tsc_at(nanos)),
        SOURCE_TSC => Some(tsc::nanos_to_ticks(nanos, TSC_HZ.load(Ordering::Relaxed))),
        _ => None,
    }
}

/// The current TSC.
#[cfg(feature = "virtio")]
pub(super) fn tsc_now() -> u64 {
    rdtsc()
}

fn kvmclock_snapshot() -> PvclockSnapshot {
    let info = TIME_INFO.0.get();
    tsc::read_consistent(
        // SAFETY: `info` points to a live, aligned static that only the hypervisor writes; the
        // read is volatile because that write can happen at any time.
        || unsafe { (&raw const (*info).version).read_volatile() },
        // SAFETY: as above; a read torn by a concurrent update is detected by the version check
        // in `read_consistent` and retried.
        || unsafe {
            PvclockSnapshot {
                tsc_timestamp: (&raw const (*info).tsc_timestamp).read_volatile(),
                system_time: (&raw const (*info).system_time).read_volatile(),
                tsc_to_system_mul: (&raw const (*info).tsc_to_system_mul).read_volatile(),
                tsc_shift: (&raw const (*info).tsc_shift).read_volatile(),
                flags: (&raw const (*info).flags).read_volatile(),
            }
        },
    )
}

fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` only reads the time-stamp counter; the boot code leaves CR4.TSD clear.
    unsafe { _rdtsc() }
}

/// Writes a model-specific register.
///
/// # Safety
/// The MSR must exist and the value must be one the caller is entitled to set.
pub(super) unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller vouches for the MSR and value; `wrmsr` touches nothing else.
    unsafe {
        core::arch::asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags)
        )
    };
}
