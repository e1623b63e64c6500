//! `hello`: the smallest useful appliance. It greets, echoes its arguments, reports how long the
//! machine took from reset to this function, says what time it is (the wall clock), describes its data bundle if it was given one, and
//! exits 0.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use runtime::{Context, ExitCode, println};

runtime::entry!(main);

fn main(ctx: &mut Context) -> ExitCode {
    println!("Hello from Mast on {}!", ctx.platform());
    println!("args: {:?}", ctx.args());
    let boot = ctx.boot_times();
    println!(
        "boot: reset -> entry {} us, reset -> main {} us; RAM {} MiB, heap free {} KiB",
        boot.entry.as_micros(),
        boot.main.as_micros(),
        ctx.ram_bytes() >> 20,
        ctx.heap_free_bytes() >> 10,
    );
    // The wall clock, as the platform set it at boot (see `runtime::wallclock`).
    match runtime::wallclock::now() {
        Some(now) => println!(
            "clock: {}.{:03} +- {} ms ({})",
            now.unix.as_secs(),
            now.unix.subsec_millis(),
            u64::try_from(now.uncertainty.as_millis()).unwrap_or(u64::MAX),
            now.source.name()
        ),
        None => println!("clock: unsynchronised"),
    }
    if let Some(data) = ctx.data() {
        let bytes: usize = data.iter().map(|(_, contents)| contents.len()).sum();
        // A position-weighted checksum, so the host can tell the bytes arrived intact and in order.
        let checksum =
            data.iter().flat_map(|(_, contents)| contents).fold(0u32, |sum, &b| sum.rotate_left(5) ^ u32::from(b));
        println!("data: {} files, {bytes} bytes, checksum {checksum:08x}", data.len());
    }
    ExitCode::SUCCESS
}
