//! A static site: files compiled into the appliance, and the policy that answers requests for them.

use core::fmt;

use crate::request::{Content, Method, RequestHead};
use crate::response::{Response, Status, TEXT_PLAIN};

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
#[derive(Clone, Copy)]
pub struct StaticSite {
    files: &'static [(&'static str, &'static [u8])],
}

impl fmt::Debug for StaticSite {
    /// Paths and sizes, not contents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.files.iter().map(|(path, bytes)| (path, bytes.len()))).finish()
    }
}

impl StaticSite {
    /// A site of `files`. A path that does not start with `/` can never be requested.
    pub const fn new(files: &'static [(&'static str, &'static [u8])]) -> Self {
        Self { files }
    }

    /// The file a request path names, as (site path, bytes). `path` is percent-decoded first
    /// (a malformed escape finds nothing), and a path ending in `/` names the `index.html` in
    /// that directory, so `/` finds `/index.html`.
    pub fn lookup(&self, path: &str) -> Option<(&'static str, &'static [u8])> {
        self.files.iter().copied().find(|(file, _)| path_names(path, file))
    }

    /// The response to `request`, in this order (the crate documentation has the whole table):
    /// - a method other than GET or HEAD: 405;
    /// - any request content: 413 for a `Content-Length`, 501 for a `Transfer-Encoding`;
    /// - a target whose path does not start with `/` (`*`, `host:port`): 400;
    /// - [`HEALTH_PATH`]: 200 `ok\n`;
    /// - a file of the site ([`StaticSite::lookup`]): 200 with the file, typed by
    ///   [`content_type`];
    /// - anything else: 404.
    ///
    /// The response is the same for HEAD as for GET; the connection leaves out the body.
    pub fn respond(&self, request: &RequestHead<'_>) -> Response {
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
            return Response::ok(TEXT_PLAIN, b"ok\n");
        }
        match self.lookup(path) {
            Some((file, body)) => Response::ok(content_type(file), body),
            None => Response::error(Status::NotFound),
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
        assert_eq!(get("/healthz"), Response::ok(TEXT_PLAIN, b"ok\n"));
        assert_eq!(get("/healthz?probe=1"), Response::ok(TEXT_PLAIN, b"ok\n"));
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

    #[test]
    fn targets_that_are_not_paths_are_400() {
        assert_eq!(get("*").status, Status::BadRequest);
        assert_eq!(get("example.com:80").status, Status::BadRequest);
    }
}
