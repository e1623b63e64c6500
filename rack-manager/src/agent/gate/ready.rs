//! Waiting for a woken appliance to say it is ready (`boot_contract::ready`): the tender's
//! datagram on the gate's readiness socket, or the `mast: ready` line in a QEMU run's console.
//! Meanwhile the run is watched, so a crash during the wake ends the wait at once.

use std::{
    io::{Read, Seek, SeekFrom},
    os::unix::net::UnixDatagram,
    path::Path,
    time::{Duration, Instant},
};

use rack_api::agent::{RunRef, RunState};

use crate::launcher::Launcher;

/// How often the run is checked while no readiness arrives.
const CHECK_EVERY: Duration = Duration::from_millis(10);

/// Why a wake did not end with a ready appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// The run ended first, with this status if known.
    Exited(Option<i32>),
    /// Nothing said ready before the deadline.
    TimedOut,
}

/// How readiness arrives.
pub enum Signal<'a> {
    /// The tender writes `ready\n` to this socket (bound before the launch).
    Socket(&'a UnixDatagram),
    /// The console log, from this offset on.
    Console { log: &'a Path, offset: u64 },
    /// No VM to wait for (the simulated launcher).
    Immediate,
}

/// Blocks until `run` is ready, ends, or `deadline` passes.
pub fn wait(
    launcher: &dyn Launcher,
    run: &RunRef,
    log: &Path,
    signal: Signal<'_>,
    deadline: Instant,
) -> Result<(), NotReady> {
    let mut console = String::new();
    let mut read_to = match &signal {
        Signal::Console { offset, .. } => *offset,
        _ => 0,
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NotReady::TimedOut);
        }
        match &signal {
            Signal::Immediate => return Ok(()),
            Signal::Socket(socket) => {
                let _ = socket.set_read_timeout(Some(left.min(CHECK_EVERY)));
                let mut buffer = [0u8; 16];
                if socket.recv(&mut buffer).is_ok_and(|n| buffer[..n].starts_with(b"ready")) {
                    return Ok(());
                }
            }
            Signal::Console { log, .. } => {
                read_to = read_new(log, read_to, &mut console);
                if boot_contract::ready::console_says_ready(&console) {
                    return Ok(());
                }
                std::thread::sleep(left.min(CHECK_EVERY / 2));
            }
        }
        if let RunState::Exited { status } = launcher.state(run, log) {
            return Err(NotReady::Exited(status));
        }
    }
}

/// Appends what `log` holds past `from` to `text` (at most 64 KiB kept), returning the new end.
fn read_new(log: &Path, from: u64, text: &mut String) -> u64 {
    let Ok(mut file) = std::fs::File::open(log) else { return from };
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_err() || file.by_ref().take(64 * 1024).read_to_end(&mut bytes).is_err() {
        return from;
    }
    text.push_str(&String::from_utf8_lossy(&bytes));
    if text.len() > 64 * 1024 {
        let cut = text.len() - 32 * 1024;
        let cut = (cut..text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
        text.drain(..cut);
    }
    from + bytes.len() as u64
}
