//! `hostile`: an appliance that breaks the tender ABI on purpose, to prove the tender stops it.
//!
//! The boot argument names the attack; each one must end with the tender stopping the guest and
//! exiting 126 (`tender_abi`'s guest-violation status). If the guest is still running afterwards,
//! it says so and exits 1, so a test sees the difference:
//!
//! - `write-outside` / `read-outside`: map guest-physical 0xC000_0000 (beyond RAM) into its own
//!   page tables, then write / read it: the access reaches the hypervisor as an access to memory
//!   that does not exist;
//! - `hypercall-outside`: `ConsoleWrite` of bytes beyond the end of RAM;
//! - `hypercall-overflow`: `ConsoleWrite` from near the end of RAM with a length that wraps the
//!   address space;
//! - `ring-corrupt`: attach network rings, claim 1000 more transmit frames than the ring holds,
//!   then `Poll` (needs a network interface);
//! - `bad-port`: an `out` to the UART's port, which the tender does not have;
//! - `unknown-call`: an `out` to a hypercall port with no call behind it.
//!
//! It runs on the tender only (x86_64): on QEMU it refuses to start (status 2). Exit statuses: 1 the
//! attack was not stopped, 2 bad or missing argument, 3 no network interface for `ring-corrupt`.
//!
//! The `unsafe` here is the point of the appliance: raw hypercalls and accesses the ABI forbids,
//! made at CPL 0 through `runtime::privileged` (the runtime runs appliances at CPL 3).
#![no_std]
#![no_main]

extern crate alloc;

use runtime::{Context, ExitCode, println};

runtime::entry!(main);

const NOT_STOPPED: ExitCode = ExitCode(1);
const BAD_ARGUMENTS: ExitCode = ExitCode(2);
const NO_NETWORK: ExitCode = ExitCode(3);

const ATTACKS: [&str; 7] = [
    "write-outside",
    "read-outside",
    "hypercall-outside",
    "hypercall-overflow",
    "ring-corrupt",
    "bad-port",
    "unknown-call",
];

fn main(ctx: &mut Context) -> ExitCode {
    if ctx.platform() != "tender" {
        println!("hostile: runs on the tender only (this is {})", ctx.platform());
        return BAD_ARGUMENTS;
    }
    let Some(attack) = ctx.args().iter().find(|arg| ATTACKS.contains(&arg.as_str())) else {
        println!("hostile: name an attack: {}", ATTACKS.join(", "));
        return BAD_ARGUMENTS;
    };
    println!("hostile: trying {attack}");
    runtime::console::flush();
    #[cfg(target_arch = "x86_64")]
    {
        // The runtime runs appliances at CPL 3; a hostile guest's kernel would be at CPL 0, where
        // `out` and CR3 are its to use.
        let mut request = x86_64::Request { attack: attack.as_str(), ram_end: ctx.ram_bytes() as u64, outcome: Ok(()) };
        runtime::privileged(x86_64::attack_at_cpl0, core::ptr::from_mut(&mut request).expose_provenance() as u64);
        if let Err(status) = request.outcome {
            return status;
        }
    }
    println!("hostile: {attack} was not stopped");
    NOT_STOPPED
}

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    use alloc::{
        alloc::{Layout, alloc_zeroed},
        boxed::Box,
    };
    use core::arch::asm;

    use runtime::{ExitCode, println};
    use tender_abi as abi;

    /// What [`attack_at_cpl0`] is to do, and what came of it.
    pub struct Request<'a> {
        pub attack: &'a str,
        pub ram_end: u64,
        pub outcome: Result<(), ExitCode>,
    }

    /// Runs the attack named in the [`Request`] at `request` (called at CPL 0).
    pub extern "C" fn attack_at_cpl0(request: u64) {
        // SAFETY: `main` passes the address of its live `Request`, which it does not touch until
        // this returns.
        let request = unsafe { &mut *core::ptr::with_exposed_provenance_mut::<Request<'_>>(request as usize) };
        let ram_end = request.ram_end;
        request.outcome = match request.attack {
            "write-outside" => write_outside(),
            "read-outside" => read_outside(),
            "hypercall-outside" => console_write(ram_end + 0x1000, 16),
            "hypercall-overflow" => console_write(ram_end - 16, u64::MAX - 8),
            "ring-corrupt" => ring_corrupt(),
            "bad-port" => bad_port(),
            _ => unknown_call(),
        };
    }

    /// A guest-physical address beyond any RAM the tender gives (it refuses more than 3 GiB).
    const OUTSIDE: u64 = 0xc000_0000;

    /// One page-aligned page table.
    #[repr(C, align(4096))]
    struct Table([u64; 512]);

    /// Adds a 2 MiB mapping of `OUTSIDE` to the tender's page tables: PML4[0] → PDPT, whose entry 3
    /// (3–4 GiB) gets a new page directory with one large page.
    fn map_outside() -> *mut u64 {
        let cr3: u64;
        // SAFETY: reading CR3 has no side effects.
        unsafe { asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags)) };
        let pml4 = (cr3 & !0xfff) as *mut u64;
        let directory = Box::leak(Box::new(Table([0; 512])));
        directory.0[0] = OUTSIDE | 0x83; // present, writable, 2 MiB page
        // SAFETY: deliberately hostile: the tender's page tables lie in guest RAM (identity-mapped,
        // writable), so the guest can extend them; the new directory is leaked, so it lives for
        // good. The flush makes the CPU see the new entry.
        unsafe {
            let pdpt = ((*pml4) & 0x000f_ffff_ffff_f000) as *mut u64;
            pdpt.add(3).write_volatile(core::ptr::from_mut(directory).expose_provenance() as u64 | 0x3);
            asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack, preserves_flags));
        }
        OUTSIDE as *mut u64
    }

    pub fn write_outside() -> Result<(), ExitCode> {
        let target = map_outside();
        // SAFETY: deliberately hostile: `target` is mapped by the guest's own page tables, but no
        // RAM is behind it; the tender must stop the guest rather than let the write land.
        unsafe { target.write_volatile(0x6d61_7374_6d61_7374) };
        Ok(())
    }

    pub fn read_outside() -> Result<(), ExitCode> {
        let target = map_outside();
        // SAFETY: deliberately hostile, as in `write_outside`, for a read.
        let value = unsafe { target.read_volatile() };
        println!("hostile: read {value:#x} beyond RAM");
        Ok(())
    }

    fn hypercall<T>(call: u16, block: &mut T) {
        let address = core::ptr::from_mut(block).expose_provenance() as u64;
        // SAFETY: deliberately hostile when `call` or the block's contents are: a raw hypercall;
        // the block is a live local the tender may write back into.
        unsafe {
            asm!("out dx, eax", in("dx") abi::HYPERCALL_PORT_BASE + call, in("eax") address as u32, options(nostack))
        };
    }

    pub fn console_write(addr: u64, len: u64) -> Result<(), ExitCode> {
        let mut block = abi::ConsoleWrite { addr, len };
        hypercall(abi::Hypercall::ConsoleWrite as u16, &mut block);
        Ok(())
    }

    pub fn ring_corrupt() -> Result<(), ExitCode> {
        let layout = Layout::new::<abi::NetRings>().align_to(abi::PAGE_SIZE as usize).map_err(|_| super::NO_NETWORK)?;
        // SAFETY: a non-zero-sized layout; all-zero bytes are valid empty rings. Leaked: the
        // tender may use them until the guest stops.
        let tx = unsafe { alloc_zeroed(layout) }.cast::<abi::NetRing>();
        if tx.is_null() {
            return Err(super::NO_NETWORK);
        }
        let mut attach =
            abi::NetAttach { rings: tx.expose_provenance() as u64, result: abi::RESULT_NO_DEVICE, _reserved: 0 };
        hypercall(abi::Hypercall::NetAttach as u16, &mut attach);
        if attach.result != abi::RESULT_OK {
            println!("hostile: ring-corrupt needs a network interface (NetAttach said {})", attach.result);
            return Err(super::NO_NETWORK);
        }
        // SAFETY: deliberately hostile: the attached rings are the guest's memory; it claims 1000
        // more frames than the ring can hold, which the tender must refuse at the next poll.
        unsafe {
            let consumed = core::ptr::addr_of!((*tx).consumed).read_volatile();
            core::ptr::addr_of_mut!((*tx).produced).write_volatile(consumed.wrapping_add(1000));
        }
        let mut poll = abi::Poll { timeout_ns: 0, rx_ready: 0, _reserved: 0 };
        hypercall(abi::Hypercall::Poll as u16, &mut poll);
        Ok(())
    }

    pub fn bad_port() -> Result<(), ExitCode> {
        // SAFETY: deliberately hostile: a write to COM1, a device the tender does not have.
        unsafe { asm!("out dx, al", in("dx") 0x3f8u16, in("al") b'!', options(nomem, nostack)) };
        Ok(())
    }

    pub fn unknown_call() -> Result<(), ExitCode> {
        let mut block = abi::Exit { status: 0, _reserved: 0 };
        hypercall(0x7f, &mut block);
        Ok(())
    }
}
