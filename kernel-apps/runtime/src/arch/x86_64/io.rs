//! Port I/O, the x86 way to reach legacy devices (the UART, the debug-exit port).
//!
//! Under KVM every port access leaves the guest for QEMU (a "VM exit", 15–25 µs under the nested
//! PVM hypervisor this is developed on), so callers keep port accesses few; see `serial` for
//! how the console does it.

use core::arch::asm;

/// Reads a byte from `port`.
///
/// # Safety
/// Reading some device registers has side effects (e.g. popping a receive FIFO); the caller
/// must own the device behind `port`.
pub(super) unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: `in` touches only the named port and AL; the caller owns the device.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Writes a byte to `port`.
///
/// # Safety
/// The caller must own the device behind `port` and know what the write does to it.
pub(super) unsafe fn outb(port: u16, value: u8) {
    // SAFETY: `out` touches only the named port; the caller owns the device.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

/// Writes a 32-bit value to `port`.
///
/// # Safety
/// As for [`outb`].
pub(super) unsafe fn outl(port: u16, value: u32) {
    // SAFETY: `out` touches only the named port; the caller owns the device.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags)) };
}

/// Writes every byte of `bytes` to `port` with one `rep outsb`. The instruction is one, but KVM
/// still hands the bytes to QEMU one exit at a time.
///
/// # Safety
/// As for [`outb`]; the device must accept `bytes.len()` writes back to back.
pub(super) unsafe fn outsb(port: u16, bytes: &[u8]) {
    // SAFETY: `rep outsb` reads `bytes.len()` bytes from `bytes` (a valid slice) and writes them
    // to the port; the direction flag is clear (the ABI guarantees it), so it reads forwards.
    unsafe {
        asm!(
            "rep outsb",
            in("dx") port,
            inout("rsi") bytes.as_ptr() => _,
            inout("rcx") bytes.len() => _,
            options(readonly, nostack, preserves_flags)
        )
    };
}
