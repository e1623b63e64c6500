//! A data part that is a web site (the manifest's `[http]` table): at `image build`, each file's
//! strong entity tag from its BLAKE3 hash, its `Cache-Control`, and a gzip variant of each
//! compressible file, written into the data part with the site index (`http1::site_index`) so the
//! appliance hashes and compresses nothing at run time.
//!
//! Caching: a file whose name carries a content hash (a `.`- or `-`-separated part of at least 8
//! hexadecimal digits with a digit among them, as bundlers name assets: `app.3f9a1c2b.js`) is
//! `max-age=31536000, immutable`; any other file `max-age=<max_age>`.
//! A gzip variant is kept only when it saves at least 10%. Output is deterministic (gzip header
//! without a time or a name), so images stay reproducible.

use std::io::Write;

use flate2::{Compression, write::GzEncoder};
use http1::site_index::{self, Entry};

use crate::manifest::SiteOptions;

/// `Cache-Control` of files whose names carry a content hash.
pub const IMMUTABLE: &str = "max-age=31536000, immutable";

/// Adds the site index and the gzip variants to `files` (bundle paths and contents).
pub fn describe(files: &mut Vec<(String, Vec<u8>)>, options: &SiteOptions) {
    files.retain(|(path, _)| !path.starts_with(".mast/"));
    let plain_cache = format!("max-age={}", options.max_age);
    struct Described {
        path: String,
        etag: String,
        cache_control: String,
        gzip: Option<(String, String)>,
    }
    let mut described = Vec::new();
    let mut variants = Vec::new();
    for (path, contents) in files.iter() {
        let hash = blake3::hash(contents).to_hex();
        let tag = &hash.as_str()[..32];
        let gzip = if options.precompress && compressible(path) { gzip(contents) } else { None };
        let gzip = gzip.filter(|gz| gz.len() * 10 <= contents.len() * 9).map(|gz| {
            let gz_path = format!("{}{path}.gz", site_index::GZIP_PREFIX);
            variants.push((gz_path.clone(), gz));
            (gz_path, format!("\"b3-{tag}-gz\""))
        });
        described.push(Described {
            path: path.clone(),
            etag: format!("\"b3-{tag}\""),
            cache_control: if has_content_hash(path) { IMMUTABLE.to_owned() } else { plain_cache.clone() },
            gzip,
        });
    }
    let entries: Vec<Entry<'_>> = described
        .iter()
        .map(|d| Entry {
            path: &d.path,
            etag: &d.etag,
            cache_control: &d.cache_control,
            gzip: d.gzip.as_ref().map(|(p, e)| (p.as_str(), e.as_str())),
        })
        .collect();
    let index = site_index::write(&entries);
    files.extend(variants);
    files.push((site_index::PATH.to_owned(), index.into_bytes()));
}

/// Text-like files, which gzip shrinks: by the content type the server will send.
fn compressible(path: &str) -> bool {
    let content_type = http1::content_type(path);
    content_type.starts_with("text/")
        || content_type.starts_with("application/json")
        || content_type.starts_with("image/svg")
        || content_type == "application/wasm"
}

fn gzip(contents: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(contents).ok()?;
    encoder.finish().ok()
}

/// Whether the file name carries a content hash (see the module docs).
pub fn has_content_hash(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let Some((stem, _extension)) = name.rsplit_once('.') else { return false };
    stem.split(['.', '-', '_']).any(|part| {
        part.len() >= 8 && part.bytes().all(|b| b.is_ascii_hexdigit()) && part.bytes().any(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names() {
        assert!(has_content_hash("assets/app.3f9a1c2b.js"));
        assert!(has_content_hash("app-0123abcd.css"));
        assert!(!has_content_hash("index.html"));
        assert!(!has_content_hash("deadbeefcafe.js"));
        assert!(!has_content_hash("3f9a1c2b"));
        assert!(!has_content_hash("app.3f9a1c.js"));
    }

    #[test]
    fn describes_files_with_tags_caching_and_useful_variants() {
        let html = "<p>hello</p>\n".repeat(100).into_bytes();
        let mut files = vec![
            ("index.html".to_owned(), html.clone()),
            ("mast.png".to_owned(), vec![1, 2, 3]),
            ("app.0123abcd.js".to_owned(), b"x".to_vec()),
        ];
        describe(&mut files, &SiteOptions { max_age: 60, precompress: true });
        let index = files.iter().find(|(p, _)| p == site_index::PATH).expect("index");
        let text = String::from_utf8(index.1.clone()).expect("text");
        let entries = site_index::parse(&text).expect("valid index");
        assert_eq!(entries.len(), 3);
        let page = entries.iter().find(|e| e.path == "index.html").expect("page");
        assert_eq!(page.cache_control, "max-age=60");
        let hash = blake3::hash(&html).to_hex();
        assert_eq!(page.etag, format!("\"b3-{}\"", &hash.as_str()[..32]));
        let (gz_path, _) = page.gzip.expect("html compresses");
        let gz = &files.iter().find(|(p, _)| p == gz_path).expect("variant").1;
        let mut unpacked = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut unpacked).expect("gzip");
        assert_eq!(unpacked, html);
        assert!(entries.iter().find(|e| e.path == "mast.png").expect("png").gzip.is_none());
        let asset = entries.iter().find(|e| e.path == "app.0123abcd.js").expect("asset");
        assert_eq!((asset.cache_control, asset.gzip), (IMMUTABLE, None));
    }
}
