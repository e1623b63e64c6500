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
}

impl Response {
    /// A 200 response with `body`.
    pub const fn ok(content_type: &'static str, body: &'static [u8]) -> Self {
        Self { status: Status::Ok, content_type, body }
    }

    /// An error response: `status` with a one-line `text/plain` body such as `404 Not Found\n`.
    pub const fn error(status: Status) -> Self {
        Self { status, content_type: TEXT_PLAIN, body: status.error_body() }
    }

    /// Appends the status line and headers to `out`, ending with the empty line; the body, if it
    /// is to be sent, follows them. `Content-Length` is always the length of [`Response::body`],
    /// also for HEAD. `close` adds `Connection: close`; otherwise a response to an HTTP/1.0
    /// client gets `Connection: keep-alive`, which that client needs to keep the connection.
    pub fn write_head(&self, out: &mut Vec<u8>, version: Version, close: bool) {
        let allow: &[(&str, &str)] = &[("Allow", ALLOW)];
        let fields = if self.status == Status::MethodNotAllowed { allow } else { &[] };
        write_head(out, self.status, self.content_type, self.body.len(), fields, version, close);
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
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, usize::from(status.code()));
    out.push(b' ');
    out.extend_from_slice(status.reason().as_bytes());
    out.extend_from_slice(b"\r\nServer: ");
    out.extend_from_slice(SERVER.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    push_decimal(out, content_length);
    out.extend_from_slice(b"\r\n");
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
