//! Responses: status codes and the serialisation of response heads.

use alloc::vec::Vec;

use crate::request::Version;

/// The value of the `Server` header of every response.
pub const SERVER: &str = "mast-httpd";

/// The value of the `Allow` header of 405 responses: the methods this server serves.
pub const ALLOW: &str = "GET, HEAD";

/// The content type of error responses and of `/healthz`.
pub const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// A status code this server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// 200: the file follows.
    Ok,
    /// 201: the content was stored (an appliance that takes uploads).
    Created,
    /// 206: one range of the file follows (`Content-Range`).
    PartialContent,
    /// 304: the client's copy is current (a conditional request); no body.
    NotModified,
    /// 400: the request is malformed.
    BadRequest,
    /// 404: the site has no such path.
    NotFound,
    /// 405: the method is known but not served; the response carries `Allow`.
    MethodNotAllowed,
    /// 408: the client took too long to send its request.
    RequestTimeout,
    /// 413: the request has content, and this server takes none.
    ContentTooLarge,
    /// 416: the requested range lies outside the file (`Content-Range: bytes */LEN`).
    RangeNotSatisfiable,
    /// 414: the request line is too long.
    UriTooLong,
    /// 431: the request head is too large.
    HeaderFieldsTooLarge,
    /// 501: the method, or the transfer coding of the content, is not implemented.
    NotImplemented,
    /// 500: the server failed (a device error in an appliance with state).
    InternalServerError,
    /// 505: the HTTP version is not supported.
    VersionNotSupported,
    /// 507: the server has no room left to store the content.
    InsufficientStorage,
}

impl Status {
    /// The three-digit code.
    pub const fn code(self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::Created => 201,
            Self::PartialContent => 206,
            Self::NotModified => 304,
            Self::RangeNotSatisfiable => 416,
            Self::BadRequest => 400,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::ContentTooLarge => 413,
            Self::UriTooLong => 414,
            Self::HeaderFieldsTooLarge => 431,
            Self::NotImplemented => 501,
            Self::InternalServerError => 500,
            Self::VersionNotSupported => 505,
            Self::InsufficientStorage => 507,
        }
    }

    /// The reason phrase (RFC 9110 §15).
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Created => "Created",
            Self::PartialContent => "Partial Content",
            Self::NotModified => "Not Modified",
            Self::RangeNotSatisfiable => "Range Not Satisfiable",
            Self::BadRequest => "Bad Request",
            Self::NotFound => "Not Found",
            Self::MethodNotAllowed => "Method Not Allowed",
            Self::RequestTimeout => "Request Timeout",
            Self::ContentTooLarge => "Content Too Large",
            Self::UriTooLong => "URI Too Long",
            Self::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Self::NotImplemented => "Not Implemented",
            Self::InternalServerError => "Internal Server Error",
            Self::VersionNotSupported => "HTTP Version Not Supported",
            Self::InsufficientStorage => "Insufficient Storage",
        }
    }

    /// The one-line body of an error response with this status: the code and the reason.
    const fn error_body(self) -> &'static [u8] {
        match self {
            Self::Ok => b"200 OK\n",
            Self::Created => b"201 Created\n",
            Self::PartialContent => b"206 Partial Content\n",
            Self::NotModified => b"",
            Self::RangeNotSatisfiable => b"416 Range Not Satisfiable\n",
            Self::BadRequest => b"400 Bad Request\n",
            Self::NotFound => b"404 Not Found\n",
            Self::MethodNotAllowed => b"405 Method Not Allowed\n",
            Self::RequestTimeout => b"408 Request Timeout\n",
            Self::ContentTooLarge => b"413 Content Too Large\n",
            Self::UriTooLong => b"414 URI Too Long\n",
            Self::HeaderFieldsTooLarge => b"431 Request Header Fields Too Large\n",
            Self::NotImplemented => b"501 Not Implemented\n",
            Self::InternalServerError => b"500 Internal Server Error\n",
            Self::VersionNotSupported => b"505 HTTP Version Not Supported\n",
            Self::InsufficientStorage => b"507 Insufficient Storage\n",
        }
    }
}

/// A response: a status and a body with its content type. How the connection goes on
/// (`Connection` header) and whether the body is sent (not for HEAD) depend on the request and
/// are decided when the response is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status.
    pub status: Status,
    /// The `Content-Type` of the body. It is written verbatim, so it must be a valid field value.
    pub content_type: &'static str,
    /// The body; also for HEAD, where only its length is sent.
    pub body: &'static [u8],
    /// What an origin says about the representation: dates, validators, caching, encoding, range.
    pub meta: Meta,
}

/// The headers an origin sends about a representation (RFC 9110, 9111), each left out when `None`.
/// Values are written verbatim, so they must be valid field values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// `Date`: the wall clock now, seconds since the Unix epoch (only when the clock is trustworthy).
    pub date: Option<u64>,
    /// `Last-Modified`, seconds since the Unix epoch.
    pub last_modified: Option<u64>,
    /// `ETag`: a strong entity tag, with its quotes.
    pub etag: Option<&'static str>,
    /// `Cache-Control`.
    pub cache_control: Option<&'static str>,
    /// `Content-Encoding` of the body (`gzip`).
    pub content_encoding: Option<&'static str>,
    /// `Vary: Accept-Encoding`: the body depends on the request's `Accept-Encoding`.
    pub vary_accept_encoding: bool,
    /// `Accept-Ranges: bytes`.
    pub accept_ranges: bool,
    /// `Content-Range`.
    pub content_range: Option<ContentRange>,
}

/// A `Content-Range` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes FIRST-LAST/LEN` (206): the body is bytes `first..=last` of `len`.
    Part {
        /// The first byte sent.
        first: usize,
        /// The last byte sent (inclusive).
        last: usize,
        /// The whole representation's length.
        len: usize,
    },
    /// `bytes */LEN` (416): no range of the request lies inside the `len` bytes.
    Unsatisfied {
        /// The whole representation's length.
        len: usize,
    },
}

impl Response {
    /// A 200 response with `body`.
    pub const fn ok(content_type: &'static str, body: &'static [u8]) -> Self {
        Self { status: Status::Ok, content_type, body, meta: Meta::NONE }
    }

    /// An error response: `status` with a one-line `text/plain` body such as `404 Not Found\n`.
    pub const fn error(status: Status) -> Self {
        Self { status, content_type: TEXT_PLAIN, body: status.error_body(), meta: Meta::NONE }
    }

    /// This response with `meta`.
    pub const fn with_meta(self, meta: Meta) -> Self {
        Self { meta, ..self }
    }

    /// Appends the status line and headers to `out`, ending with the empty line; the body, if it
    /// is to be sent, follows them. `Content-Length` is always the length of [`Response::body`],
    /// also for HEAD. `close` adds `Connection: close`; otherwise a response to an HTTP/1.0
    /// client gets `Connection: keep-alive`, which that client needs to keep the connection.
    pub fn write_head(&self, out: &mut Vec<u8>, version: Version, close: bool) {
        let allow: &[(&str, &str)] = &[("Allow", ALLOW)];
        let fields = if self.status == Status::MethodNotAllowed { allow } else { &[] };
        // A 304 describes the representation the client has, so it carries no content headers.
        let content = (self.status != Status::NotModified).then_some((self.content_type, self.body.len()));
        write_head_with(out, self.status, content, fields, &self.meta, version, close);
    }
}

impl Meta {
    /// No origin headers.
    pub const NONE: Meta = Meta {
        date: None,
        last_modified: None,
        etag: None,
        cache_control: None,
        content_encoding: None,
        vary_accept_encoding: false,
        accept_ranges: false,
        content_range: None,
    };

    /// Appends the fields that are set.
    fn write(&self, out: &mut Vec<u8>) {
        let mut field = |name: &str, value: &[u8]| {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        };
        if let Some(date) = self.date {
            field("Date", &crate::date::format(date));
        }
        if let Some(modified) = self.last_modified {
            field("Last-Modified", &crate::date::format(modified));
        }
        if let Some(etag) = self.etag {
            field("ETag", etag.as_bytes());
        }
        if let Some(cache_control) = self.cache_control {
            field("Cache-Control", cache_control.as_bytes());
        }
        if let Some(encoding) = self.content_encoding {
            field("Content-Encoding", encoding.as_bytes());
        }
        if self.vary_accept_encoding {
            field("Vary", b"Accept-Encoding");
        }
        if self.accept_ranges {
            field("Accept-Ranges", b"bytes");
        }
        if let Some(range) = self.content_range {
            let mut value = Vec::with_capacity(48);
            value.extend_from_slice(b"bytes ");
            let len = match range {
                ContentRange::Part { first, last, len } => {
                    push_decimal(&mut value, first);
                    value.push(b'-');
                    push_decimal(&mut value, last);
                    len
                }
                ContentRange::Unsatisfied { len } => {
                    value.push(b'*');
                    len
                }
            };
            value.push(b'/');
            push_decimal(&mut value, len);
            field("Content-Range", &value);
        }
    }
}

/// Appends a response head to `out`, for responses whose body is made at run time (an appliance
/// with state): the status line, `Server`, `Content-Type`, `Content-Length: content_length`,
/// the `fields` given (names and values written verbatim, so they must be valid field lines),
/// the `Connection` field as [`Response::write_head`] decides it, and the empty line.
pub fn write_head(
    out: &mut Vec<u8>,
    status: Status,
    content_type: &str,
    content_length: usize,
    fields: &[(&str, &str)],
    version: Version,
    close: bool,
) {
    write_head_with(out, status, Some((content_type, content_length)), fields, &Meta::NONE, version, close);
}

/// [`write_head`] with the origin's fields (`meta`), and without `Content-Type` and
/// `Content-Length` when `content` is `None` (a 304).
fn write_head_with(
    out: &mut Vec<u8>,
    status: Status,
    content: Option<(&str, usize)>,
    fields: &[(&str, &str)],
    meta: &Meta,
    version: Version,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, usize::from(status.code()));
    out.push(b' ');
    out.extend_from_slice(status.reason().as_bytes());
    out.extend_from_slice(b"\r\nServer: ");
    out.extend_from_slice(SERVER.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some((content_type, content_length)) = content {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(content_type.as_bytes());
        out.extend_from_slice(b"\r\nContent-Length: ");
        push_decimal(out, content_length);
        out.extend_from_slice(b"\r\n");
    }
    meta.write(out);
    for (name, value) in fields {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if version == Version::Http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the decimal digits of `value` to `out`.
fn push_decimal(out: &mut Vec<u8>, value: usize) {
    // 20 digits hold the largest 64-bit value.
    let mut digits = [0_u8; 20];
    let mut start = digits.len();
    let mut rest = value;
    for slot in digits.iter_mut().rev() {
        // `rest % 10` is a single digit, so the cast cannot truncate.
        *slot = b'0' + (rest % 10) as u8;
        start -= 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(response: Response, version: Version, close: bool) -> String {
        let mut out = Vec::new();
        response.write_head(&mut out, version, close);
        String::from_utf8(out).expect("heads are ASCII")
    }

    #[test]
    fn writes_a_200_head() {
        let response = Response::ok("text/html; charset=utf-8", b"<p>hi</p>");
        assert_eq!(
            head(response, Version::Http11, false),
            "HTTP/1.1 200 OK\r\nServer: mast-httpd\r\nContent-Type: text/html; charset=utf-8\r\n\
             Content-Length: 9\r\n\r\n"
        );
    }

    #[test]
    fn connection_header_follows_version_and_close() {
        let response = Response::ok("text/plain", b"");
        assert!(head(response, Version::Http11, true).ends_with("Content-Length: 0\r\nConnection: close\r\n\r\n"));
        assert!(head(response, Version::Http10, true).ends_with("Connection: close\r\n\r\n"));
        assert!(head(response, Version::Http10, false).ends_with("Connection: keep-alive\r\n\r\n"));
        assert!(!head(response, Version::Http11, false).contains("Connection"));
    }

    #[test]
    fn a_405_carries_allow() {
        let text = head(Response::error(Status::MethodNotAllowed), Version::Http11, false);
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{text}");
        assert!(text.contains("\r\nAllow: GET, HEAD\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 23\r\n"), "{text}");
    }

    #[test]
    fn error_bodies_name_their_status() {
        for status in [
            Status::Ok,
            Status::Created,
            Status::BadRequest,
            Status::NotFound,
            Status::MethodNotAllowed,
            Status::RequestTimeout,
            Status::ContentTooLarge,
            Status::UriTooLong,
            Status::HeaderFieldsTooLarge,
            Status::NotImplemented,
            Status::InternalServerError,
            Status::VersionNotSupported,
            Status::InsufficientStorage,
        ] {
            let response = Response::error(status);
            assert_eq!(response.body, format!("{} {}\n", status.code(), status.reason()).as_bytes());
            assert_eq!(response.content_type, TEXT_PLAIN);
        }
    }

    #[test]
    fn run_time_heads_carry_their_fields() {
        let mut out = Vec::new();
        write_head(&mut out, Status::Created, "application/json", 9, &[("X-Seq", "7")], Version::Http11, false);
        assert_eq!(
            String::from_utf8(out).expect("ASCII"),
            "HTTP/1.1 201 Created\r\nServer: mast-httpd\r\nContent-Type: application/json\r\n\
             Content-Length: 9\r\nX-Seq: 7\r\n\r\n"
        );
    }

    #[test]
    fn decimals() {
        for value in [0, 7, 10, 99, 100, 8192, 1_000_000_007, usize::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, value);
            assert_eq!(out, value.to_string().as_bytes());
        }
    }
}
