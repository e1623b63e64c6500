//! The console UART: a 16550 at COM1 (I/O port 0x3f8), as on every PC and on QEMU `microvm`.
//!
//! Output only, polled, no interrupts. Each port access is a VM exit, so output goes in bursts:
//! wait until the transmit FIFO is empty (LSR.THRE), then send up to 16 bytes, the FIFO's depth,
//! with one `rep outsb`. KVM still exits to QEMU once per byte of a `rep outsb` (its emulator
//! completes string port output one element at a time), so the saving is the status poll: a line
//! of 64 characters costs 68 exits instead of the 128 of polling before every byte. Measured on
//! `hello` under the nested PVM hypervisor: about 300 exits instead of 540 for the runtime's part
//! of the run, and 7.9 ms instead of 10.5 ms from `main` to power-off.
//!
//! Where no UART answers, port reads return 0xff, which has the status bits set, so output is
//! dropped rather than hanging.
//!
//! Not supported: input, flow control, and UARTs without a FIFO (an 8250 would drop all but the
//! last byte of each burst).

use super::io::{inb, outb, outsb};

const COM1: u16 = 0x3f8;
/// Transmit holding register (write) / divisor latch low byte (with LCR.DLAB set).
const THR: u16 = COM1;
/// Interrupt enable register / divisor latch high byte (with LCR.DLAB set).
const IER: u16 = COM1 + 1;
/// FIFO control register (write).
const FCR: u16 = COM1 + 2;
/// Line control register.
const LCR: u16 = COM1 + 3;
/// Modem control register.
const MCR: u16 = COM1 + 4;
/// Line status register.
const LSR: u16 = COM1 + 5;

/// LSR: the transmit FIFO (holding register) is empty.
const LSR_THRE: u8 = 1 << 5;
/// LSR: the FIFO and the shift register are both empty: everything has left the UART.
const LSR_TEMT: u8 = 1 << 6;
/// The 16550's transmit FIFO depth.
const FIFO_BYTES: usize = 16;

/// Programs 115200 baud, 8 data bits, no parity, one stop bit, FIFOs on and cleared, interrupts
/// off. Seven port writes; run once, before the first output.
pub(super) fn init() {
    // SAFETY: COM1 belongs to the console and nothing else in the runtime touches it; these
    // writes configure it without side effects on memory.
    unsafe {
        outb(IER, 0x00); // no interrupts: output is polled
        outb(LCR, 0x80); // DLAB on, to reach the divisor latch
        outb(THR, 0x01); // divisor 1: 115200 baud
        outb(IER, 0x00); // divisor high byte
        outb(LCR, 0x03); // DLAB off; 8 bits, no parity, 1 stop bit
        outb(FCR, 0x07); // enable the FIFOs and clear both
        outb(MCR, 0x03); // DTR and RTS, which some terminals wait for
    }
}

/// Writes `bytes`, blocking until the UART has taken them all.
pub(super) fn write(bytes: &[u8]) {
    for burst in bytes.chunks(FIFO_BYTES) {
        wait_for(LSR_THRE);
        // SAFETY: the FIFO is empty, so it takes a full burst without dropping bytes.
        unsafe { outsb(THR, burst) };
    }
}

/// Waits until the last byte has left the UART, so nothing is lost when the machine powers off.
pub(super) fn drain() {
    wait_for(LSR_TEMT);
}

fn wait_for(lsr_bits: u8) {
    // SAFETY: reading LSR has no side effect on transmission (it clears only error bits).
    while unsafe { inb(LSR) } & lsr_bits == 0 {
        core::hint::spin_loop();
    }
}
