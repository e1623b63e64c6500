//! Interrupt-driven sleep on x86_64: the local APIC, its timer, the IOAPIC, and `sti; hlt`.
//!
//! [`wait`] is the whole of the event loop's waiting (see [`crate::event`]). Unlike the GIC, the
//! local APIC only lets `hlt` end for an interrupt the CPU actually takes, so interrupts are
//! enabled for exactly one instruction: `sti; hlt; cli` (the `sti` shadow guarantees that an
//! interrupt already pending is taken *after* `hlt` starts, never before it, so no wake-up is lost).
//! The interrupt's handler (in [`super::idt`]) only counts it and returns; the count is used here to
//! send the local APIC its end-of-interrupt **before the next sleep**, by which time the event loop
//! has serviced the device. Deferring the EOI is what makes level-triggered IOAPIC lines work
//! without masking: the IOAPIC delivers a level interrupt again only after the EOI, and only if the
//! line is still high, that is, if the device still wants attention.
//!
//! Owned: the local APIC (x2APIC mode when the CPU has it, else the memory-mapped xAPIC at its
//! IA32_APIC_BASE address), its timer (TSC-deadline mode when the CPU has it, else one-shot mode
//! calibrated against the clock), and the IOAPIC redirection entries of the lines the runtime
//! enables. Every access to these is a VM exit under KVM, so [`wait`] touches them as little as it
//! can: one EOI per interrupt taken, and the TSC-deadline timer only when the deadline changes
//! (the calibrated one-shot timer may fire a little early, so it is armed on every wait).
//!
//! # Privilege
//! The appliance runs at CPL 3 ([`super::user`]), where `hlt` and the MSRs are out of reach:
//! bringing the local APIC up runs at CPL 0 through the gate ([`user::privileged`], once), and
//! each sleep is one trip through the gate's wait path ([`user::halt`]), which sends the x2APIC
//! EOIs, arms the timer and halts, in a dozen instructions. The IOAPIC and an xAPIC's registers
//! are memory-mapped and user-accessible, so those are written at CPL 3.
//!
//! # Not supported
//! - More than one IOAPIC, or one elsewhere than 0xfec0_0000 (no ACPI/MP-table parsing): QEMU
//!   `microvm` with `ioapic2=off` (the default without ACPI) and Firecracker put it there.
//! - The 8259 PIC: it must be absent or masked (`microvm,pic=off`).

use core::{
    arch::{asm, x86_64::__cpuid},
    ptr,
    sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering},
};

use super::{clock, idt, user};

/// The IOAPIC's registers on QEMU `microvm` and Firecracker (and on PCs, by convention).
const IOAPIC_BASE: usize = 0xfec0_0000;
const IOAPIC_REGSEL: usize = 0x00;
const IOAPIC_WINDOW: usize = 0x10;
/// The IOAPIC version register: bits 23:16 are the highest redirection entry.
const IOAPIC_VERSION: u32 = 0x01;
const IOAPIC_REDIRECTION: u32 = 0x10;
/// Redirection entry bits: level-triggered (15); active-high polarity and fixed delivery to a
/// physical APIC id are all zeros.
const REDIRECT_LEVEL: u32 = 1 << 15;

/// The vector of IOAPIC line `n` is `DEVICE_VECTOR_BASE + n`; see [`idt`] for the stubs.
const DEVICE_VECTOR_BASE: u8 = idt::DEVICE_VECTORS.start;
/// The timer's vector: above the devices' priority class.
const TIMER_VECTOR: u8 = idt::TIMER_VECTOR;
/// The spurious-interrupt vector; its stub returns without counting (it needs no EOI).
const SPURIOUS_VECTOR: u8 = idt::SPURIOUS_VECTOR;

const MSR_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const MSR_TSC_DEADLINE: u32 = 0x6e0;

// Local APIC registers, as xAPIC offsets; the x2APIC MSR is 0x800 + offset / 16.
const LAPIC_ID: u32 = 0x20;
const LAPIC_TPR: u32 = 0x80;
const LAPIC_EOI: u32 = 0xb0;
const LAPIC_SVR: u32 = 0xf0;
const LAPIC_LVT_TIMER: u32 = 0x320;
const LAPIC_TIMER_INITIAL: u32 = 0x380;
const LAPIC_TIMER_CURRENT: u32 = 0x390;
const LAPIC_TIMER_DIVIDE: u32 = 0x3e0;
const SVR_ENABLE: u32 = 1 << 8;
const LVT_TSC_DEADLINE: u32 = 0b10 << 17;
/// Divide configuration 0b1011: the timer counts at the APIC bus frequency itself.
const DIVIDE_BY_1: u32 = 0b1011;

/// CPUID.1:ECX bits.
const CPUID_X2APIC: u32 = 1 << 21;
const CPUID_TSC_DEADLINE: u32 = 1 << 24;

const STATE_DOWN: u8 = 0;
const STATE_UP: u8 = 1;
const STATE_BROKEN: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(STATE_DOWN);
static X2APIC: AtomicBool = AtomicBool::new(false);
/// The xAPIC's register base, when not in x2APIC mode.
static XAPIC_BASE: AtomicU64 = AtomicU64::new(0);
static TSC_DEADLINE: AtomicBool = AtomicBool::new(false);
/// One-shot mode: APIC timer ticks per microsecond, from calibration.
static TICKS_PER_US: AtomicU64 = AtomicU64::new(0);
/// The deadline (ns) the TSC-deadline timer was last armed for: it is not re-armed for the same
/// one (each arming is a VM exit) until it has passed.
static ARMED_FOR: AtomicU64 = AtomicU64::new(0);
/// This CPU's APIC id, for the IOAPIC's destination field.
static APIC_ID: AtomicU32 = AtomicU32::new(0);

/// Reads a model-specific register.
///
/// # Safety
/// The MSR must exist on this CPU.
unsafe fn rdmsr(msr: u32) -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: the caller vouches for the MSR; `rdmsr` has no other effect.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") low, out("edx") high, options(nomem, nostack, preserves_flags)) };
    (u64::from(high) << 32) | u64::from(low)
}

/// Writes a model-specific register.
///
/// # Safety
/// The MSR must exist and the value must be one the runtime is entitled to set.
unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller vouches for the MSR and the value.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags))
    };
}

fn lapic_read(register: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: in x2APIC mode every local APIC register the runtime uses is an MSR at
        // 0x800 + offset / 16; reading them has no side effects.
        unsafe { rdmsr(0x800 + register / 16) as u32 }
    } else {
        let address = XAPIC_BASE.load(Ordering::Relaxed) as usize + register as usize;
        // SAFETY: the xAPIC page (IA32_APIC_BASE) lies in the uncached 3–4 GiB window the boot
        // code maps; its registers are 32-bit aligned, and reading these has no side effects.
        unsafe { ptr::read_volatile(address as *const u32) }
    }
}

fn lapic_write(register: u32, value: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: as in `lapic_read`; the runtime owns the local APIC.
        unsafe { wrmsr(0x800 + register / 16, u64::from(value)) }
    } else {
        let address = XAPIC_BASE.load(Ordering::Relaxed) as usize + register as usize;
        // SAFETY: as in `lapic_read`; the runtime owns the local APIC.
        unsafe { ptr::write_volatile(address as *mut u32, value) }
    }
}

fn ioapic_read(register: u32) -> u32 {
    // SAFETY: the IOAPIC's two registers lie in the uncached 3–4 GiB window the boot code maps;
    // selecting a register and reading it through the window has no other effect. One CPU runs,
    // with interrupts disabled, so the select-then-access pair is never interleaved.
    unsafe {
        ptr::write_volatile((IOAPIC_BASE + IOAPIC_REGSEL) as *mut u32, register);
        ptr::read_volatile((IOAPIC_BASE + IOAPIC_WINDOW) as *const u32)
    }
}

fn ioapic_write(register: u32, value: u32) {
    // SAFETY: as in `ioapic_read`; the runtime owns the redirection entries it writes.
    unsafe {
        ptr::write_volatile((IOAPIC_BASE + IOAPIC_REGSEL) as *mut u32, register);
        ptr::write_volatile((IOAPIC_BASE + IOAPIC_WINDOW) as *mut u32, value);
    }
}

/// Brings up the local APIC and its timer on first use; whether interrupts can wake `hlt`.
fn ready() -> bool {
    if STATE.load(Ordering::Acquire) == STATE_DOWN {
        user::privileged(bring_up, 0);
    }
    STATE.load(Ordering::Acquire) == STATE_UP
}

/// Enables the local APIC and its timer; at CPL 0 (through the gate), once.
extern "C" fn bring_up(_: u64) {
    let features = __cpuid(1).ecx;
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU.
    let base = unsafe { rdmsr(MSR_APIC_BASE) };
    if features & CPUID_X2APIC != 0 {
        // SAFETY: the CPU has x2APIC mode; enabling the APIC, then x2APIC mode (the SDM allows
        // only that order of transitions), only changes how the local APIC is reached, and
        // nothing else in the runtime uses the local APIC.
        unsafe {
            wrmsr(MSR_APIC_BASE, base | APIC_BASE_ENABLE);
            wrmsr(MSR_APIC_BASE, base | APIC_BASE_ENABLE | APIC_BASE_X2APIC);
        }
        X2APIC.store(true, Ordering::Relaxed);
    } else {
        // SAFETY: as above, enabling the APIC in xAPIC mode at its current base.
        unsafe { wrmsr(MSR_APIC_BASE, base | APIC_BASE_ENABLE) };
        XAPIC_BASE.store(base & 0xf_ffff_f000, Ordering::Relaxed);
        if base & 0xf_ffff_f000 < 0xc000_0000 || base & 0xf_ffff_f000 >= 1 << 32 {
            // Outside the uncached window the boot code maps for devices.
            STATE.store(STATE_BROKEN, Ordering::Release);
            crate::println!(
                "mast: the local APIC is at {base:#x}, outside the device window; polling instead of sleeping"
            );
            return;
        }
    }
    let id = lapic_read(LAPIC_ID);
    APIC_ID.store(if X2APIC.load(Ordering::Relaxed) { id } else { id >> 24 }, Ordering::Relaxed);
    lapic_write(LAPIC_TPR, 0);
    lapic_write(LAPIC_SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
    if features & CPUID_TSC_DEADLINE != 0 {
        lapic_write(LAPIC_LVT_TIMER, LVT_TSC_DEADLINE | u32::from(TIMER_VECTOR));
        TSC_DEADLINE.store(true, Ordering::Relaxed);
    } else {
        lapic_write(LAPIC_TIMER_DIVIDE, DIVIDE_BY_1);
        lapic_write(LAPIC_LVT_TIMER, u32::from(TIMER_VECTOR));
        calibrate();
    }
    STATE.store(STATE_UP, Ordering::Release);
}

/// Measures the one-shot timer's rate against the clock over about a millisecond.
fn calibrate() {
    let start = clock::now_ns();
    lapic_write(LAPIC_TIMER_INITIAL, u32::MAX);
    while clock::now_ns() - start < 1_000_000 {
        core::hint::spin_loop();
    }
    let counted = u64::from(u32::MAX - lapic_read(LAPIC_TIMER_CURRENT));
    let elapsed_us = (clock::now_ns() - start) / 1_000;
    lapic_write(LAPIC_TIMER_INITIAL, 0);
    TICKS_PER_US.store((counted / elapsed_us.max(1)).max(1), Ordering::Relaxed);
}

/// Routes IOAPIC line `gsi` to this CPU, level-triggered; whether interrupts work on this machine.
pub(crate) fn enable(gsi: u32) -> bool {
    if !ready() {
        return false;
    }
    let entries = (ioapic_read(IOAPIC_VERSION) >> 16) & 0xff;
    let lines = u32::from(idt::DEVICE_VECTORS.end - idt::DEVICE_VECTORS.start);
    if gsi > entries || gsi >= lines {
        crate::println!("mast: interrupt line {gsi} is beyond the IOAPIC's {} lines", entries + 1);
        return false;
    }
    let vector = u32::from(DEVICE_VECTOR_BASE) + gsi;
    let register = IOAPIC_REDIRECTION + 2 * gsi;
    ioapic_write(register + 1, APIC_ID.load(Ordering::Relaxed) << 24);
    ioapic_write(register, vector | REDIRECT_LEVEL);
    true
}

/// Sleeps until an enabled interrupt arrives or the clock reaches `deadline_ns`, whichever is
/// first (`None`: no deadline). Returns at once if the deadline has passed.
pub(crate) fn wait(deadline_ns: Option<u64>) {
    if !ready() {
        return;
    }
    let now = clock::now_ns();
    if deadline_ns.is_some_and(|deadline| deadline <= now) {
        // Nothing to sleep for; the interrupts taken get their EOIs before the next sleep.
        return;
    }
    // x2APIC EOIs are MSR writes: the gate sends them. An xAPIC's are stores, made here.
    let mut eois = idt::take_interrupts_taken();
    if !X2APIC.load(Ordering::Relaxed) {
        for _ in 0..eois {
            lapic_write(LAPIC_EOI, 0);
        }
        eois = 0;
    }
    // The one-shot timer is armed every time: its rate is only calibrated, so it may fire a
    // little early, and a wake before the deadline must not leave the timer spent.
    let (timer_msr, timer_value) = match deadline_ns {
        Some(deadline) if !(TSC_DEADLINE.load(Ordering::Relaxed) && ARMED_FOR.load(Ordering::Relaxed) == deadline) => {
            arm(deadline, now)
        }
        _ => (0, 0),
    };
    // A timer armed for an earlier deadline that has since been dropped may still fire: one
    // early wake, after which the caller waits again. That is cheaper than disarming it (a VM exit)
    // after every wake.
    user::halt(eois, timer_msr, timer_value);
}

/// Arms the timer for `deadline`: the MSR write the gate is to make (`(0, 0)` for none), when the
/// timer is reached through MSRs (TSC-deadline, or one-shot in x2APIC mode).
fn arm(deadline: u64, now: u64) -> (u32, u64) {
    ARMED_FOR.store(deadline, Ordering::Relaxed);
    if TSC_DEADLINE.load(Ordering::Relaxed) {
        // A TSC of 0 would disarm the timer; a past value fires at once.
        let tsc = clock::tsc_at(deadline).unwrap_or_else(|| clock::tsc_now().saturating_add(1)).max(1);
        (MSR_TSC_DEADLINE, tsc)
    } else {
        let micros = (deadline - now).div_ceil(1_000);
        let ticks = micros.saturating_mul(TICKS_PER_US.load(Ordering::Relaxed)).clamp(1, u64::from(u32::MAX));
        // A deadline beyond the counter's reach (about 4 s at 1 GHz) wakes early, and the next
        // wait arms the timer again.
        if X2APIC.load(Ordering::Relaxed) {
            (0x800 + LAPIC_TIMER_INITIAL / 16, ticks)
        } else {
            lapic_write(LAPIC_TIMER_INITIAL, ticks as u32);
            (0, 0)
        }
    }
}
