//! The hypercalls: what the tender does for each, with every guest address and count checked first.
//!
//! Each call reads its argument block from guest RAM, acts, and writes its results back. Anything
//! the guest got wrong that a correct guest never does (a buffer outside RAM, impossible ring
//! counters, an unknown call) is a [`Violation`]; a request a correct guest may make but the device
//! cannot serve (no such device, beyond the end) gets a `RESULT_*` code instead.

use std::{
    io::Write,
    mem::{offset_of, size_of},
    os::fd::AsRawFd,
    time::Instant,
};

use tender_abi::{
    BlockIo, ConsoleWrite, Exit, Hypercall, NET_MAX_FRAME, NET_RING_SLOTS, NetAttach, NetRing, NetRings, NetSlot,
    PAGE_SIZE, POLL_FOREVER, Poll, RANDOM_MAX, RESULT_INVALID, RESULT_IO_ERROR, RESULT_NO_DEVICE, RESULT_OK, Random,
};
use vm_memory::{Bytes, GuestAddress};

use crate::{
    block::{Block, Direction},
    guest::Ram,
    net::Tap,
    stats::Stats,
    violation::Violation,
};

/// The devices the guest may use.
#[derive(Debug, Default)]
pub struct Devices {
    pub net: Option<Net>,
    pub block: Option<Block>,
    /// Where to say that the guest is ready (`--ready-socket`).
    pub ready: Option<ReadySignal>,
}

/// The tender's parent's readiness socket: a connected Unix datagram socket, written with plain
/// `write(2)` (the sandbox allows no `sendto`) and non-blocking, so a parent that stopped reading
/// never stalls the guest. Told once, at the guest's first [`Hypercall::Ready`].
#[derive(Debug)]
pub struct ReadySignal {
    socket: std::fs::File,
    told: bool,
}

impl ReadySignal {
    /// Connects to the Unix datagram socket at `path` (before the sandbox: it allows no `connect`).
    pub fn connect(path: &std::path::Path) -> std::io::Result<ReadySignal> {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        socket.connect(path)?;
        socket.set_nonblocking(true)?;
        Ok(ReadySignal { socket: std::fs::File::from(std::os::fd::OwnedFd::from(socket)), told: false })
    }

    fn tell(&mut self) {
        if !self.told {
            self.told = true;
            // Best effort: a parent that went away has nobody to wake.
            let _ = self.socket.write(b"ready\n");
        }
    }
}

/// The network device and, once the guest attached them, its rings.
#[derive(Debug)]
pub struct Net {
    pub tap: Tap,
    pub rings: Option<u64>,
}

/// What the run loop does after a hypercall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// The guest asked to stop with this status.
    Exit(u8),
}

/// Performs hypercall `number` with its argument block at `arg`.
pub fn handle(
    ram: &Ram,
    devices: &mut Devices,
    stats: &mut Stats,
    number: u64,
    arg: u64,
) -> Result<Outcome, Violation> {
    let call =
        u16::try_from(number).ok().and_then(Hypercall::from_number).ok_or(Violation::UnknownHypercall { number })?;
    stats.call(call);
    match call {
        Hypercall::ConsoleWrite => console_write(ram, stats, arg),
        Hypercall::Exit => {
            let Exit { status, .. } = ram.read_args(call, arg)?;
            let status = u8::try_from(status).map_err(|_| Violation::ExitStatus { status })?;
            Ok(Some(Outcome::Exit(status)))
        }
        Hypercall::Poll => poll(ram, devices, stats, arg),
        Hypercall::NetAttach => net_attach(ram, devices, arg),
        Hypercall::BlockRead | Hypercall::BlockWrite | Hypercall::BlockFlush => block_io(ram, devices, call, arg),
        Hypercall::Ready => {
            stats.ready.get_or_insert_with(Instant::now);
            if let Some(ready) = &mut devices.ready {
                ready.tell();
            }
            Ok(None)
        }
        Hypercall::Random => random(ram, arg),
    }
    .map(|outcome| outcome.unwrap_or(Outcome::Continue))
}

fn console_write(ram: &Ram, stats: &mut Stats, arg: u64) -> Result<Option<Outcome>, Violation> {
    let call = Hypercall::ConsoleWrite;
    let ConsoleWrite { addr, len } = ram.read_args(call, arg)?;
    if !ram.contains(addr, len) {
        return Err(Violation::Buffer { call, what: "console buffer", addr, len });
    }
    if len > 0 {
        stats.first_console.get_or_insert_with(Instant::now);
        stats.console_bytes += len;
        // A closed or full stdout must not stop the appliance: its output is lost, nothing else.
        let mut stdout = std::io::stdout();
        let _ = ram.memory.write_all_volatile_to(GuestAddress(addr), &mut stdout, len as usize);
        let _ = stdout.flush();
    }
    Ok(None)
}

// Where things are inside `NetRings`.
const TX: u64 = offset_of!(NetRings, tx) as u64;
const RX: u64 = offset_of!(NetRings, rx) as u64;
const PRODUCED: u64 = offset_of!(NetRing, produced) as u64;
const CONSUMED: u64 = offset_of!(NetRing, consumed) as u64;
const SLOTS: u64 = offset_of!(NetRing, slots) as u64;
const SLOT_SIZE: u64 = size_of::<NetSlot>() as u64;
const SLOT_LEN: u64 = offset_of!(NetSlot, len) as u64;
const SLOT_FRAME: u64 = offset_of!(NetSlot, frame) as u64;
const SLOT_CAPACITY: usize = size_of::<NetSlot>() - offset_of!(NetSlot, frame);

/// A ring's counters and the frames it holds, checked.
struct Counters {
    produced: u32,
    consumed: u32,
    pending: usize,
}

fn counters(ram: &Ram, ring: u64, name: &'static str) -> Result<Counters, Violation> {
    // The whole `NetRings` was checked to lie in RAM at attach time, so these reads succeed; a
    // failure would still be reported, never trusted.
    let outside = Violation::Buffer { call: Hypercall::Poll, what: "net ring", addr: ring, len: 8 };
    let produced = ram.read_u32(ring + PRODUCED).ok_or(outside.clone())?;
    let consumed = ram.read_u32(ring + CONSUMED).ok_or(outside)?;
    let pending = tender_abi::ring_pending(produced, consumed);
    let pending = pending.ok_or(Violation::RingCounters { ring: name, produced, consumed })?;
    Ok(Counters { produced, consumed, pending })
}

fn slot_addr(ring: u64, frame: u32) -> u64 {
    ring + SLOTS + (frame as usize % NET_RING_SLOTS) as u64 * SLOT_SIZE
}

fn net_attach(ram: &Ram, devices: &mut Devices, arg: u64) -> Result<Option<Outcome>, Violation> {
    let call = Hypercall::NetAttach;
    let mut args: NetAttach = ram.read_args(call, arg)?;
    args.result = match devices.net.as_mut() {
        None => RESULT_NO_DEVICE,
        Some(net) => {
            let len = size_of::<NetRings>() as u64;
            if !args.rings.is_multiple_of(PAGE_SIZE) {
                return Err(Violation::Buffer {
                    call,
                    what: "net rings (must be page-aligned)",
                    addr: args.rings,
                    len,
                });
            }
            if !ram.contains(args.rings, len) {
                return Err(Violation::Buffer { call, what: "net rings", addr: args.rings, len });
            }
            counters(ram, args.rings + TX, "tx")?;
            counters(ram, args.rings + RX, "rx")?;
            net.rings = Some(args.rings);
            RESULT_OK
        }
    };
    ram.write_args(call, arg, args)?;
    Ok(None)
}

fn poll(ram: &Ram, devices: &mut Devices, stats: &mut Stats, arg: u64) -> Result<Option<Outcome>, Violation> {
    let call = Hypercall::Poll;
    let mut args: Poll = ram.read_args(call, arg)?;
    let attached = devices.net.as_ref().and_then(|net| net.rings.map(|rings| (net, rings)));
    args.rx_ready = match attached {
        Some((net, rings)) => {
            drain_tx(ram, &net.tap, rings + TX, stats)?;
            let mut ready = fill_rx(ram, &net.tap, rings + RX, stats)?;
            if ready == 0 && args.timeout_ns != 0 {
                wait(Some(&net.tap), args.timeout_ns);
                ready = fill_rx(ram, &net.tap, rings + RX, stats)?;
            }
            ready as u32
        }
        None => {
            if args.timeout_ns != 0 {
                wait(None, args.timeout_ns);
            }
            0
        }
    };
    ram.write_args(call, arg, args)?;
    Ok(None)
}

/// Sends every frame the guest queued, then marks them consumed.
fn drain_tx(ram: &Ram, tap: &Tap, ring: u64, stats: &mut Stats) -> Result<(), Violation> {
    let Counters { produced, consumed, pending } = counters(ram, ring, "tx")?;
    for n in 0..pending as u32 {
        let slot = slot_addr(ring, consumed.wrapping_add(n));
        let len = ram.read_u32(slot + SLOT_LEN).unwrap_or(u32::MAX);
        if len as usize > NET_MAX_FRAME {
            return Err(Violation::FrameTooLong { slot: (consumed.wrapping_add(n) as usize) % NET_RING_SLOTS, len });
        }
        // One write is one frame on a tap; a full queue or a downed interface drops it, as a wire would.
        match ram.memory.write_volatile_to(GuestAddress(slot + SLOT_FRAME), &mut &tap.file, len as usize) {
            Ok(_) => stats.frames_sent += 1,
            Err(_) => stats.frames_dropped += 1,
        }
    }
    if pending > 0 {
        ram.write_u32(ring + CONSUMED, produced).ok_or(Violation::Buffer {
            call: Hypercall::Poll,
            what: "tx ring",
            addr: ring,
            len: 8,
        })?;
    }
    Ok(())
}

/// Moves frames from the tap into free receive slots until the ring is full or the tap is empty.
/// Returns how many frames the ring holds.
fn fill_rx(ram: &Ram, tap: &Tap, ring: u64, stats: &mut Stats) -> Result<usize, Violation> {
    let Counters { mut produced, pending, .. } = counters(ram, ring, "rx")?;
    let mut held = pending;
    while held < NET_RING_SLOTS {
        let slot = slot_addr(ring, produced);
        // A read returns one frame; a frame larger than the slot is cut short, and one larger than
        // an Ethernet frame is dropped rather than handed over.
        let got = match ram.memory.read_volatile_from(GuestAddress(slot + SLOT_FRAME), &mut &tap.file, SLOT_CAPACITY) {
            Ok(0) | Err(_) => break, // EAGAIN: nothing more waiting
            Ok(n) => n,
        };
        if got > NET_MAX_FRAME {
            stats.frames_dropped += 1;
            continue;
        }
        let stored = ram.write_u32(slot + SLOT_LEN, got as u32);
        stored.ok_or(Violation::Buffer { call: Hypercall::Poll, what: "rx ring", addr: ring, len: 8 })?;
        produced = produced.wrapping_add(1);
        held += 1;
        stats.frames_received += 1;
    }
    if held != pending {
        ram.write_u32(ring + PRODUCED, produced).ok_or(Violation::Buffer {
            call: Hypercall::Poll,
            what: "rx ring",
            addr: ring,
            len: 8,
        })?;
    }
    Ok(held)
}

/// Blocks until `tap` has a frame (if given) or `timeout_ns` passes ([`POLL_FOREVER`]: no limit).
/// A signal or an error ends the wait early; the guest polls again.
fn wait(tap: Option<&Tap>, timeout_ns: u64) {
    let timeout = (timeout_ns != POLL_FOREVER).then(|| libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000).min(i64::MAX as u64) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    });
    let mut fds = tap.map(|tap| libc::pollfd { fd: tap.file.as_raw_fd(), events: libc::POLLIN, revents: 0 });
    let (fds_ptr, nfds) = match fds.as_mut() {
        Some(fd) => (fd as *mut libc::pollfd, 1),
        None => (std::ptr::null_mut(), 0),
    };
    let timeout_ptr = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds_ptr` is null with `nfds` 0 or points at one live `pollfd`; `timeout_ptr` is null
    // or points at a live `timespec`; no signal mask is passed. ppoll only writes `revents`.
    unsafe { libc::ppoll(fds_ptr, nfds, timeout_ptr, std::ptr::null()) };
}

fn block_io(ram: &Ram, devices: &Devices, call: Hypercall, arg: u64) -> Result<Option<Outcome>, Violation> {
    let mut args: BlockIo = ram.read_args(call, arg)?;
    args.result = match (&devices.block, call) {
        (None, _) => RESULT_NO_DEVICE,
        (Some(block), Hypercall::BlockFlush) => block.flush(),
        (Some(block), _) => {
            if !ram.contains(args.addr, args.len) {
                return Err(Violation::Buffer { call, what: "block buffer", addr: args.addr, len: args.len });
            }
            match block.file_range(args.sector, args.len) {
                None => RESULT_INVALID,
                Some(offset) => {
                    let direction = if call == Hypercall::BlockRead { Direction::Read } else { Direction::Write };
                    block.transfer(ram, direction, offset, args.addr, args.len)
                }
            }
        }
    };
    ram.write_args(call, arg, args)?;
    Ok(None)
}

/// Fills the guest's buffer from the host's `getrandom` (the kernel's CSPRNG, never blocking once
/// the host has booted). The bytes pass through a buffer of the tender's so that a failed call
/// leaves the guest's untouched.
fn random(ram: &Ram, arg: u64) -> Result<Option<Outcome>, Violation> {
    let call = Hypercall::Random;
    let mut args: Random = ram.read_args(call, arg)?;
    args.result = if args.len == 0 || args.len > RANDOM_MAX {
        RESULT_INVALID
    } else {
        if !ram.contains(args.addr, args.len) {
            return Err(Violation::Buffer { call, what: "random buffer", addr: args.addr, len: args.len });
        }
        let mut bytes = [0u8; RANDOM_MAX as usize];
        let wanted = &mut bytes[..args.len as usize];
        match host_random(wanted) {
            Ok(()) if ram.write_bytes(args.addr, wanted).is_ok() => RESULT_OK,
            _ => RESULT_IO_ERROR,
        }
    };
    ram.write_args(call, arg, args)?;
    Ok(None)
}

/// `buf.len()` bytes from the host kernel's `getrandom(2)`; up to 256 bytes it never returns fewer.
fn host_random(buf: &mut [u8]) -> std::io::Result<()> {
    // SAFETY: the pointer and length describe `buf`, a live, writable slice; flags 0 (the urandom
    // pool, blocking only before the host's pool is first initialised).
    let got = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    match usize::try_from(got) {
        Ok(n) if n == buf.len() => Ok(()),
        Ok(_) => Err(std::io::Error::other("getrandom returned fewer bytes than asked")),
        Err(_) => Err(std::io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::Abi;

    fn setup() -> (Ram, Devices, Stats) {
        (Ram::new(0, 1 << 20).expect("maps"), Devices::default(), Stats::new(Instant::now()))
    }

    fn call<T>(
        ram: &Ram,
        devices: &mut Devices,
        stats: &mut Stats,
        call: Hypercall,
        args: T,
    ) -> Result<Outcome, Violation>
    where
        Abi<T>: vm_memory::ByteValued,
    {
        ram.write_args(call, 0x1000, args).expect("argument block fits");
        handle(ram, devices, stats, call as u64, 0x1000)
    }

    #[test]
    fn exit_passes_the_status_and_refuses_wide_ones() {
        let (ram, mut devices, mut stats) = setup();
        let exit = |status| Exit { status, _reserved: 0 };
        assert_eq!(call(&ram, &mut devices, &mut stats, Hypercall::Exit, exit(3)), Ok(Outcome::Exit(3)));
        assert_eq!(
            call(&ram, &mut devices, &mut stats, Hypercall::Exit, exit(256)),
            Err(Violation::ExitStatus { status: 256 })
        );
    }

    #[test]
    fn unknown_calls_and_argument_blocks_outside_ram_are_violations() {
        let (ram, mut devices, mut stats) = setup();
        assert_eq!(handle(&ram, &mut devices, &mut stats, 0, 0x1000), Err(Violation::UnknownHypercall { number: 0 }));
        assert_eq!(
            handle(&ram, &mut devices, &mut stats, 1 << 40, 0x1000),
            Err(Violation::UnknownHypercall { number: 1 << 40 })
        );
        let outside = handle(&ram, &mut devices, &mut stats, Hypercall::Exit as u64, 1 << 20);
        assert!(matches!(outside, Err(Violation::ArgumentBlock { .. })), "{outside:?}");
    }

    #[test]
    fn console_buffers_must_lie_in_ram() {
        let (ram, mut devices, mut stats) = setup();
        for (addr, len) in [(0xf_ff00, 0x200), (u64::MAX - 4, 8), (0x2000, u64::MAX)] {
            let result = call(&ram, &mut devices, &mut stats, Hypercall::ConsoleWrite, ConsoleWrite { addr, len });
            assert!(matches!(result, Err(Violation::Buffer { .. })), "{addr:#x}+{len:#x}: {result:?}");
        }
        assert_eq!(stats.console_bytes, 0);
    }

    #[test]
    fn devices_that_are_absent_answer_no_device() {
        let (ram, mut devices, mut stats) = setup();
        let attach = NetAttach { rings: 0x2000, result: 0, _reserved: 0 };
        assert_eq!(call(&ram, &mut devices, &mut stats, Hypercall::NetAttach, attach), Ok(Outcome::Continue));
        assert_eq!(ram.read_args::<NetAttach>(Hypercall::NetAttach, 0x1000).expect("reads").result, RESULT_NO_DEVICE);
        let read = BlockIo { sector: 0, addr: 0x2000, len: 512, result: 0, _reserved: 0 };
        assert_eq!(call(&ram, &mut devices, &mut stats, Hypercall::BlockRead, read), Ok(Outcome::Continue));
        assert_eq!(ram.read_args::<BlockIo>(Hypercall::BlockRead, 0x1000).expect("reads").result, RESULT_NO_DEVICE);
        let poll = Poll { timeout_ns: 1, rx_ready: 7, _reserved: 0 };
        assert_eq!(call(&ram, &mut devices, &mut stats, Hypercall::Poll, poll), Ok(Outcome::Continue));
        assert_eq!(ram.read_args::<Poll>(Hypercall::Poll, 0x1000).expect("reads").rx_ready, 0);
    }

    #[test]
    fn random_fills_the_buffer_and_refuses_bad_lengths() {
        let (ram, mut devices, mut stats) = setup();
        let ask = |len| Random { addr: 0x2000, len, result: 1, _reserved: 0 };
        assert_eq!(call(&ram, &mut devices, &mut stats, Hypercall::Random, ask(32)), Ok(Outcome::Continue));
        assert_eq!(ram.read_args::<Random>(Hypercall::Random, 0x1000).expect("reads").result, RESULT_OK);
        let mut first = [0u8; 32];
        ram.memory.read_slice(&mut first, GuestAddress(0x2000)).expect("inside");
        assert_ne!(first, [0u8; 32], "32 random bytes are not all zero");
        call(&ram, &mut devices, &mut stats, Hypercall::Random, ask(32)).expect("a second call");
        let mut second = [0u8; 32];
        ram.memory.read_slice(&mut second, GuestAddress(0x2000)).expect("inside");
        assert_ne!(first, second, "two calls give different bytes");
        for len in [0, RANDOM_MAX + 1, u64::MAX] {
            call(&ram, &mut devices, &mut stats, Hypercall::Random, ask(len)).expect("not a violation");
            assert_eq!(ram.read_args::<Random>(Hypercall::Random, 0x1000).expect("reads").result, RESULT_INVALID);
        }
        let outside = Random { addr: (1 << 20) - 8, len: 16, result: 0, _reserved: 0 };
        let result = call(&ram, &mut devices, &mut stats, Hypercall::Random, outside);
        assert!(matches!(result, Err(Violation::Buffer { .. })), "{result:?}");
    }

    proptest::proptest! {
        /// Whatever a guest writes and calls, the tender answers with an outcome or a violation:
        /// it never panics, and never touches memory outside the guest's RAM (vm-memory would
        /// refuse, and the test's 1 MiB RAM is all there is).
        #[test]
        fn arbitrary_calls_never_panic(
            number in 0u64..12,
            arg in proptest::prop_oneof![0u64..(1 << 20), proptest::num::u64::ANY],
            block in proptest::collection::vec(proptest::num::u8::ANY, 32),
            with_block_device: bool,
        ) {
            // ConsoleWrite would print the random bytes on the test's real stdout; it has its own tests.
            proptest::prop_assume!(number != Hypercall::ConsoleWrite as u64);
            let (ram, mut devices, mut stats) = setup();
            let _ = ram.write_bytes(arg, &block);
            let file = tempfile::tempfile().expect("temp file");
            file.set_len(4096).expect("sized");
            if with_block_device {
                let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
                devices.block = Some(Block::open(std::path::Path::new(&path)).expect("opens"));
            }
            // Poll with a timeout would sleep: keep the test fast by making it 0 or 1 ns.
            if number == Hypercall::Poll as u64 {
                let _ = ram.write_bytes(arg, &(block[0] as u64 & 1).to_le_bytes());
            }
            let _ = handle(&ram, &mut devices, &mut stats, number, arg);
        }
    }

    #[test]
    fn impossible_ring_counters_are_violations() {
        let ram = Ram::new(0, 1 << 20).expect("maps");
        ram.write_u32(0x4000 + TX + PRODUCED, 100).expect("inside");
        assert_eq!(
            counters(&ram, 0x4000 + TX, "tx").err(),
            Some(Violation::RingCounters { ring: "tx", produced: 100, consumed: 0 })
        );
        ram.write_u32(0x4000 + TX + CONSUMED, 70).expect("inside");
        assert_eq!(counters(&ram, 0x4000 + TX, "tx").map(|c| c.pending).ok(), Some(30));
    }
}
