//! SIGTERM and SIGINT stop the guest cleanly: the handler only records the signal; the run loop
//! sees it when `KVM_RUN` or the Poll hypercall's `ppoll` returns `EINTR`, and ends the run (so
//! `--stats` is still printed). Installed before the sandbox; the handler itself makes no system
//! call, and returning from it needs only `rt_sigreturn`, which the filter allows.

use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::Result;

/// The stop signal received, or 0.
static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(signal: libc::c_int) {
    STOP.store(signal, Ordering::Relaxed);
}

/// Installs the handler for SIGTERM and SIGINT (without `SA_RESTART`, so blocking calls return
/// `EINTR` rather than resume).
pub fn catch_stop_requests() -> Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler is an
        // `extern "C"` function that only stores to an atomic, which is async-signal-safe.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = record as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    Ok(())
}

/// The stop signal, if one arrived.
pub fn stop_requested() -> Option<i32> {
    match STOP.load(Ordering::Relaxed) {
        0 => None,
        signal => Some(signal),
    }
}
