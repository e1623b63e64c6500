//! A static site: files compiled into the appliance, and the policy that answers requests for them.

use core::fmt;

use crate::representation;
use crate::request::{Content, Method, RequestHead};
use crate::response::{ContentRange, Meta, Response, Status, TEXT_PLAIN};

/// The path of the built-in health check, answered `200 ok\n` whatever the site holds.
pub const HEALTH_PATH: &str = "/healthz";

/// The content type of files whose extension is not in the table of [`content_type`].
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Content types by file extension (compared case-insensitively).
const CONTENT_TYPES: &[(&str, &str)] = &[
    ("html", "text/html; charset=utf-8"),
    ("htm", "text/html; charset=utf-8"),
    ("css", "text/css; charset=utf-8"),
    ("js", "text/javascript; charset=utf-8"),
    ("mjs", "text/javascript; charset=utf-8"),
    ("json", "application/json"),
    ("txt", TEXT_PLAIN),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("gif", "image/gif"),
    ("svg", "image/svg+xml"),
    ("ico", "image/x-icon"),
    ("wasm", "application/wasm"),
    ("woff2", "font/woff2"),
];

/// The content type of a file, by the extension of its last path segment: `text/html` for
/// `/index.html`, [`OCTET_STREAM`] for `/data.bin` or `/README`.
pub fn content_type(path: &str) -> &'static str {
    let name = path.rsplit_once('/').map_or(path, |(_, name)| name);
    let Some((_, extension)) = name.rsplit_once('.') else {
        return OCTET_STREAM;
    };
    CONTENT_TYPES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(extension))
        .map_or(OCTET_STREAM, |&(_, content_type)| content_type)
}

/// One file of a site, with what `image build` worked out about it (see [`crate::site_index`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SiteFile {
    /// The path it is served at, starting with `/`.
    pub path: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
    /// Its strong entity tag, with quotes (from its content hash).
    pub etag: Option<&'static str>,
    /// Its `Cache-Control` value.
    pub cache_control: Option<&'static str>,
    /// Its precompressed gzip variant and that variant's entity tag.
    pub gzip: Option<(&'static [u8], &'static str)>,
}

/// Where a site's files come from.
#[derive(Clone, Copy)]
enum Files {
    /// Paths and bytes only: no validators, caching or variants.
    Plain(&'static [(&'static str, &'static [u8])]),
    /// Described by a site index.
    Described(&'static [SiteFile]),
}

/// A site of static files, each a path and its bytes, typically `include_bytes!`ed:
///
/// ```
/// use http1::StaticSite;
///
/// static SITE: StaticSite = StaticSite::new(&[
///     ("/index.html", b"<!doctype html><title>hi</title>"),
///     ("/style.css", b"body { color: teal }"),
/// ]);
/// assert_eq!(SITE.lookup("/").map(|(path, _)| path), Some("/index.html"));
/// ```
///
/// Paths start with `/` and are compared byte for byte with the decoded request path, so they
/// are case-sensitive and hold no `%` escapes. Lookups are linear: the site is meant to be small.
///
/// A site built [`StaticSite::described`] from [`SiteFile`]s answers as an origin server should
/// (RFC 9110/9111): `ETag`, `Cache-Control`, `If-None-Match` and `If-Modified-Since` → 304, a single
/// `Range` → 206 or 416 (`If-Range` honoured), the gzip variant for clients that accept it
/// (`Vary: Accept-Encoding`), and, given a clock ([`StaticSite::with_clock`]), `Date` and
/// `Last-Modified`. HEAD gets exactly GET's head.
#[derive(Clone, Copy)]
pub struct StaticSite {
    files: Files,
    clock: Option<fn() -> Option<u64>>,
    last_modified: Option<u64>,
}

impl fmt::Debug for StaticSite {
    /// Paths and sizes, not contents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        match self.files {
            Files::Plain(files) => map.entries(files.iter().map(|(path, bytes)| (path, bytes.len()))),
            Files::Described(files) => map.entries(files.iter().map(|file| (file.path, file.body.len()))),
        };
        map.finish()
    }
}

impl StaticSite {
    /// A site of `files`. A path that does not start with `/` can never be requested.
    pub const fn new(files: &'static [(&'static str, &'static [u8])]) -> Self {
        Self { files: Files::Plain(files), clock: None, last_modified: None }
    }

    /// A site of described `files` (see the type's documentation).
    pub const fn described(files: &'static [SiteFile]) -> Self {
        Self { files: Files::Described(files), clock: None, last_modified: None }
    }

    /// This site with a wall clock: `clock` returns the time in seconds since the Unix epoch, or
    /// `None` while it is not trustworthy (then no `Date` is sent). `last_modified` is when the
    /// files last changed, at the latest (an appliance's files change only with its image, so the
    /// boot time will do); it is sent as `Last-Modified` and answers `If-Modified-Since`.
    pub const fn with_clock(self, clock: fn() -> Option<u64>, last_modified: Option<u64>) -> Self {
        Self { clock: Some(clock), last_modified, ..self }
    }

    /// The file a request path names, as (site path, bytes). `path` is percent-decoded first
    /// (a malformed escape finds nothing), and a path ending in `/` names the `index.html` in
    /// that directory, so `/` finds `/index.html`.
    pub fn lookup(&self, path: &str) -> Option<(&'static str, &'static [u8])> {
        self.lookup_file(path).map(|file| (file.path, file.body))
    }

    /// Like [`StaticSite::lookup`], with what the site knows about the file.
    pub fn lookup_file(&self, path: &str) -> Option<SiteFile> {
        match self.files {
            Files::Plain(files) => files
                .iter()
                .find(|(file, _)| path_names(path, file))
                .map(|&(path, body)| SiteFile { path, body, etag: None, cache_control: None, gzip: None }),
            Files::Described(files) => files.iter().find(|file| path_names(path, file.path)).copied(),
        }
    }

    /// The response to `request`, in this order (the crate documentation has the whole table):
    /// - a method other than GET or HEAD: 405;
    /// - any request content: 413 for a `Content-Length`, 501 for a `Transfer-Encoding`;
    /// - a target whose path does not start with `/` (`*`, `host:port`): 400;
    /// - [`HEALTH_PATH`]: 200 `ok\n`;
    /// - a file of the site ([`StaticSite::lookup`]): 200 with the file, typed by
    ///   [`content_type`]; or, for a described site, 304, 206 or 416 (see the type's docs);
    /// - anything else: 404.
    ///
    /// The response is the same for HEAD as for GET; the connection leaves out the body.
    pub fn respond(&self, request: &RequestHead<'_>) -> Response {
        let date = self.clock.and_then(|clock| clock());
        let mut response = self.respond_at(request, date);
        // Every response carries the date (RFC 9110 §6.6.1), set in this one place.
        response.meta.date = date;
        response
    }

    /// [`StaticSite::respond`] at wall-clock time `date`, without the `Date` field.
    fn respond_at(&self, request: &RequestHead<'_>, date: Option<u64>) -> Response {
        if !matches!(request.method, Method::Get | Method::Head) {
            return Response::error(Status::MethodNotAllowed);
        }
        match request.content {
            Content::None => {}
            Content::Length(_) => return Response::error(Status::ContentTooLarge),
            Content::TransferCoded => return Response::error(Status::NotImplemented),
        }
        let path = request.path();
        if !path.starts_with('/') {
            return Response::error(Status::BadRequest);
        }
        if path_names(path, HEALTH_PATH) {
            return Response::ok(TEXT_PLAIN, b"ok\n").with_meta(Meta {
                date,
                cache_control: Some("no-store"),
                ..Meta::NONE
            });
        }
        let Some(file) = self.lookup_file(path) else {
            return Response::error(Status::NotFound);
        };
        if file.etag.is_none() {
            // A plain site: the file, as it is.
            return Response::ok(content_type(file.path), file.body);
        }
        // Last-Modified never lies in the future of the Date it is sent with.
        let last_modified = match (self.last_modified, date) {
            (Some(modified), Some(now)) => Some(modified.min(now)),
            (modified, _) => modified,
        };
        let gzip = file.gzip.filter(|_| representation::accepts_gzip(request.header("accept-encoding")));
        let (body, etag, content_encoding) = match gzip {
            Some((body, etag)) => (body, Some(etag), Some("gzip")),
            None => (file.body, file.etag, None),
        };
        let meta = Meta {
            date: None,
            last_modified,
            etag,
            cache_control: file.cache_control,
            content_encoding,
            vary_accept_encoding: file.gzip.is_some(),
            accept_ranges: true,
            content_range: None,
        };
        let response = Response::ok(content_type(file.path), body).with_meta(meta);
        if representation::not_modified(request, etag, last_modified) {
            return Response { status: Status::NotModified, body: b"", ..response };
        }
        match representation::range(request, body.len(), etag, last_modified) {
            representation::Range::Whole => response,
            representation::Range::Part { first, last } => Response {
                status: Status::PartialContent,
                body: body.get(first..=last).unwrap_or_default(),
                meta: Meta { content_range: Some(ContentRange::Part { first, last, len: body.len() }), ..meta },
                ..response
            },
            representation::Range::Unsatisfiable => Response::error(Status::RangeNotSatisfiable).with_meta(Meta {
                content_range: Some(ContentRange::Unsatisfied { len: body.len() }),
                content_encoding: None,
                ..meta
            }),
        }
    }
}

/// Whether the percent-encoded request path `request` names the site path `file`: they are
/// equal once `request` is decoded, or decoded `request` ends with `/` and `file` is the
/// `index.html` there.
fn path_names(request: &str, file: &str) -> bool {
    let mut file_bytes = file.as_bytes().iter();
    let mut request_bytes = request.as_bytes().iter();
    let mut last = None;
    while let Some(&byte) = request_bytes.next() {
        let byte = if byte == b'%' {
            match (request_bytes.next().and_then(hex_digit), request_bytes.next().and_then(hex_digit)) {
                (Some(high), Some(low)) => (high << 4) | low,
                _ => return false,
            }
        } else {
            byte
        };
        if file_bytes.next() != Some(&byte) {
            return false;
        }
        last = Some(byte);
    }
    let rest = file_bytes.as_slice();
    rest.is_empty() || (last == Some(b'/') && rest == b"index.html")
}

/// The value of one hexadecimal digit.
fn hex_digit(byte: &u8) -> Option<u8> {
    char::from(*byte).to_digit(16).and_then(|digit| u8::try_from(digit).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Parsed, parse_request};

    static SITE: StaticSite = StaticSite::new(&[
        ("/index.html", b"<h1>home</h1>"),
        ("/docs/index.html", b"<h1>docs</h1>"),
        ("/docs/a b.txt", b"spaced"),
        ("/app.wasm", b"\0asm"),
    ]);

    fn respond(request: &str) -> Response {
        match parse_request(request.as_bytes()) {
            Ok(Parsed::Complete { head, .. }) => SITE.respond(&head),
            other => panic!("{request:?} is not a complete request: {other:?}"),
        }
    }

    fn get(target: &str) -> Response {
        respond(&format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n"))
    }

    #[test]
    fn content_types_by_extension() {
        let cases = [
            ("/index.html", "text/html; charset=utf-8"),
            ("/INDEX.HTM", "text/html; charset=utf-8"),
            ("/s/site.css", "text/css; charset=utf-8"),
            ("/app.js", "text/javascript; charset=utf-8"),
            ("/app.mjs", "text/javascript; charset=utf-8"),
            ("/data.json", "application/json"),
            ("/robots.txt", "text/plain; charset=utf-8"),
            ("/a.png", "image/png"),
            ("/a.jpg", "image/jpeg"),
            ("/a.JPEG", "image/jpeg"),
            ("/a.gif", "image/gif"),
            ("/a.svg", "image/svg+xml"),
            ("/favicon.ico", "image/x-icon"),
            ("/app.wasm", "application/wasm"),
            ("/font.woff2", "font/woff2"),
            ("/blob.bin", OCTET_STREAM),
            ("/README", OCTET_STREAM),
            ("/dir.html/file", OCTET_STREAM),
            ("/archive.tar.gz", OCTET_STREAM),
            ("/trailing.", OCTET_STREAM),
        ];
        for (path, expected) in cases {
            assert_eq!(content_type(path), expected, "{path}");
        }
    }

    #[test]
    fn lookup_decodes_and_finds_indexes() {
        let found = |path| SITE.lookup(path).map(|(file, _)| file);
        assert_eq!(found("/"), Some("/index.html"));
        assert_eq!(found("/index.html"), Some("/index.html"));
        assert_eq!(found("/docs/"), Some("/docs/index.html"));
        assert_eq!(found("/docs/a%20b.txt"), Some("/docs/a b.txt"));
        assert_eq!(found("/%64ocs%2F"), Some("/docs/index.html"));
        assert_eq!(found("/docs/%2f"), None);
        assert_eq!(found("/docs"), None);
        assert_eq!(found("/index.htm"), None);
        assert_eq!(found("/index.html/"), None);
        assert_eq!(found("/Index.html"), None);
        assert_eq!(found("/docs/a%2"), None);
        assert_eq!(found("/docs/a%zz b.txt"), None);
        assert_eq!(found(""), None);
    }

    #[test]
    fn serves_files_with_their_type() {
        assert_eq!(get("/"), Response::ok("text/html; charset=utf-8", b"<h1>home</h1>"));
        assert_eq!(get("/app.wasm"), Response::ok("application/wasm", b"\0asm"));
        assert_eq!(get("/docs/?page=2"), Response::ok("text/html; charset=utf-8", b"<h1>docs</h1>"));
        assert_eq!(get("http://example.com/docs/a%20b.txt"), Response::ok(TEXT_PLAIN, b"spaced"));
    }

    #[test]
    fn health_check_is_built_in() {
        let health =
            Response::ok(TEXT_PLAIN, b"ok\n").with_meta(Meta { cache_control: Some("no-store"), ..Meta::NONE });
        assert_eq!(get("/healthz"), health);
        assert_eq!(get("/healthz?probe=1"), health);
        assert_eq!(get("/healthz/").status, Status::NotFound);
    }

    #[test]
    fn unknown_paths_are_404() {
        assert_eq!(get("/nope"), Response::error(Status::NotFound));
        assert_eq!(get("/../index.html"), Response::error(Status::NotFound));
    }

    #[test]
    fn other_methods_are_405_even_with_content() {
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"] {
            let response = respond(&format!("{method} / HTTP/1.1\r\nHost: x\r\n\r\n"));
            assert_eq!(response, Response::error(Status::MethodNotAllowed), "{method}");
        }
        assert_eq!(respond("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").status, Status::MethodNotAllowed);
        assert_eq!(respond("CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n").status, Status::MethodNotAllowed);
        let post = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(respond(post).status, Status::MethodNotAllowed);
    }

    #[test]
    fn content_on_get_is_refused() {
        let length = "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(respond(length).status, Status::ContentTooLarge);
        let chunked = "HEAD / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(respond(chunked).status, Status::NotImplemented);
        let empty = "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(respond(empty).status, Status::Ok);
    }

    #[test]
    fn debug_shows_paths_and_sizes_not_contents() {
        assert_eq!(
            format!("{SITE:?}"),
            r#"{"/index.html": 13, "/docs/index.html": 13, "/docs/a b.txt": 6, "/app.wasm": 4}"#
        );
    }

    static DESCRIBED: StaticSite = StaticSite::described(&[
        SiteFile {
            path: "/index.html",
            body: b"<h1>home, home, home</h1>",
            etag: Some("\"b3-1\""),
            cache_control: Some("public, max-age=300"),
            gzip: Some((b"GZ", "\"b3-1-gz\"")),
        },
        SiteFile {
            path: "/a.png",
            body: b"0123456789",
            etag: Some("\"b3-2\""),
            cache_control: Some("public, max-age=300"),
            gzip: None,
        },
    ])
    .with_clock(|| Some(1_800_000_000), Some(1_700_000_000));

    fn ask(request: &str) -> Response {
        match parse_request(request.as_bytes()) {
            Ok(Parsed::Complete { head, .. }) => DESCRIBED.respond(&head),
            other => panic!("{request:?} is not a complete request: {other:?}"),
        }
    }

    #[test]
    fn described_files_carry_validators_date_and_caching() {
        let r = ask("GET /a.png HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((r.status, r.body), (Status::Ok, &b"0123456789"[..]));
        assert_eq!(r.meta.etag, Some("\"b3-2\""));
        assert_eq!(r.meta.date, Some(1_800_000_000));
        assert_eq!(r.meta.last_modified, Some(1_700_000_000));
        assert_eq!(r.meta.cache_control, Some("public, max-age=300"));
        assert!(!r.meta.vary_accept_encoding && r.meta.accept_ranges);
    }

    #[test]
    fn gzip_only_for_clients_that_accept_it() {
        let plain = ask("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((plain.body, plain.meta.content_encoding), (&b"<h1>home, home, home</h1>"[..], None));
        assert!(plain.meta.vary_accept_encoding);
        let gz = ask("GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip, br\r\n\r\n");
        assert_eq!((gz.body, gz.meta.content_encoding, gz.meta.etag), (&b"GZ"[..], Some("gzip"), Some("\"b3-1-gz\"")));
    }

    #[test]
    fn revalidation_is_304() {
        let r = ask("GET /a.png HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"zz\", W/\"b3-2\"\r\n\r\n");
        assert_eq!((r.status, r.body), (Status::NotModified, &b""[..]));
        let mut head = Vec::new();
        r.write_head(&mut head, crate::Version::Http11, false);
        let head = String::from_utf8(head).expect("ASCII");
        assert!(!head.contains("Content-Length") && head.contains("ETag: \"b3-2\""), "{head}");
        assert_eq!(ask("GET /a.png HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"b3-1\"\r\n\r\n").status, Status::Ok);
        let since = "If-Modified-Since: Tue, 14 Nov 2023 22:13:20 GMT";
        assert_eq!(ask(&format!("GET /a.png HTTP/1.1\r\nHost: x\r\n{since}\r\n\r\n")).status, Status::NotModified);
        let before = "If-Modified-Since: Tue, 14 Nov 2023 22:13:19 GMT";
        assert_eq!(ask(&format!("GET /a.png HTTP/1.1\r\nHost: x\r\n{before}\r\n\r\n")).status, Status::Ok);
    }

    #[test]
    fn ranges_are_206_or_416() {
        let r = ask("GET /a.png HTTP/1.1\r\nHost: x\r\nRange: bytes=2-4\r\n\r\n");
        assert_eq!((r.status, r.body), (Status::PartialContent, &b"234"[..]));
        assert_eq!(r.meta.content_range, Some(ContentRange::Part { first: 2, last: 4, len: 10 }));
        let r = ask("GET /a.png HTTP/1.1\r\nHost: x\r\nRange: bytes=10-\r\n\r\n");
        assert_eq!(r.status, Status::RangeNotSatisfiable);
        assert_eq!(r.meta.content_range, Some(ContentRange::Unsatisfied { len: 10 }));
        let stale = ask("GET /a.png HTTP/1.1\r\nHost: x\r\nRange: bytes=2-4\r\nIf-Range: \"old\"\r\n\r\n");
        assert_eq!((stale.status, stale.body.len()), (Status::Ok, 10));
    }

    proptest::proptest! {
        /// HEAD and GET agree on everything but the body, whatever the conditional, range and
        /// encoding headers.
        #[test]
        fn head_and_get_agree(
            path in proptest::sample::select(vec!["/", "/a.png", "/nope", "/healthz"]),
            extra in proptest::sample::subsequence(vec![
                "Accept-Encoding: gzip", "If-None-Match: \"b3-2\"", "If-None-Match: \"b3-1-gz\"",
                "Range: bytes=1-3", "Range: bytes=50-", "If-Range: \"b3-2\"",
                "If-Modified-Since: Tue, 14 Nov 2023 22:13:20 GMT",
            ], 0..4),
        ) {
            let headers: String = extra.iter().map(|h| format!("{h}\r\n")).collect();
            let head_of = |method: &str| {
                let response = ask(&format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n"));
                let mut out = Vec::new();
                response.write_head(&mut out, crate::Version::Http11, false);
                (response.status, out)
            };
            let (get_status, get_head) = head_of("GET");
            let (head_status, head_head) = head_of("HEAD");
            // A range applies to GET only (RFC 9110 §14.2), so HEAD answers as GET without one.
            if get_status != Status::PartialContent && get_status != Status::RangeNotSatisfiable {
                proptest::prop_assert_eq!(get_head, head_head);
            } else {
                proptest::prop_assert!(head_status == Status::Ok || head_status == Status::NotModified);
            }
        }
    }

    #[test]
    fn targets_that_are_not_paths_are_400() {
        assert_eq!(get("*").status, Status::BadRequest);
        assert_eq!(get("example.com:80").status, Status::BadRequest);
    }
}
