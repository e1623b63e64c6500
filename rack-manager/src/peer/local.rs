//! This rack's image metas and chunks, as the peer protocol serves them and the image sync reuses
//! them: from the `replica` chunk store (every pushed or replicated image is imported there),
//! falling back to the verified `.mast` files for an image the store does not hold.

use std::{
    cell::OnceCell,
    collections::HashMap,
    fs,
    io::{Read, Seek, SeekFrom},
    path::PathBuf,
};

use images::artifact::{self, ImageId};
use replica::ChunkId;

use crate::{datadir::DataDir, rack::Rack};

/// Where each chunk of the `.mast` files lies: hash → (file, offset, length).
type FileIndex = HashMap<[u8; 32], (PathBuf, u64, u32)>;

pub struct LocalChunks<'a> {
    rack: &'a Rack,
    files: OnceCell<FileIndex>,
}

impl<'a> LocalChunks<'a> {
    pub fn new(rack: &'a Rack) -> LocalChunks<'a> {
        LocalChunks { rack, files: OnceCell::new() }
    }

    /// Built on first need only: the chunk store answers for every image pushed since it exists.
    fn files(&self) -> &FileIndex {
        self.files.get_or_init(|| {
            let ids: Vec<String> =
                self.rack.store().images().map(|all| all.into_iter().map(|i| i.id).collect()).unwrap_or_default();
            file_index(&self.rack.dir, &ids)
        })
    }

    pub fn has(&self, hash: &[u8; 32]) -> bool {
        self.rack.replication.replicator.store().has(&ChunkId(*hash)) || self.files().contains_key(hash)
    }

    pub fn get(&self, hash: &[u8; 32]) -> Option<Vec<u8>> {
        if let Ok(bytes) = self.rack.replication.replicator.store().get(&ChunkId(*hash)) {
            return Some(bytes);
        }
        let (path, offset, len) = self.files().get(hash)?;
        read_chunk(path, *offset, *len).ok()
    }

    /// The image's preamble and signed header: everything before its chunks.
    pub fn meta(&self, id: &ImageId) -> Option<Vec<u8>> {
        if let Ok(meta) = self.rack.replication.replicator.store().image_meta(id) {
            return Some(meta);
        }
        let bytes = fs::read(self.rack.dir.image(&id.to_string())).ok()?;
        let (_, _, _, chunks_offset) = artifact::read_unverified(&bytes).ok()?;
        bytes.get(..chunks_offset as usize).map(<[u8]>::to_vec)
    }
}

fn file_index(data: &DataDir, image_ids: &[String]) -> FileIndex {
    let mut index = HashMap::new();
    for id in image_ids {
        let path = data.image(id);
        let Ok(bytes) = fs::read(&path) else { continue };
        let Ok((_, _, body, chunks_offset)) = artifact::read_unverified(&bytes) else { continue };
        let mut offset = chunks_offset;
        for chunk in body.distinct_chunks() {
            index.entry(chunk.hash).or_insert_with(|| (path.clone(), offset, chunk.len));
            offset += u64::from(chunk.len);
        }
    }
    index
}

fn read_chunk(path: &PathBuf, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
    let mut file = fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = vec![0; len as usize];
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}
