//! The console: line-buffered text output to the platform's UART.
//!
//! Output is collected into a line buffer and handed to the architecture in one piece per line (or
//! per full buffer). On x86_64 under KVM every UART register access is a VM exit, so writing a line
//! at a time in FIFO-sized bursts costs a few exits instead of two per character.

use core::fmt::{self, Write};

use spin::Mutex;

use crate::arch;

const LINE_CAPACITY: usize = 256;

struct LineBuffer {
    bytes: [u8; LINE_CAPACITY],
    len: usize,
}

impl LineBuffer {
    const fn new() -> Self {
        LineBuffer { bytes: [0; LINE_CAPACITY], len: 0 }
    }

    fn flush(&mut self) {
        if self.len > 0 {
            arch::console_write(&self.bytes[..self.len]);
            self.len = 0;
        }
    }
}

impl Write for LineBuffer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &byte in s.as_bytes() {
            if byte == b'\n' {
                // Serial terminals expect CRLF; emitting it here keeps logs tidy everywhere.
                self.push(b'\r');
            }
            self.push(byte);
            if byte == b'\n' {
                self.flush();
            }
        }
        Ok(())
    }
}

impl LineBuffer {
    fn push(&mut self, byte: u8) {
        if self.len == LINE_CAPACITY {
            self.flush();
        }
        self.bytes[self.len] = byte;
        self.len += 1;
    }
}

static CONSOLE: Mutex<LineBuffer> = Mutex::new(LineBuffer::new());

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let mut console = CONSOLE.lock();
    // Writing into the buffer cannot fail; a formatting error from a user's Display impl
    // truncates that one message, which is all a console can do about it.
    let _ = console.write_fmt(args);
}

/// Writes whatever is buffered to the UART. The runtime calls this before powering off.
pub fn flush() {
    CONSOLE.lock().flush();
}

/// Prints on the panic and fault paths, which may interrupt a print in progress on this same CPU.
///
/// Taking the lock would deadlock then, so this flushes what is buffered if it can and otherwise
/// writes straight to the UART, possibly mid-line: a report that interleaves is better than none.
pub(crate) fn emergency_print(args: fmt::Arguments<'_>) {
    struct Direct;
    impl Write for Direct {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            arch::console_write(s.as_bytes());
            Ok(())
        }
    }
    match CONSOLE.try_lock() {
        Some(mut console) => {
            let _ = console.write_fmt(args);
            console.flush();
        }
        None => {
            let _ = Direct.write_fmt(args);
        }
    }
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::_print(format_args!($($arg)*)) };
}

/// Prints to the console, with a newline.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
