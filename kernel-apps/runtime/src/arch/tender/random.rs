//! The tender's entropy source: the `Random` hypercall, answered from the host's `getrandom`.
//!
//! Published through [`crate::entropy`]. Each call moves at most `RANDOM_MAX` bytes; longer
//! buffers take several calls.

use super::abi;

/// Fills `buf` from the host's `getrandom`; `Err(())` if the tender could not (its host call
/// failed), in which case `buf` may hold bytes from earlier calls but is not wholly random.
pub(crate) fn fill(buf: &mut [u8]) -> Result<(), ()> {
    for chunk in buf.chunks_mut(abi::RANDOM_MAX as usize) {
        let addr = chunk.as_mut_ptr().expose_provenance() as u64;
        let mut block = abi::Random { addr, len: chunk.len() as u64, result: abi::RESULT_IO_ERROR, _reserved: 0 };
        super::hypercall(abi::Hypercall::Random, &mut block);
        if block.result != abi::RESULT_OK {
            return Err(());
        }
    }
    Ok(())
}
