//! The site index: what `image build` works out about a site's files so the server does no work
//! at run time: each file's strong entity tag (from its BLAKE3 hash), its `Cache-Control`, and its
//! precompressed gzip variant, if one is worth sending.
//!
//! It travels in the image's data part as the file [`PATH`], one line per served file, fields
//! separated by tabs:
//!
//! ```text
//! PATH  ETAG  CACHE-CONTROL  GZIP-PATH  GZIP-ETAG
//! ```
//!
//! `GZIP-PATH` and `GZIP-ETAG` are `-` when the file has no gzip variant. Paths are bundle paths
//! (no leading `/`). Files under `.mast/` (the index and the variants) are never served by path.
//! [`write()`] (at build time) and [`parse()`] (in the appliance) are the two halves of the format.

use alloc::{string::String, vec::Vec};

/// The bundle path of the index.
pub const PATH: &str = ".mast/site-index";
/// Where the gzip variants live in the bundle: this, then the file's path, then `.gz`.
pub const GZIP_PREFIX: &str = ".mast/gzip/";
/// The first line of the index: its format and version.
pub const HEADER: &str = "mast-site-index 1";

/// One served file, as the index describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The file's bundle path.
    pub path: &'a str,
    /// Its strong entity tag, quotes included.
    pub etag: &'a str,
    /// Its `Cache-Control` value.
    pub cache_control: &'a str,
    /// Its gzip variant's bundle path and entity tag.
    pub gzip: Option<(&'a str, &'a str)>,
}

/// The index text for `entries`.
pub fn write(entries: &[Entry<'_>]) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    for entry in entries {
        let (gzip_path, gzip_etag) = entry.gzip.unwrap_or(("-", "-"));
        for (i, field) in [entry.path, entry.etag, entry.cache_control, gzip_path, gzip_etag].iter().enumerate() {
            if i > 0 {
                out.push('\t');
            }
            out.push_str(field);
        }
        out.push('\n');
    }
    out
}

/// Why an index could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexError {
    /// The 1-based line that is wrong (1: the header).
    pub line: usize,
}

impl core::fmt::Display for IndexError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "line {} of {PATH} is not what `image build` writes: rebuild the image", self.line)
    }
}

/// Reads an index written by [`write()`].
pub fn parse(text: &str) -> Result<Vec<Entry<'_>>, IndexError> {
    let mut lines = text.split('\n');
    if lines.next() != Some(HEADER) {
        return Err(IndexError { line: 1 });
    }
    let mut entries = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let error = IndexError { line: i + 2 };
        let mut fields = line.split('\t');
        let mut field = || {
            fields.next().filter(|value| !value.is_empty() && value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()))
        };
        let (Some(path), Some(etag), Some(cache_control), Some(gzip_path), Some(gzip_etag)) =
            (field(), field(), field(), field(), field())
        else {
            return Err(error);
        };
        if fields.next().is_some() {
            return Err(error);
        }
        let gzip = match (gzip_path, gzip_etag) {
            ("-", "-") => None,
            ("-", _) | (_, "-") => return Err(error),
            pair => Some(pair),
        };
        entries.push(Entry { path, etag, cache_control, gzip });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let entries = [
            Entry {
                path: "index.html",
                etag: "\"b3-0011\"",
                cache_control: "public, max-age=300",
                gzip: Some((".mast/gzip/index.html.gz", "\"b3-0011-gz\"")),
            },
            Entry {
                path: "app.0123abcd.js",
                etag: "\"b3-22\"",
                cache_control: "public, max-age=31536000, immutable",
                gzip: None,
            },
        ];
        let text = write(&entries);
        assert_eq!(parse(&text).expect("valid"), entries);
    }

    #[test]
    fn refuses_what_it_does_not_write() {
        assert_eq!(parse(""), Err(IndexError { line: 1 }));
        assert_eq!(parse("mast-site-index 2\n"), Err(IndexError { line: 1 }));
        assert_eq!(parse("mast-site-index 1\na\tb\n"), Err(IndexError { line: 2 }));
        assert_eq!(parse("mast-site-index 1\na\t\"e\"\tc\tx.gz\t-\n"), Err(IndexError { line: 2 }));
        assert_eq!(parse("mast-site-index 1\na\t\"e\"\tc\r\n\t-\t-\n"), Err(IndexError { line: 2 }));
        assert_eq!(parse("mast-site-index 1\n").expect("empty"), []);
    }
}
