//! Interrupt-driven sleep on aarch64: the GIC, the virtual timer's compare register, and `wfi`.
//!
//! [`wait`] is the whole of the event loop's waiting (see [`crate::event`]): it ends the interrupt
//! the previous wake took, arms the virtual timer for the deadline, executes `wfi` with interrupts
//! masked in PSTATE, and on waking acknowledges the pending interrupt and disarms the timer. No
//! interrupt handler ever runs, so there is nothing to save or restore and no reentrancy.
//!
//! Owned: the GIC (through [`super::gic`]) and the EL1 virtual timer (CNTV_CTL_EL0,
//! CNTV_CVAL_EL0), whose interrupt is the one the device tree's `/timer` gives for it.
//!
//! # Not supported
//! - Machines without a GIC the runtime drives (see [`super::gic`]): nothing could wake `wfi`
//!   there, so [`wait`] returns at once (the event loop then polls, keeping the CPU busy) and says
//!   so once on the console.

use core::{
    arch::asm,
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
};

use spin::Mutex;

use super::{devices, gic, timer};

/// CNTV_CTL_EL0.ENABLE, with IMASK clear: the timer raises its interrupt when it expires.
const TIMER_ENABLE: u64 = 1;
/// No interrupt acknowledged.
const NONE: u32 = u32::MAX;

/// The interrupt the last wake acknowledged, to end before sleeping again.
static TAKEN: AtomicU32 = AtomicU32::new(NONE);
/// Whether the GIC and the timer interrupt are set up.
static READY: Mutex<bool> = Mutex::new(false);
/// Set once the missing-GIC warning has been printed.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Brings up the GIC and the timer interrupt on first use; whether interrupts can wake `wfi`.
fn ready() -> bool {
    let mut ready = READY.lock();
    if *ready {
        return true;
    }
    let devices = devices();
    let Some(description) = devices.gic else { return false };
    if let Err(why) = gic::init(&description) {
        if !WARNED.swap(true, Ordering::Relaxed) {
            crate::println!("mast: the interrupt controller is unusable ({why:?}); polling instead of sleeping");
        }
        return false;
    }
    gic::enable(devices.timer_intid, true);
    *ready = true;
    true
}

/// Enables a device's interrupt line (level-sensitive); whether interrupts work on this machine.
pub(crate) fn enable(intid: u32) -> bool {
    if !ready() {
        return false;
    }
    gic::enable(intid, true);
    true
}

/// Sleeps until an enabled interrupt is pending or the clock reaches `deadline_ns`, whichever is
/// first (`None`: no deadline). Returns at once if the deadline has passed.
pub(crate) fn wait(deadline_ns: Option<u64>) {
    if !ready() {
        if !WARNED.swap(true, Ordering::Relaxed) {
            crate::println!("mast: no usable interrupt controller in the device tree; polling instead of sleeping");
        }
        return;
    }
    let taken = TAKEN.swap(NONE, Ordering::Relaxed);
    if taken != NONE {
        gic::end(taken);
    }
    match deadline_ns {
        Some(deadline) => {
            if deadline <= timer::now_ns() {
                return;
            }
            let ticks = timer::ns_to_ticks(deadline);
            // SAFETY: programming the EL1 virtual timer, which the runtime owns, only changes
            // when its interrupt fires; the ISB makes the new settings take effect before `wfi`.
            unsafe {
                asm!(
                    "msr cntv_cval_el0, {ticks}",
                    "msr cntv_ctl_el0, {enable}",
                    "isb",
                    ticks = in(reg) ticks,
                    enable = in(reg) TIMER_ENABLE,
                    options(nomem, nostack, preserves_flags),
                )
            };
        }
        None => disarm_timer(),
    }
    // SAFETY: interrupts are masked in PSTATE (boot set DAIF and nothing clears it), so `wfi`
    // only waits: a pending interrupt wakes it without being taken. The DSB completes earlier
    // memory accesses (the device notifications among them) before the core sleeps.
    unsafe { asm!("dsb sy", "wfi", options(nomem, nostack, preserves_flags)) };
    if let Some(intid) = gic::acknowledge() {
        TAKEN.store(intid, Ordering::Relaxed);
    }
    disarm_timer();
}

fn disarm_timer() {
    // SAFETY: disabling the EL1 virtual timer lowers its interrupt line and touches nothing else.
    unsafe { asm!("msr cntv_ctl_el0, xzr", "isb", options(nomem, nostack, preserves_flags)) };
}
