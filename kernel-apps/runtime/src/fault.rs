//! Words for CPU exceptions, so a fault report reads as a sentence rather than a hex dump.
//!
//! Pure decoding only; the vectors that catch the exceptions live in `arch`.

pub mod aarch64;
pub mod x86_64;
