//! Randomness for appliances: the platform's entropy source, and a CSPRNG seeded from it.
//!
//! Every platform offers the same two calls:
//! - [`fill`] copies bytes from the platform's source: on QEMU `virt` and `microvm` the
//!   virtio-rng device (`virtio::rng`; the harness attaches one backed by the host's `getrandom`),
//!   on the tender the `Random` hypercall (the host's `getrandom`, `arch::tender::random`). Each
//!   call asks the host; use it for seeds, not for bulk.
//! - [`rng`] returns a fresh [`Rng`] (ChaCha20, from the `rand_chacha` crate) seeded with 32
//!   bytes from [`fill`]. Draw from it with the re-exported [`RngCore`] methods.
//!
//! An appliance must never seed anything security- or privacy-relevant from a constant or the
//! clock: there is no fallback here, so without a source both calls fail with
//! [`EntropyError::NoSource`] and the appliance decides (refusing to start is usually right).
//!
//! # Not supported
//! - The Raspberry Pi's own hardware RNG: on `raspi3b`/`raspi4b` (no virtio) both calls fail.
//! - Reseeding a running [`Rng`]: call [`rng`] again for a new stream.

use core::fmt;

pub use rand_chacha::ChaCha20Rng as Rng;
pub use rand_core::{CryptoRng, RngCore, SeedableRng};

/// Why no random bytes could be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntropyError {
    /// The platform has no entropy source, or it failed.
    NoSource,
}

impl fmt::Display for EntropyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "no entropy source: on QEMU attach a virtio-rng device (`-object rng-builtin,id=rng0 -device \
             virtio-rng-device,rng=rng0`, which Mast's launchers add), or run on the tender (ABI 3 or later)",
        )
    }
}

/// The platform's source, in words, for logs: `"virtio-rng"` or `"tender"`.
pub const SOURCE: &str = if cfg!(feature = "platform-tender") { "tender" } else { "virtio-rng" };

/// Fills `buf` with bytes from the platform's entropy source.
pub fn fill(buf: &mut [u8]) -> Result<(), EntropyError> {
    #[cfg(feature = "platform-tender")]
    let filled = crate::arch::tender::random::fill(buf);
    #[cfg(not(feature = "platform-tender"))]
    let filled = crate::virtio::rng::fill(buf);
    filled.map_err(|()| EntropyError::NoSource)
}

/// A new ChaCha20 CSPRNG seeded with 32 bytes from the platform's source.
pub fn rng() -> Result<Rng, EntropyError> {
    let mut seed = [0u8; 32];
    fill(&mut seed)?;
    Ok(Rng::from_seed(seed))
}
