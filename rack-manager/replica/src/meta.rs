//! Image metas: a `.mast` file split into its small signed head and its chunks, and put back
//! together.
//!
//! The meta is the artifact's bytes before its first chunk (preamble and header: manifest, index,
//! signer, signature). It replicates eagerly; the chunks follow lazily. [`images::artifact`]
//! defines the format; this module only cuts along its seams.

use images::{
    artifact::{self, ImageId, VerifiedHeader, VerifyError},
    keys::TrustedKeys,
};

use crate::ChunkId;

/// A verified `.mast` file cut into its meta and its distinct chunks, in stored order.
#[derive(Debug)]
pub struct SplitImage<'a> {
    pub header: VerifiedHeader,
    pub meta: &'a [u8],
    pub chunks: Vec<(ChunkId, &'a [u8])>,
}

/// Verifies a whole `.mast` file (signature and every chunk) and cuts it into meta and chunks.
pub fn split<'a>(bytes: &'a [u8], trusted: &TrustedKeys) -> Result<SplitImage<'a>, VerifyError> {
    let verified = artifact::verify(bytes, trusted)?;
    let header = verified.header;
    let offset = header.chunks_offset as usize;
    let mut cursor = offset;
    let mut chunks = Vec::new();
    for chunk in header.body.distinct_chunks() {
        // `verify` checked that the chunk data is exactly these chunks, so the ranges are in bounds.
        let end = cursor + chunk.len as usize;
        chunks.push((ChunkId(chunk.hash), &bytes[cursor..end]));
        cursor = end;
    }
    Ok(SplitImage { meta: &bytes[..offset], header, chunks })
}

/// Verifies an image meta on its own: format, a trusted signer, the signature over the id, and
/// that nothing follows the header.
pub fn verify_meta(meta: &[u8], trusted: &TrustedKeys) -> Result<VerifiedHeader, VerifyError> {
    let header = artifact::verify_header(meta, trusted)?;
    if header.chunks_offset != meta.len() as u64 {
        return Err(VerifyError::TrailingBytes(meta.len() as u64 - header.chunks_offset));
    }
    Ok(header)
}

/// The id a meta claims, without verifying it (for naming a refused meta in a message).
pub fn claimed_id(meta: &[u8]) -> Option<ImageId> {
    artifact::read_unverified(meta).ok().map(|(id, ..)| id)
}

/// The distinct chunks of an image and their lengths, in stored order.
pub fn chunks_of(header: &VerifiedHeader) -> Vec<(ChunkId, u64)> {
    header.body.distinct_chunks().into_iter().map(|c| (ChunkId(c.hash), u64::from(c.len))).collect()
}

/// Puts a `.mast` file back together from its meta and its chunks' bytes (in stored order).
pub fn assemble<'a>(meta: &[u8], chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = meta.to_vec();
    for chunk in chunks {
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use images::{Arch, artifact::KERNEL_PART, keys::SigningKey, manifest};

    use super::*;

    #[test]
    fn split_and_assemble_are_inverses_and_a_meta_verifies_alone() {
        let key = SigningKey::from_seed([5; 32]);
        let trusted = TrustedKeys::new([key.public()]);
        let manifest =
            manifest::parse("t.toml", "name = \"t\"\nversion = \"1\"\narches = [\"aarch64\"]\nmemory_mib = 8\n")
                .expect("manifest");
        let kernel: Vec<u8> = (0..60_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let image = artifact::build(Arch::Aarch64, &manifest, &[(KERNEL_PART, &kernel)], &key);
        let split = split(&image, &trusted).expect("valid");
        assert!(split.chunks.len() > 3);
        assert_eq!(verify_meta(split.meta, &trusted).expect("meta verifies").id, split.header.id);
        assert_eq!(claimed_id(split.meta), Some(split.header.id));
        let rebuilt = assemble(split.meta, split.chunks.iter().map(|(_, b)| *b));
        assert_eq!(rebuilt, image);
        let mut longer = split.meta.to_vec();
        longer.push(0);
        assert!(verify_meta(&longer, &trusted).is_err(), "a meta carries no chunk bytes");
        assert!(verify_meta(split.meta, &TrustedKeys::default()).is_err(), "nobody trusted");
    }
}
