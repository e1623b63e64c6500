//! The Mast image artifact: one signed, content-addressed file per appliance build.
//!
//! # Layout (format version 2)
//! ```text
//! magic     8 bytes   89 4d 41 53 54 0d 0a 1a  ("\x89MAST\r\n\x1a")
//! version   u32 LE    1
//! hlen      u32 LE    length of the header
//! header    hlen      postcard: { body: bytes, signer: [u8; 32], signature: [u8; 64] }
//! chunks    …         every distinct chunk once, in order of first use
//! ```
//! The **body** (postcard) holds the format version, the architecture, the [`Manifest`] and the
//! index: for each part (`kernel`, and optionally `data`), its size and its chunks as
//! (BLAKE3 hash, length) pairs. Chunk boundaries come from content-defined chunking (FastCDC), so an
//! edit moves only the chunks it touches and two builds share every other chunk.
//!
//! The **image id** is the BLAKE3 hash of the body bytes: it names the manifest and every byte of
//! every part, whoever signed it. The signature is Ed25519 over `"mast-image-v1\0" ‖ id`.
//!
//! # Verification
//! [`verify`] checks, in order: magic and format version, bounds of every length, that the signer
//! is trusted, the signature over the id recomputed from the body, then every chunk's hash as it
//! is read. Only then are the parts assembled, so no caller ever sees a byte that was not verified.
//! [`verify_header`] does the first half alone, for replication that fetches chunks lazily.

use std::{
    collections::{HashMap, HashSet},
    fmt, fs, io,
    ops::Range,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    Arch,
    keys::{PublicKey, SigningKey, TrustedKeys},
    manifest::Manifest,
};

pub const MAGIC: [u8; 8] = *b"\x89MAST\r\n\x1a";
/// 2: the manifest records the board (`Manifest::board`).
pub const FORMAT_VERSION: u32 = 2;
const PREAMBLE_LEN: usize = 16;
const MAX_HEADER_LEN: u64 = 16 << 20;
const SIGNATURE_DOMAIN: &[u8] = b"mast-image-v1\0";

/// Content-defined chunking sizes: small enough that a changed file moves little, large enough
/// that the index stays a few percent of the image.
pub const CHUNK_MIN: u32 = 1024;
pub const CHUNK_AVG: u32 = 4096;
pub const CHUNK_MAX: u32 = 16384;

/// The name of the part that holds the bootable kernel.
pub const KERNEL_PART: &str = "kernel";
/// The name of the part that holds the appliance's data bundle, if it has one.
pub const DATA_PART: &str = "data";

/// The BLAKE3 hash that names an image.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ImageId(pub [u8; 32]);

impl ImageId {
    /// The first 12 hex digits, for tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageId({self})")
    }
}

/// One chunk of a part: its BLAKE3 hash and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkRef {
    pub hash: [u8; 32],
    pub len: u32,
}

/// A named byte string inside the image, as a list of chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub name: String,
    pub size: u64,
    pub chunks: Vec<ChunkRef>,
}

/// What the signature covers: manifest and index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    pub format_version: u32,
    pub arch: Arch,
    pub manifest: Manifest,
    pub parts: Vec<Part>,
}

impl Body {
    /// Every distinct chunk, in order of first use: the order they are stored in.
    pub fn distinct_chunks(&self) -> Vec<ChunkRef> {
        let mut seen = HashSet::new();
        self.parts.iter().flat_map(|p| &p.chunks).filter(|c| seen.insert(c.hash)).copied().collect()
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    body: Vec<u8>,
    signer: [u8; 32],
    signature: Vec<u8>,
}

/// Why an artifact was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not a Mast image: {0}")]
    NotAnImage(&'static str),
    #[error("unsupported image format version {found}; this tool reads version {FORMAT_VERSION}")]
    UnsupportedVersion { found: u32 },
    #[error("truncated: {what} needs {needed} bytes but the file has {available}")]
    Truncated { what: &'static str, needed: u64, available: u64 },
    #[error("{0} trailing bytes after the last chunk")]
    TrailingBytes(u64),
    #[error("the header is corrupt: {0}")]
    CorruptHeader(String),
    #[error("signed by {signer}, which is not a trusted key (trusted: {trusted})")]
    UntrustedKey { signer: PublicKey, trusted: String },
    #[error(
        "the signature does not match: the manifest or index was changed after signing, or the signature is damaged"
    )]
    BadSignature,
    #[error(
        "part {part:?}, chunk {index} (bytes {start}..{end} of the chunk data) does not match its hash: the image is corrupt"
    )]
    ChunkMismatch { part: String, index: usize, start: u64, end: u64 },
    #[error("the index is inconsistent: {0}")]
    BadIndex(String),
}

/// An image whose header (manifest and index) has been verified; its chunks may not have been.
#[derive(Debug, Clone)]
pub struct VerifiedHeader {
    pub id: ImageId,
    pub signer: PublicKey,
    pub body: Body,
    /// Where chunk data starts in the file.
    pub chunks_offset: u64,
}

/// An image verified end to end.
#[derive(Debug, Clone)]
pub struct VerifiedImage {
    pub header: VerifiedHeader,
    parts: Vec<Vec<u8>>,
}

impl VerifiedImage {
    pub fn id(&self) -> ImageId {
        self.header.id
    }

    pub fn manifest(&self) -> &Manifest {
        &self.header.body.manifest
    }

    pub fn arch(&self) -> Arch {
        self.header.body.arch
    }

    /// The bytes of the part called `name`.
    pub fn part(&self, name: &str) -> Option<&[u8]> {
        let index = self.header.body.parts.iter().position(|p| p.name == name)?;
        Some(&self.parts[index])
    }

    /// The bootable kernel.
    pub fn kernel(&self) -> &[u8] {
        self.part(KERNEL_PART).expect("verification requires a kernel part")
    }

    /// The appliance's data bundle, if the image carries one.
    pub fn data(&self) -> Option<&[u8]> {
        self.part(DATA_PART)
    }

    /// Writes the verified kernel to `dir/<image id>.<img|elf>` for QEMU to load, and returns
    /// its path. The file is written aside and renamed into place, so a concurrent boot of the
    /// same image never loads a half-written kernel.
    pub fn unpack_kernel(&self, dir: &Path) -> io::Result<PathBuf> {
        self.unpack(dir, self.arch().image_extension(), self.kernel())
    }

    /// Writes the verified data bundle to `dir/<image id>.data` (QEMU's `-initrd`), if any.
    pub fn unpack_data(&self, dir: &Path) -> io::Result<Option<PathBuf>> {
        self.data().map(|data| self.unpack(dir, "data", data)).transpose()
    }

    fn unpack(&self, dir: &Path, extension: &str, bytes: &[u8]) -> io::Result<PathBuf> {
        fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.{extension}", self.id()));
        let aside = dir.join(format!(".{}.{extension}.{}.tmp", self.id(), std::process::id()));
        fs::write(&aside, bytes)?;
        fs::rename(&aside, &path)?;
        Ok(path)
    }
}

/// Why an image file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum VerifyFileError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} was refused: {source}")]
    Invalid { path: String, source: VerifyError },
}

/// Reads and verifies the image file at `path`.
pub fn verify_file(path: &Path, trusted: &TrustedKeys) -> Result<VerifiedImage, VerifyFileError> {
    let shown = path.display().to_string();
    let bytes = fs::read(path).map_err(|source| VerifyFileError::Read { path: shown.clone(), source })?;
    verify(&bytes, trusted).map_err(|source| VerifyFileError::Invalid { path: shown, source })
}

/// How many bytes of `new`'s chunks a holder of `old` already has: what replicating `new` to a
/// place that stores `old` does not need to move.
pub fn shared_bytes(old: &Body, new: &Body) -> u64 {
    let have: HashSet<[u8; 32]> = old.distinct_chunks().iter().map(|c| c.hash).collect();
    new.distinct_chunks().iter().filter(|c| have.contains(&c.hash)).map(|c| u64::from(c.len)).sum()
}

/// Bytes of chunk data `body` stores (each distinct chunk once).
pub fn stored_bytes(body: &Body) -> u64 {
    body.distinct_chunks().iter().map(|c| u64::from(c.len)).sum()
}

/// Splits `bytes` into content-defined chunks.
pub fn chunk(bytes: &[u8]) -> Vec<Range<usize>> {
    fastcdc::v2020::FastCDC::new(bytes, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
        .map(|c| c.offset..c.offset + c.length)
        .collect()
}

/// Builds a signed artifact from a kernel and, optionally, further named parts.
pub fn build(arch: Arch, manifest: &Manifest, parts: &[(&str, &[u8])], key: &SigningKey) -> Vec<u8> {
    let mut stored: Vec<u8> = Vec::new();
    let mut seen = HashSet::new();
    let mut index = Vec::new();
    for (name, bytes) in parts {
        let mut chunks = Vec::new();
        for range in chunk(bytes) {
            let data = &bytes[range];
            let hash = *blake3::hash(data).as_bytes();
            if seen.insert(hash) {
                stored.extend_from_slice(data);
            }
            chunks.push(ChunkRef { hash, len: data.len() as u32 });
        }
        index.push(Part { name: (*name).to_owned(), size: bytes.len() as u64, chunks });
    }
    let body = Body { format_version: FORMAT_VERSION, arch, manifest: manifest.clone(), parts: index };
    let body = postcard::to_stdvec(&body).expect("serialising to memory cannot fail");
    let id = *blake3::hash(&body).as_bytes();
    let signature = key.sign(&signed_message(&id)).to_vec();
    let header = postcard::to_stdvec(&Header { body, signer: key.public().0, signature })
        .expect("serialising to memory cannot fail");

    let mut out = Vec::with_capacity(PREAMBLE_LEN + header.len() + stored.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&stored);
    out
}

fn signed_message(id: &[u8; 32]) -> Vec<u8> {
    [SIGNATURE_DOMAIN, id].concat()
}

/// Decodes the header without trusting it: for `inspect`, which shows what an image claims.
pub fn read_unverified(bytes: &[u8]) -> Result<(ImageId, PublicKey, Body, u64), VerifyError> {
    let (header, chunks_offset) = parse_header(bytes)?;
    let id = ImageId(*blake3::hash(&header.body).as_bytes());
    let body = decode_body(&header.body)?;
    Ok((id, PublicKey(header.signer), body, chunks_offset))
}

fn parse_header(bytes: &[u8]) -> Result<(Header, u64), VerifyError> {
    let available = bytes.len() as u64;
    if bytes.len() < PREAMBLE_LEN {
        if !MAGIC.starts_with(&bytes[..bytes.len().min(MAGIC.len())]) || bytes.is_empty() {
            return Err(VerifyError::NotAnImage("the file does not start with the Mast image magic"));
        }
        return Err(VerifyError::Truncated { what: "the preamble", needed: PREAMBLE_LEN as u64, available });
    }
    if bytes[..8] != MAGIC {
        return Err(VerifyError::NotAnImage("the file does not start with the Mast image magic"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(VerifyError::UnsupportedVersion { found: version });
    }
    let header_len = u64::from(u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")));
    if header_len > MAX_HEADER_LEN {
        return Err(VerifyError::CorruptHeader(format!("declared length {header_len} is implausible")));
    }
    let chunks_offset = PREAMBLE_LEN as u64 + header_len;
    if chunks_offset > available {
        return Err(VerifyError::Truncated { what: "the header", needed: chunks_offset, available });
    }
    let header_bytes = &bytes[PREAMBLE_LEN..chunks_offset as usize];
    let header: Header = postcard::from_bytes(header_bytes).map_err(|e| VerifyError::CorruptHeader(e.to_string()))?;
    if header.signature.len() != 64 {
        return Err(VerifyError::CorruptHeader(format!("a signature is 64 bytes, not {}", header.signature.len())));
    }
    Ok((header, chunks_offset))
}

fn decode_body(bytes: &[u8]) -> Result<Body, VerifyError> {
    let body: Body = postcard::from_bytes(bytes).map_err(|e| VerifyError::CorruptHeader(format!("body: {e}")))?;
    if body.format_version != FORMAT_VERSION {
        return Err(VerifyError::BadIndex(format!("the body says format version {}", body.format_version)));
    }
    let kernels = body.parts.iter().filter(|p| p.name == KERNEL_PART).count();
    if kernels != 1 {
        return Err(VerifyError::BadIndex(format!("{kernels} parts are named {KERNEL_PART:?}; exactly one must be")));
    }
    for part in &body.parts {
        let sum: u64 = part.chunks.iter().map(|c| u64::from(c.len)).sum();
        if sum != part.size {
            return Err(VerifyError::BadIndex(format!(
                "part {:?} is {} bytes but its chunks add up to {sum}",
                part.name, part.size
            )));
        }
        if part.chunks.iter().any(|c| c.len == 0 || c.len > CHUNK_MAX) {
            return Err(VerifyError::BadIndex(format!("part {:?} has a chunk of impossible length", part.name)));
        }
    }
    Ok(body)
}

/// Verifies the header: format, signer, signature. Needs only the file's first bytes.
pub fn verify_header(bytes: &[u8], trusted: &TrustedKeys) -> Result<VerifiedHeader, VerifyError> {
    let (header, chunks_offset) = parse_header(bytes)?;
    let signer = PublicKey(header.signer);
    if !trusted.contains(&signer) {
        let list = trusted.keys().iter().map(|k| k.to_string()[..12].to_owned() + "…").collect::<Vec<_>>();
        let trusted = if list.is_empty() { "none".into() } else { list.join(", ") };
        return Err(VerifyError::UntrustedKey { signer, trusted });
    }
    let id = *blake3::hash(&header.body).as_bytes();
    let signature: [u8; 64] = header.signature.as_slice().try_into().expect("length checked in parse_header");
    if !trusted.verify(&signer, &signed_message(&id), &signature) {
        return Err(VerifyError::BadSignature);
    }
    let body = decode_body(&header.body)?;
    Ok(VerifiedHeader { id: ImageId(id), signer, body, chunks_offset })
}

/// Verifies a whole artifact and returns its parts.
pub fn verify(bytes: &[u8], trusted: &TrustedKeys) -> Result<VerifiedImage, VerifyError> {
    let header = verify_header(bytes, trusted)?;
    let data = &bytes[header.chunks_offset as usize..];
    let needed: u64 = header.body.distinct_chunks().iter().map(|c| u64::from(c.len)).sum();
    let available = data.len() as u64;
    if available < needed {
        return Err(VerifyError::Truncated { what: "the chunk data", needed, available });
    }
    if available > needed {
        return Err(VerifyError::TrailingBytes(available - needed));
    }

    let mut located: HashMap<[u8; 32], Range<usize>> = HashMap::new();
    let mut cursor = 0usize;
    let mut parts = Vec::with_capacity(header.body.parts.len());
    for part in &header.body.parts {
        let mut bytes = Vec::with_capacity(part.size as usize);
        for (index, chunk) in part.chunks.iter().enumerate() {
            let range = match located.get(&chunk.hash) {
                Some(range) => range.clone(),
                None => {
                    let range = cursor..cursor + chunk.len as usize;
                    cursor = range.end;
                    if blake3::hash(&data[range.clone()]).as_bytes() != &chunk.hash {
                        return Err(VerifyError::ChunkMismatch {
                            part: part.name.clone(),
                            index,
                            start: range.start as u64,
                            end: range.end as u64,
                        });
                    }
                    located.insert(chunk.hash, range.clone());
                    range
                }
            };
            if range.len() != chunk.len as usize {
                return Err(VerifyError::BadIndex("one hash is listed with two lengths".into()));
            }
            bytes.extend_from_slice(&data[range]);
        }
        parts.push(bytes);
    }
    Ok(VerifiedImage { header, parts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;

    fn manifest() -> Manifest {
        manifest::parse("t.toml", "name = \"hello\"\nversion = \"1\"\narches = [\"aarch64\"]\nmemory_mib = 8\n")
            .expect("valid manifest")
    }

    fn kernel(len: usize, seed: u32) -> Vec<u8> {
        // Pseudo-random bytes so content-defined chunking finds boundaries.
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect()
    }

    fn key() -> SigningKey {
        SigningKey::from_seed([42; 32])
    }

    fn trusted() -> TrustedKeys {
        TrustedKeys::new([key().public()])
    }

    fn image() -> (Vec<u8>, Vec<u8>) {
        let k = kernel(100_000, 1);
        (build(Arch::Aarch64, &manifest(), &[(KERNEL_PART, &k), ("data", b"site files")], &key()), k)
    }

    #[test]
    fn a_built_image_verifies_and_gives_back_its_parts() {
        let (image, k) = image();
        let verified = verify(&image, &trusted()).expect("valid image");
        assert_eq!(verified.kernel(), k.as_slice());
        assert_eq!(verified.part("data"), Some(&b"site files"[..]));
        assert_eq!(verified.manifest(), &manifest());
        assert_eq!(verified.arch(), Arch::Aarch64);
        assert!(verified.header.body.parts[0].chunks.len() > 5, "100 kB should make many chunks");
    }

    #[test]
    fn the_id_depends_on_content_not_on_the_signer() {
        let k = kernel(50_000, 2);
        let a = build(Arch::Aarch64, &manifest(), &[(KERNEL_PART, &k)], &key());
        let b = build(Arch::Aarch64, &manifest(), &[(KERNEL_PART, &k)], &SigningKey::from_seed([9; 32]));
        let (id_a, ..) = read_unverified(&a).expect("readable");
        let (id_b, ..) = read_unverified(&b).expect("readable");
        assert_eq!(id_a, id_b);
        let mut other = k.clone();
        other[10] ^= 1;
        let c = build(Arch::Aarch64, &manifest(), &[(KERNEL_PART, &other)], &key());
        assert_ne!(read_unverified(&c).expect("readable").0, id_a);
    }

    #[test]
    fn repeated_chunks_are_stored_once() {
        let block = kernel(20_000, 3);
        let doubled = [block.clone(), block.clone()].concat();
        let image = build(Arch::Aarch64, &manifest(), &[(KERNEL_PART, &doubled)], &key());
        assert!(image.len() < doubled.len() * 3 / 4, "{} bytes stored for {}", image.len(), doubled.len());
        assert_eq!(verify(&image, &trusted()).expect("valid").kernel(), doubled.as_slice());
    }

    #[test]
    fn a_flipped_byte_anywhere_is_caught() {
        let (image, _) = image();
        let (_, _, _, chunks_offset) = read_unverified(&image).expect("readable");
        // Every byte of the preamble and header, and a spread of chunk bytes.
        let positions = (0..chunks_offset as usize).chain((chunks_offset as usize..image.len()).step_by(997));
        for at in positions {
            let mut bad = image.clone();
            bad[at] ^= 0x01;
            assert!(verify(&bad, &trusted()).is_err(), "a flipped byte at {at} was accepted");
        }
    }

    #[test]
    fn a_flipped_chunk_byte_names_the_chunk() {
        let (image, _) = image();
        let mut bad = image.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let e = verify(&bad, &trusted()).expect_err("corrupt chunk");
        assert!(matches!(e, VerifyError::ChunkMismatch { ref part, .. } if part == "data"), "{e}");
    }

    #[test]
    fn a_changed_manifest_or_index_breaks_the_signature() {
        let (image, _) = image();
        let (header, offset) = parse_header(&image).expect("parses");
        let mut body = decode_body(&header.body).expect("decodes");
        body.manifest.memory_mib = 4096;
        let forged = Header { body: postcard::to_stdvec(&body).expect("encodes"), ..header };
        let forged_header = postcard::to_stdvec(&forged).expect("encodes");
        let mut bad = Vec::new();
        bad.extend_from_slice(&image[..12]);
        bad.extend_from_slice(&(forged_header.len() as u32).to_le_bytes());
        bad.extend_from_slice(&forged_header);
        bad.extend_from_slice(&image[offset as usize..]);
        assert_eq!(verify(&bad, &trusted()).map(|_| ()), Err(VerifyError::BadSignature));
    }

    #[test]
    fn every_truncation_is_refused() {
        let (image, _) = image();
        for len in (0..image.len()).step_by(113).chain([image.len() - 1]) {
            assert!(verify(&image[..len], &trusted()).is_err(), "accepted a cut to {len} of {}", image.len());
        }
        let e = verify(&image[..image.len() - 10], &trusted()).expect_err("cut");
        assert!(e.to_string().starts_with("truncated: the chunk data needs"), "{e}");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let (mut image, _) = image();
        image.extend_from_slice(b"extra");
        assert_eq!(verify(&image, &trusted()).map(|_| ()), Err(VerifyError::TrailingBytes(5)));
    }

    #[test]
    fn an_unknown_format_version_is_named() {
        // Version 1 (before the manifest recorded the board) and a future one.
        for version in [1u8, 3] {
            let (mut image, _) = image();
            image[8] = version;
            let found = u32::from(version);
            assert_eq!(verify(&image, &trusted()).map(|_| ()), Err(VerifyError::UnsupportedVersion { found }));
        }
    }

    #[test]
    fn an_untrusted_signer_is_refused_even_with_a_valid_signature() {
        let k = kernel(10_000, 4);
        let stranger = SigningKey::from_seed([13; 32]);
        let image = build(Arch::Aarch64, &manifest(), &[(KERNEL_PART, &k)], &stranger);
        let e = verify(&image, &trusted()).expect_err("untrusted");
        assert!(matches!(e, VerifyError::UntrustedKey { signer, .. } if signer == stranger.public()), "{e}");
        assert!(verify(&image, &TrustedKeys::new([stranger.public()])).is_ok());
        assert!(verify(&image, &TrustedKeys::default()).is_err(), "nobody trusted, nothing verifies");
    }

    #[test]
    fn garbage_is_not_an_image() {
        assert!(matches!(verify(b"", &trusted()), Err(VerifyError::NotAnImage(_))));
        assert!(matches!(verify(&kernel(4096, 5), &trusted()), Err(VerifyError::NotAnImage(_))));
        assert!(matches!(verify(&MAGIC[..5], &trusted()), Err(VerifyError::Truncated { .. })));
    }

    #[test]
    fn shared_bytes_counts_what_a_peer_already_has() {
        let original = kernel(100_000, 7);
        let mut edited = original.clone();
        edited[50_000] ^= 0xff;
        let body = |k: &[u8]| {
            read_unverified(&build(Arch::Aarch64, &manifest(), &[(KERNEL_PART, k)], &key())).expect("readable").2
        };
        let (a, b) = (body(&original), body(&edited));
        assert_eq!(shared_bytes(&a, &a), stored_bytes(&a));
        let shared = shared_bytes(&a, &b);
        assert!(shared < stored_bytes(&b) && shared * 10 > stored_bytes(&b) * 8, "{shared} of {}", stored_bytes(&b));
    }

    #[test]
    fn an_edit_moves_only_nearby_chunks() {
        let original = kernel(200_000, 6);
        let mut edited = original.clone();
        edited.splice(100_000..100_010, b"a slightly longer replacement".iter().copied());
        let hashes = |bytes: &[u8]| chunk(bytes).into_iter().map(|r| blake3::hash(&bytes[r])).collect::<HashSet<_>>();
        let (a, b) = (hashes(&original), hashes(&edited));
        let shared = a.intersection(&b).count();
        assert!(shared * 10 >= a.len() * 8, "only {shared} of {} chunks survived a 10-byte edit", a.len());
    }
}
