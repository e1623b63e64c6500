//! The contract between a Mast appliance and `tender`, the per-appliance KVM monitor.
//!
//! Both sides compile this crate: the runtime (bare metal, `no_std`) and the tender (host). It has
//! no code that touches hardware; it only fixes layouts and numbers, so a change here is a change
//! of the ABI and bumps [`ABI_VERSION`].
//!
//! # Design: few exits
//! Every VM exit is expensive (on nested KVM, ~0.1 ms). The interface is therefore shaped so that a
//! guest exits only when it has something to say or nothing to do:
//! - console output is buffered by the guest and written with one [`Hypercall::ConsoleWrite`] per
//!   buffer (at the latest when it polls, exits or panics);
//! - network frames move through two shared rings in guest memory ([`NetRings`]); the guest never
//!   exits per frame. [`Hypercall::Poll`] is the one call of an idle event loop: the tender drains
//!   the transmit ring to the tap device, fills the receive ring, and blocks until a frame arrives or
//!   the guest's timeout passes;
//! - the clock needs no exit: the guest reads its cycle counter and scales it with
//!   [`BootInfo::tsc_khz`] from [`BootInfo::tsc_at_creation`] (x86_64) or `CNTFRQ_EL0` (aarch64);
//! - an idle guest is blocked in the tender's `ppoll`, costing no host CPU.
//!
//! # Memory
//! Guest RAM is one region of [`BootInfo::ram_size`] bytes at [`ram_base`]. Nothing else in the
//! guest-physical address space is backed: an access outside RAM (other than the hypercall window
//! on aarch64) stops the guest with [`EXIT_GUEST_VIOLATION`]. Offsets from the RAM base:
//!
//! | offset | what |
//! |---|---|
//! | [`BOOT_INFO_OFFSET`] | [`BootInfo`], then the command line (at most [`CMDLINE_MAX`] bytes) |
//! | [`PAGE_TABLES_OFFSET`] | x86_64: the tender's identity map (PML4, PDPT, PDs; 2 MiB pages) |
//! | the kernel's link address | the kernel's `PT_LOAD` segments (x86_64: 1 MiB; aarch64: RAM + 2 MiB) |
//! | [`BootInfo::data_addr`] | the image's data part, if any, page-aligned, near the top of RAM |
//!
//! RAM the guest has not touched costs the host nothing: the tender maps it lazily, so the guest
//! must not zero memory the tender hands over zeroed (`.bss`, the heap).
//!
//! # Entry state
//! - x86_64: 64-bit long mode, paging on with the tender's identity map of all RAM (read, write,
//!   execute, user-accessible; nothing else mapped but the hypercall window's 2 MiB page), CS a flat
//!   64-bit code segment, the other segments flat data,
//!   interrupts off, CR4.OSFXSR|OSXMMEXCPT set (SSE usable without further setup), RIP the ELF
//!   entry point, RDI the guest-physical address of [`BootInfo`], RSP 0 (the guest sets its own
//!   stack). No GDT, IDT or TSS is in memory: the guest loads its own before it reloads a segment or
//!   takes an exception. A triple fault stops the guest with [`EXIT_GUEST_VIOLATION`].
//! - aarch64: EL1h, MMU and caches off, DAIF masked, PC the ELF entry point, X0 the
//!   guest-physical address of [`BootInfo`], as in the arm64 Linux boot protocol.
//!
//! # Hypercalls
//! A hypercall is one exit carrying the guest-physical address of its argument block (a
//! `#[repr(C)]` struct below, naturally aligned, wholly inside RAM):
//! - x86_64: `out dx, eax` with `dx = HYPERCALL_PORT_BASE + call` and `eax` the address (so
//!   argument blocks live below 4 GiB);
//! - aarch64: a 64-bit store of the address to `HYPERCALL_MMIO_BASE + 8 * call`.
//!
//! On x86_64 the tender also accepts the aarch64 form, which works at any privilege level (`out`
//! faults at CPL 3). That matters under PVM nested KVM: there, guest code at CPL 0 is emulated
//! instruction by instruction while CPL 3 code runs natively (measured here: a 2-million-instruction
//! loop takes ~4 s at CPL 0 and ~0.6 ms at CPL 3), so a guest should drop to CPL 3 after its setup.
//! The identity map's entries are user-accessible for that reason. x86_64 RAM ends below the window.
//!
//! The tender validates every address and length against RAM before it touches guest memory, and
//! writes results back into the argument block. A malformed call (unknown number, argument block or
//! buffer outside RAM, a ring in an impossible state) is a violation: the guest is stopped with
//! [`EXIT_GUEST_VIOLATION`] and the tender says why on stderr. The tender never trusts the guest
//! further than "bytes inside its own RAM".
//!
//! # Exit statuses of the tender process
//! The guest's own status (0–255) from [`Hypercall::Exit`]; [`EXIT_TENDER_FAILURE`] when the tender
//! could not start the guest (bad image, wrong key, no KVM); [`EXIT_GUEST_VIOLATION`] when the guest
//! broke this contract. Appliances therefore do not use 125 and 126 themselves.
#![no_std]
#![warn(missing_docs)]

/// The ABI version in [`BootInfo::abi_version`]; also the version in the kernel's [`ELF_NOTE_NAME`]
/// note, so a tender refuses a kernel built for another version before running it.
pub const ABI_VERSION: u32 = 3;

/// The tender's exit status when it could not start the guest (bad image, untrusted key, no KVM).
pub const EXIT_TENDER_FAILURE: u8 = 125;
/// The tender's exit status when the guest broke this contract (see the crate docs).
pub const EXIT_GUEST_VIOLATION: u8 = 126;

/// [`BootInfo::magic`]: "MASTTNDR", little-endian.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"MASTTNDR");

/// A kernel built for the tender carries an ELF note with this name and type [`ELF_NOTE_TYPE_ABI`],
/// whose 4-byte descriptor is [`ABI_VERSION`] (little-endian). QEMU builds carry none (x86_64 ones
/// carry the PVH note instead), which is how each launcher refuses the other's kernels.
pub const ELF_NOTE_NAME: &str = "Mast";
/// The note type of the tender ABI note.
pub const ELF_NOTE_TYPE_ABI: u32 = 0x7e4d_0001;

/// Page size on both architectures.
pub const PAGE_SIZE: u64 = 4096;
/// Where [`BootInfo`] sits, from the RAM base. The page below it is never mapped by the tender's
/// page tables (x86_64), so a null pointer faults.
pub const BOOT_INFO_OFFSET: u64 = 0x1000;
/// The most command-line bytes the tender writes after [`BootInfo`] (in the same page).
pub const CMDLINE_MAX: u64 = 2048;
/// x86_64: where the tender builds its identity-map page tables, from the RAM base (up to 16 KiB).
pub const PAGE_TABLES_OFFSET: u64 = 0x2000;
/// Nothing the tender writes lies between here and the kernel, so the guest may use it freely.
pub const TENDER_AREA_END: u64 = 0x8000;

/// The guest-physical address of RAM on `arch` ("x86_64" or "aarch64"): 0 on x86_64; 1 GiB on
/// aarch64, as on QEMU `virt`, so the same link address (RAM + 2 MiB) serves both machines.
pub const fn ram_base(aarch64: bool) -> u64 {
    if aarch64 { 0x4000_0000 } else { 0 }
}

/// x86_64: hypercall `n` is `out` to port `HYPERCALL_PORT_BASE + n`.
pub const HYPERCALL_PORT_BASE: u16 = 0x500;
/// aarch64: hypercall `n` is a 64-bit store to `HYPERCALL_MMIO_BASE + 8 * n` (below RAM, never
/// backed by memory, so every store exits).
pub const HYPERCALL_MMIO_BASE: u64 = 0x3f00_0000;
/// The hypercall window holds this many calls' addresses (0..32; ABI 2 had 8, which `Ready`
/// and `Random` outgrew): a store to one with no call behind it is an unknown hypercall.
pub const HYPERCALL_WINDOW_CALLS: u64 = 32;

/// The hypercalls. The argument block of each is named in its docs.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hypercall {
    /// [`ConsoleWrite`]: write bytes to the console (the tender's stdout).
    ConsoleWrite = 1,
    /// [`Exit`]: stop the guest; the tender exits with the status.
    Exit = 2,
    /// [`Poll`]: move frames, then block until a frame arrives or the timeout passes.
    Poll = 3,
    /// [`NetAttach`]: tell the tender where the guest's [`NetRings`] are.
    NetAttach = 4,
    /// [`BlockIo`]: read sectors from the block device into guest memory.
    BlockRead = 5,
    /// [`BlockIo`]: write sectors from guest memory to the block device.
    BlockWrite = 6,
    /// [`BlockIo`] (only `result` is used): make every completed write durable.
    BlockFlush = 7,
    /// No argument block (the address is ignored): the appliance listens and serves. The tender
    /// records the time and tells its parent (`--ready-socket`), so an on-demand wake completes the moment the guest can answer
    /// (ABI 3).
    Ready = 8,
    /// [`Random`]: fill a guest buffer with bytes from the host's `getrandom` (the platform's
    /// entropy source; the guest seeds its own CSPRNG from it).
    Random = 9,
}

impl Hypercall {
    /// The call numbered `n`, if there is one.
    pub const fn from_number(n: u16) -> Option<Hypercall> {
        Some(match n {
            1 => Hypercall::ConsoleWrite,
            2 => Hypercall::Exit,
            3 => Hypercall::Poll,
            4 => Hypercall::NetAttach,
            5 => Hypercall::BlockRead,
            6 => Hypercall::BlockWrite,
            7 => Hypercall::BlockFlush,
            8 => Hypercall::Ready,
            9 => Hypercall::Random,
            _ => return None,
        })
    }

    /// The x86_64 I/O port of this call.
    pub const fn port(self) -> u16 {
        HYPERCALL_PORT_BASE + self as u16
    }

    /// The aarch64 MMIO address of this call.
    pub const fn mmio_address(self) -> u64 {
        HYPERCALL_MMIO_BASE + 8 * self as u64
    }
}

/// What the tender tells the guest at entry. At [`BOOT_INFO_OFFSET`] from the RAM base.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootInfo {
    /// [`BOOT_INFO_MAGIC`].
    pub magic: u64,
    /// [`ABI_VERSION`].
    pub abi_version: u32,
    /// [`FLAG_NET`], [`FLAG_BLOCK`].
    pub flags: u32,
    /// Guest-physical address of RAM ([`ram_base`]).
    pub ram_base: u64,
    /// Size of RAM in bytes: exactly the manifest's memory.
    pub ram_size: u64,
    /// Free RAM the guest may use as its heap, `[free_start, free_end)`: above the kernel's last
    /// segment, below the data part. Zeroed, and untouched by the tender.
    pub free_start: u64,
    /// The end (exclusive) of the free RAM that starts at [`BootInfo::free_start`].
    pub free_end: u64,
    /// The command line (UTF-8, no terminator), right after this struct.
    pub cmdline_addr: u64,
    /// Bytes of the command line (at most [`CMDLINE_MAX`]).
    pub cmdline_len: u64,
    /// The image's data part (the same bundle QEMU passes as the initrd), or 0 and 0.
    pub data_addr: u64,
    /// Bytes of the data part at [`BootInfo::data_addr`].
    pub data_len: u64,
    /// x86_64: the TSC frequency in kHz. aarch64: 0.
    pub tsc_khz: u64,
    /// The network interface's MAC address (with [`FLAG_NET`]).
    pub net_mac: [u8; 6],
    /// Zero; keeps the next field aligned.
    pub _reserved: [u8; 2],
    /// The block device's capacity in [`SECTOR_SIZE`] sectors (with [`FLAG_BLOCK`]).
    pub block_sectors: u64,
    /// x86_64: the guest's TSC when the tender created the VM, so that the guest's clock reads the
    /// time since then: `(TSC - tsc_at_creation)` at `tsc_khz`. About 0 where KVM offsets the
    /// guest's TSC; the host's TSC where it cannot (PVM nested KVM). aarch64: 0 (the virtual
    /// counter is the guest's own).
    pub tsc_at_creation: u64,
    /// The host's wall-clock time (`CLOCK_REALTIME`, nanoseconds since the Unix epoch) when the
    /// guest's clock read zero (read with [`BootInfo::tsc_at_creation`]); 0 if the host's clock
    /// could not be read. The guest's wall clock is this plus its monotonic clock, give or take
    /// [`WALL_CLOCK_UNCERTAINTY_NS`]. Added in ABI version 3.
    pub wall_clock_at_creation_ns: u64,
}

/// How far [`BootInfo::wall_clock_at_creation_ns`] may be from the guest's zero: the tender reads
/// the host's clock and the guest's counter back to back, well within this.
pub const WALL_CLOCK_UNCERTAINTY_NS: u64 = 10_000_000;

/// [`BootInfo::flags`]: a network interface is attached.
pub const FLAG_NET: u32 = 1 << 0;
/// [`BootInfo::flags`]: a block device is attached.
pub const FLAG_BLOCK: u32 = 1 << 1;

/// [`Hypercall::ConsoleWrite`]: `len` bytes at guest-physical `addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsoleWrite {
    /// Guest-physical address of the bytes.
    pub addr: u64,
    /// How many bytes to write.
    pub len: u64,
}

/// [`Hypercall::Exit`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exit {
    /// The status the tender exits with (0–255; see the crate docs for 125 and 126).
    pub status: u32,
    /// Zero.
    pub _reserved: u32,
}

/// [`Hypercall::Poll`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Poll {
    /// In: how long to block at most, in nanoseconds; 0 only moves frames; [`POLL_FOREVER`] has no
    /// limit.
    pub timeout_ns: u64,
    /// Out: how many frames the receive ring holds after the call.
    pub rx_ready: u32,
    /// Zero.
    pub _reserved: u32,
}

/// [`Poll::timeout_ns`]: block until a frame arrives.
pub const POLL_FOREVER: u64 = u64::MAX;

/// [`Hypercall::NetAttach`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetAttach {
    /// In: guest-physical address of the guest's [`NetRings`] (page-aligned).
    pub rings: u64,
    /// Out: [`RESULT_OK`] or [`RESULT_NO_DEVICE`].
    pub result: i32,
    /// Zero.
    pub _reserved: u32,
}

/// [`Hypercall::BlockRead`], [`Hypercall::BlockWrite`], [`Hypercall::BlockFlush`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockIo {
    /// The first sector.
    pub sector: u64,
    /// Guest-physical address of the buffer.
    pub addr: u64,
    /// Bytes to move: a multiple of [`SECTOR_SIZE`], inside the device.
    pub len: u64,
    /// Out: a `RESULT_*` value.
    pub result: i32,
    /// Zero.
    pub _reserved: u32,
}

/// [`Hypercall::Random`]: `len` bytes of entropy into guest-physical `addr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Random {
    /// Guest-physical address of the buffer.
    pub addr: u64,
    /// Bytes wanted: 1 to [`RANDOM_MAX`].
    pub len: u64,
    /// Out: [`RESULT_OK`] (the buffer is full), [`RESULT_INVALID`] (`len` is 0 or over
    /// [`RANDOM_MAX`]) or [`RESULT_IO_ERROR`] (the host's `getrandom` failed; the buffer is
    /// untouched).
    pub result: i32,
    /// Zero.
    pub _reserved: u32,
}

/// The most bytes one [`Hypercall::Random`] returns: Linux's `getrandom` never returns fewer than
/// asked up to 256 bytes, so one call is one host system call; a seed is 32.
pub const RANDOM_MAX: u64 = 256;

/// The block device's sector size.
pub const SECTOR_SIZE: u64 = 512;

/// A call's result, written back by the tender: it succeeded.
pub const RESULT_OK: i32 = 0;
/// The device does not exist.
pub const RESULT_NO_DEVICE: i32 = -1;
/// A request the device cannot serve (beyond its end, not a whole number of sectors).
pub const RESULT_INVALID: i32 = -2;
/// The host's I/O failed.
pub const RESULT_IO_ERROR: i32 = -3;

/// Frames per ring; a power of two.
pub const NET_RING_SLOTS: usize = 32;
/// The largest Ethernet frame (no FCS, no VLAN tag) a slot carries.
pub const NET_MAX_FRAME: usize = 1514;

/// One frame in a ring.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetSlot {
    /// Bytes of `frame` in use (at most [`NET_MAX_FRAME`]).
    pub len: u32,
    /// Zero.
    pub _reserved: u32,
    /// The frame, from its destination MAC address on; bytes past `len` are meaningless.
    pub frame: [u8; 2040],
}

/// A single-producer, single-consumer ring of frames. `produced` and `consumed` count frames since
/// the ring was attached and wrap at 2^32; the slot of frame `n` is `n % NET_RING_SLOTS`, and
/// `produced - consumed` (wrapping) never exceeds [`NET_RING_SLOTS`]. Only the producer advances
/// `produced`, only the consumer `consumed`. The tender touches the rings only during a hypercall,
/// while the (single) vCPU is stopped, so no fences are needed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetRing {
    /// Frames the producer has put in the ring since it was attached (wrapping).
    pub produced: u32,
    /// Frames the consumer has taken out of the ring since it was attached (wrapping).
    pub consumed: u32,
    /// Zero.
    pub _reserved: [u32; 2],
    /// The frames; frame `n` is in slot `n % NET_RING_SLOTS`.
    pub slots: [NetSlot; NET_RING_SLOTS],
}

impl NetRing {
    /// Frames waiting in the ring, or `None` if the counters are impossible (a broken or hostile
    /// producer or consumer).
    pub const fn pending(&self) -> Option<usize> {
        ring_pending(self.produced, self.consumed)
    }
}

/// [`NetRing::pending`] from the two counters alone (the tender reads only those from guest memory).
pub const fn ring_pending(produced: u32, consumed: u32) -> Option<usize> {
    let pending = produced.wrapping_sub(consumed) as usize;
    if pending <= NET_RING_SLOTS { Some(pending) } else { None }
}

/// The guest's rings, registered with [`Hypercall::NetAttach`]: `tx` is produced by the guest and
/// drained by the tender to the tap device; `rx` is filled by the tender from the tap device and
/// consumed by the guest. A frame that arrives while `rx` is full waits in the host's tap queue.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetRings {
    /// Frames the guest sends: produced by the guest, consumed by the tender.
    pub tx: NetRing,
    /// Frames the guest receives: produced by the tender, consumed by the guest.
    pub rx: NetRing,
}

#[cfg(test)]
mod tests {
    use core::mem::{align_of, size_of};

    use super::*;

    #[test]
    fn layouts_are_fixed() {
        // These sizes are the ABI: a change here must bump ABI_VERSION.
        assert_eq!(size_of::<BootInfo>(), 120);
        assert_eq!(size_of::<ConsoleWrite>(), 16);
        assert_eq!(size_of::<Exit>(), 8);
        assert_eq!(size_of::<Poll>(), 16);
        assert_eq!(size_of::<NetAttach>(), 16);
        assert_eq!(size_of::<BlockIo>(), 32);
        assert_eq!(size_of::<Random>(), 24);
        assert_eq!(size_of::<NetSlot>(), 2048);
        assert_eq!(size_of::<NetRing>(), 16 + 2048 * NET_RING_SLOTS);
        assert_eq!(align_of::<NetRings>(), 4);
        assert!(NET_RING_SLOTS.is_power_of_two());
        assert!(BOOT_INFO_OFFSET + size_of::<BootInfo>() as u64 + CMDLINE_MAX <= PAGE_TABLES_OFFSET);
    }

    #[test]
    fn hypercall_numbers_round_trip() {
        for n in 0..16 {
            if let Some(call) = Hypercall::from_number(n) {
                assert_eq!(call as u16, n);
                assert_eq!(call.port(), HYPERCALL_PORT_BASE + n);
            }
        }
        assert_eq!(Hypercall::from_number(0), None);
        assert_eq!(Hypercall::from_number(8), Some(Hypercall::Ready));
        assert_eq!(Hypercall::from_number(9), Some(Hypercall::Random));
        assert_eq!(Hypercall::from_number(10), None);
    }

    #[test]
    fn ring_pending_rejects_impossible_counters() {
        let mut ring = NetRing {
            produced: 0,
            consumed: 0,
            _reserved: [0; 2],
            slots: [NetSlot { len: 0, _reserved: 0, frame: [0; 2040] }; NET_RING_SLOTS],
        };
        assert_eq!(ring.pending(), Some(0));
        ring.produced = u32::MAX;
        ring.consumed = u32::MAX - NET_RING_SLOTS as u32;
        assert_eq!(ring.pending(), Some(NET_RING_SLOTS));
        ring.produced = 3; // wrapped past `consumed`
        ring.consumed = u32::MAX;
        assert_eq!(ring.pending(), Some(4));
        ring.produced = 100;
        ring.consumed = 0;
        assert_eq!(ring.pending(), None);
    }
}
