//! `random`: proves that each boot gets its own randomness. It prints the platform's entropy
//! source, 16 bytes read from it directly and the first 16 bytes of a CSPRNG seeded from it
//! (`runtime::entropy`), then exits 0. Two boots must print different lines (the boot test
//! `qemu-tests/tests/random.rs` checks it on every platform).
//!
//! Exit statuses: 0 printed; 3 the platform has no entropy source (the message says what to attach).
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use runtime::{
    Context, ExitCode,
    entropy::{self, RngCore},
    println,
};

runtime::entry!(main);

const NO_SOURCE: ExitCode = ExitCode(3);

fn main(_ctx: &mut Context) -> ExitCode {
    let mut direct = [0u8; 16];
    let mut stream = [0u8; 16];
    let drawn = entropy::fill(&mut direct).and_then(|()| entropy::rng()).map(|mut rng| rng.fill_bytes(&mut stream));
    if let Err(e) = drawn {
        println!("random: {e}");
        return NO_SOURCE;
    }
    println!("random: source {} direct {} stream {}", entropy::SOURCE, Hex(&direct), Hex(&stream));
    ExitCode::SUCCESS
}

/// Bytes as lowercase hex.
struct Hex<'a>(&'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}
