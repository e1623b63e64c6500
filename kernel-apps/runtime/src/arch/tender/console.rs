//! The tender's console: bytes collect in a 4 KiB buffer and leave with one `ConsoleWrite`
//! hypercall per flush, instead of an exit per line (or, on a UART, per byte).
//!
//! The buffer is flushed when full, and by the platform before every `Poll` and `Exit`, which is
//! when the guest stops running anyway; the panic and fault paths end in `Exit`, so their reports
//! come out too. The one exception is the first line: it is written as soon as it is complete, so
//! that "the appliance is up" shows without waiting for its first sleep (one exit more per boot).

use core::sync::atomic::{AtomicBool, Ordering};

use spin::Mutex;

use super::abi;

const CAPACITY: usize = 4096;

struct Buffer {
    bytes: [u8; CAPACITY],
    len: usize,
}

/// In `.bss`: its page is touched on the first print, not before.
static BUFFER: Mutex<Buffer> = Mutex::new(Buffer { bytes: [0; CAPACITY], len: 0 });
/// Whether the first complete line has been written.
static FIRST_LINE_OUT: AtomicBool = AtomicBool::new(false);

/// Appends `bytes`, flushing whenever the buffer fills.
pub(crate) fn write(mut bytes: &[u8]) {
    let Some(mut buffer) = BUFFER.try_lock() else {
        // Only a fault in the middle of a write gets here: say it unbuffered rather than not at all.
        write_now(bytes);
        return;
    };
    while !bytes.is_empty() {
        if buffer.len == CAPACITY {
            write_now(&buffer.bytes);
            buffer.len = 0;
        }
        let start = buffer.len;
        let take = bytes.len().min(CAPACITY - start);
        let (now, rest) = bytes.split_at(take);
        if let Some(space) = buffer.bytes.get_mut(start..start + take) {
            space.copy_from_slice(now);
        }
        buffer.len += take;
        bytes = rest;
        if !FIRST_LINE_OUT.load(Ordering::Relaxed) && now.contains(&b'\n') {
            FIRST_LINE_OUT.store(true, Ordering::Relaxed);
            let len = buffer.len;
            write_now(buffer.bytes.get(..len).unwrap_or(&[]));
            buffer.len = 0;
        }
    }
}

/// Hands everything buffered to the tender.
pub(crate) fn flush() {
    if let Some(mut buffer) = BUFFER.try_lock()
        && buffer.len > 0
    {
        let len = buffer.len;
        write_now(buffer.bytes.get(..len).unwrap_or(&[]));
        buffer.len = 0;
    }
}

fn write_now(bytes: &[u8]) {
    let mut block = abi::ConsoleWrite { addr: bytes.as_ptr().expose_provenance() as u64, len: bytes.len() as u64 };
    super::hypercall(abi::Hypercall::ConsoleWrite, &mut block);
}
