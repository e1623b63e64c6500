//! What a guest can do wrong: every way it can break the tender ABI, each with a message that
//! names what it did. A violation stops the guest with [`tender_abi::EXIT_GUEST_VIOLATION`].

use tender_abi::{HYPERCALL_MMIO_BASE, HYPERCALL_PORT_BASE, Hypercall};

/// One breach of the contract, as reported on stderr.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("{access} of {len} bytes at guest-physical address {addr:#x}, which is not RAM")]
    UnbackedMemory { addr: u64, len: usize, access: Access },
    // Only x86_64 has I/O ports.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    #[error(
        "{access} of I/O port {port:#x} ({len} bytes); the tender has no ports but the hypercall ports ({HYPERCALL_PORT_BASE:#x} + call, `out dx, eax`)"
    )]
    Port { port: u16, len: usize, access: Access },
    #[error("hypercall number {number} does not exist")]
    UnknownHypercall { number: u64 },
    #[error(
        "hypercall {call:?} with a {len}-byte argument (x86_64: `out dx, eax`, 4 bytes; aarch64: a 64-bit store to {HYPERCALL_MMIO_BASE:#x} + 8 * call)"
    )]
    HypercallWidth { call: Hypercall, len: usize },
    #[error("hypercall {call:?}: argument block at {addr:#x} ({len} bytes) is {problem}")]
    ArgumentBlock { call: Hypercall, addr: u64, len: usize, problem: &'static str },
    #[error("hypercall {call:?}: {what} at {addr:#x} with length {len:#x} is not inside guest RAM")]
    Buffer { call: Hypercall, what: &'static str, addr: u64, len: u64 },
    #[error("hypercall Exit with status {status}, outside 0..=255")]
    ExitStatus { status: u32 },
    #[error(
        "{ring} ring in an impossible state: produced {produced}, consumed {consumed} (at most {} frames fit)",
        tender_abi::NET_RING_SLOTS
    )]
    RingCounters { ring: &'static str, produced: u32, consumed: u32 },
    #[error("tx ring slot {slot} holds a {len}-byte frame, more than the {}-byte maximum", tender_abi::NET_MAX_FRAME)]
    FrameTooLong { slot: usize, len: u32 },
    #[error("triple fault (KVM shutdown exit): an exception the guest could not handle")]
    Shutdown,
    #[error("halted with `hlt`, which nothing can wake (no interrupts): use the Poll hypercall to wait")]
    Halted,
    #[error("KVM could not emulate an instruction (internal error, suberror {suberror})")]
    InternalError { suberror: u32 },
    #[error("KVM could not enter the guest (hardware entry failure reason {reason:#x})")]
    FailEntry { reason: u64 },
    #[error("left the guest for an unexpected reason: {what}")]
    UnexpectedExit { what: String },
}

/// Which way an access went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}
