//! Arbitrary bytes, in arbitrary reads, into the codec (the body is `tests/fuzz_body/mod.rs`).
#![no_main]

#[path = "../../tests/fuzz_body/mod.rs"]
mod fuzz_body;

libfuzzer_sys::fuzz_target!(|input: &[u8]| fuzz_body::run(input));
