//! `crash`: fails on purpose, to prove that failures are reported and reach the host.
//!
//! - no argument or `panic`: panics (status 101, message and location on the console);
//! - `fault`: reads unmapped memory, so the CPU raises an exception (status 102, fault report);
//! - `overflow`: recurses until the stack runs into its guard page (status 102, a report naming a
//!   stack overflow, on every platform: QEMU `virt`, `microvm`, the Pis and the tender);
//! - `exit N`: returns status N.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use runtime::{Context, ExitCode, println};

runtime::entry!(main);

/// Far above any RAM these appliances get and outside the identity map on both architectures.
const UNMAPPED_ADDRESS: usize = 0x10_0000_0000;

fn main(ctx: &mut Context) -> ExitCode {
    let mode = ctx.args().first().map(|s| s.as_str()).unwrap_or("panic");
    match mode {
        "panic" => panic!("crash appliance: deliberate panic"),
        "fault" => {
            println!("crash: reading unmapped address {UNMAPPED_ADDRESS:#x}");
            read_unmapped();
            println!("crash: the read returned, which it must not");
            ExitCode::FAILURE
        }
        "overflow" => {
            println!("crash: recursing until the stack runs out");
            let depth = recurse(0);
            println!("crash: the recursion returned at depth {depth}, which it must not");
            ExitCode::FAILURE
        }
        "exit" => match ctx.args().get(1).and_then(|n| n.parse::<u8>().ok()) {
            Some(code) => ExitCode(code),
            None => {
                println!("crash: usage: exit <0-255>");
                ExitCode::FAILURE
            }
        },
        other => {
            println!("crash: unknown mode {other:?}; expected panic, fault, overflow or exit N");
            ExitCode::FAILURE
        }
    }
}

/// Recurses without end (as far as the compiler can tell: the condition is opaque to it), each
/// frame holding a buffer the optimiser cannot drop, so the stack grows until it faults.
fn recurse(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 64]);
    if core::hint::black_box(true) { recurse(depth + 1) + frame[63] } else { frame[0] }
}

#[allow(unsafe_code)]
fn read_unmapped() {
    let pointer = UNMAPPED_ADDRESS as *const u64;
    // SAFETY: none; this read is meant to fault. It is the one thing this appliance exists to do,
    // and the runtime's exception vectors turn it into a report and status 102.
    let value = unsafe { core::ptr::read_volatile(pointer) };
    println!("crash: read {value:#x}");
}
