//! The console UART: an Arm PL011, transmit only, polled.
//!
//! The device tree names the UART (`/chosen/stdout-path`, else the first `arm,pl011`), or the board
//! does (the Raspberry Pis' PL011, whose tree gives a bus address, and any board without a tree;
//! see [`crate::board`]). On a real Pi 3 the PL011 reaches GPIO 14/15 only with
//! `dtoverlay=disable-bt` (else it drives Bluetooth); until boot
//! has mapped it, output is dropped rather than written to an unmapped address. Baud rate and line
//! format are left as the firmware set them (QEMU needs none); [`init`] only makes sure the UART and
//! its transmitter are enabled.
//!
//! # Not supported
//! - Input, interrupts, and choosing a baud rate (the UART's input clock is board-specific).

use core::{
    hint::spin_loop,
    ptr,
    sync::atomic::{AtomicUsize, Ordering},
};

/// Data register: a write queues one byte.
const UARTDR: usize = 0x00;
/// Flag register.
const UARTFR: usize = 0x18;
/// Control register.
const UARTCR: usize = 0x30;
const FR_BUSY: u32 = 1 << 3;
const FR_TXFF: u32 = 1 << 5;
const CR_UARTEN: u32 = 1 << 0;
const CR_TXE: u32 = 1 << 8;

/// The UART's base address, or 0 while none is mapped.
static BASE: AtomicUsize = AtomicUsize::new(0);

fn read(base: usize, offset: usize) -> u32 {
    // SAFETY: `base` came from BASE, so it is a PL011 that boot mapped as Device memory for the
    // rest of the appliance's life; its registers are 32-bit and aligned.
    unsafe { ptr::read_volatile((base + offset) as *const u32) }
}

fn write(base: usize, offset: usize, value: u32) {
    // SAFETY: as in `read`.
    unsafe { ptr::write_volatile((base + offset) as *mut u32, value) }
}

/// Starts using the PL011 at `base`, which the caller has mapped as Device memory, enabling its
/// transmitter if the firmware left it off.
pub(super) fn init(base: usize) {
    let control = read(base, UARTCR);
    if control & (CR_UARTEN | CR_TXE) != CR_UARTEN | CR_TXE {
        // The PL011 must be disabled, and idle, while its control register changes.
        if control & CR_UARTEN != 0 {
            wait_idle(base);
            write(base, UARTCR, control & !CR_UARTEN);
        }
        write(base, UARTCR, control | CR_UARTEN | CR_TXE);
    }
    BASE.store(base, Ordering::Release);
}

/// Writes `bytes`, waiting whenever the transmit FIFO is full.
pub(crate) fn console_write(bytes: &[u8]) {
    let base = BASE.load(Ordering::Acquire);
    if base == 0 {
        return;
    }
    for &byte in bytes {
        while read(base, UARTFR) & FR_TXFF != 0 {
            spin_loop();
        }
        write(base, UARTDR, u32::from(byte));
    }
}

/// Waits until everything written has left the UART, so powering off loses no output.
pub(super) fn drain() {
    let base = BASE.load(Ordering::Acquire);
    if base != 0 {
        wait_idle(base);
    }
}

fn wait_idle(base: usize) {
    // Bounded: a UART whose clock is off never goes idle, and powering off matters more.
    for _ in 0..1_000_000 {
        if read(base, UARTFR) & FR_BUSY == 0 {
            return;
        }
        spin_loop();
    }
}
