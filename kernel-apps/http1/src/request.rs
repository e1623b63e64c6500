//! Request heads: an incremental parser that allocates nothing and borrows from the input.
//!
//! [`parse_request`] looks at the bytes received so far and says whether they begin with a
//! complete request head, need more bytes, or can never become a valid head. The rules it applies
//! are listed in the crate documentation.

use core::fmt;
use core::str;

use crate::response::Status;

/// The largest request head accepted, in bytes: the request line, the header fields and the empty
/// line that ends them, and any empty lines before the request line.
pub const MAX_HEAD_LEN: usize = 8 * 1024;

/// The most header fields one request may carry.
pub const MAX_HEADERS: usize = 64;

/// The result of parsing request heads.
pub type Result<T = ()> = core::result::Result<T, RequestError>;

/// A request method this server knows. Unknown method tokens are a [`RequestError::UnknownMethod`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`: served.
    Get,
    /// `HEAD`: served, without the body.
    Head,
    /// `POST`: answered with 405.
    Post,
    /// `PUT`: answered with 405.
    Put,
    /// `DELETE`: answered with 405.
    Delete,
    /// `OPTIONS`: answered with 405.
    Options,
    /// `PATCH`: answered with 405.
    Patch,
    /// `TRACE`: answered with 405.
    Trace,
    /// `CONNECT`: answered with 405.
    Connect,
}

impl Method {
    /// The method named by `token`, which is case-sensitive (RFC 9110 §9.1).
    pub fn from_token(token: &[u8]) -> Option<Self> {
        Some(match token {
            b"GET" => Self::Get,
            b"HEAD" => Self::Head,
            b"POST" => Self::Post,
            b"PUT" => Self::Put,
            b"DELETE" => Self::Delete,
            b"OPTIONS" => Self::Options,
            b"PATCH" => Self::Patch,
            b"TRACE" => Self::Trace,
            b"CONNECT" => Self::Connect,
            _ => return None,
        })
    }

    /// The method's token, as sent on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Options => "OPTIONS",
            Self::Patch => "PATCH",
            Self::Trace => "TRACE",
            Self::Connect => "CONNECT",
        }
    }
}

/// A protocol version this server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// `HTTP/1.0`: connections close after each response unless the client sends
    /// `Connection: keep-alive`.
    Http10,
    /// `HTTP/1.1`: connections stay open unless the client sends `Connection: close`.
    Http11,
}

/// The content a request announces in its head. This server never reads request content; the
/// connection closes after answering a request that has some.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Content {
    /// No content: no `Content-Length` (or `Content-Length: 0`) and no `Transfer-Encoding`.
    None,
    /// `Content-Length` bytes of content, more than zero.
    Length(u64),
    /// Content framed by a `Transfer-Encoding` (such as chunked), of unknown length.
    TransferCoded,
}

/// Why some bytes can never become a request this server accepts. Each maps to the status code
/// of the response that refuses it ([`RequestError::status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestError {
    /// A line ends with a bare LF, or a CR is not followed by LF.
    BadLineEnding,
    /// The request line is not `METHOD SP target SP HTTP/x.y`.
    BadRequestLine,
    /// A header field line is malformed: no colon, a name that is not a token, whitespace before
    /// the colon, line folding, or a control character in the value.
    BadHeader,
    /// The head is not valid UTF-8.
    InvalidUtf8,
    /// `Content-Length` is not a single decimal number.
    BadContentLength,
    /// Both `Content-Length` and `Transfer-Encoding` are present (RFC 9112 §6.3: a sign of
    /// request smuggling).
    ConflictingFraming,
    /// An HTTP/1.1 request without `Host`, or any request with more than one.
    BadHost,
    /// The method is a well-formed token that this server does not know.
    UnknownMethod,
    /// The version is well-formed but neither `HTTP/1.0` nor `HTTP/1.1`.
    UnsupportedVersion,
    /// The request line does not end within [`MAX_HEAD_LEN`] bytes.
    UriTooLong,
    /// The head does not end within [`MAX_HEAD_LEN`] bytes, or has more than [`MAX_HEADERS`]
    /// fields.
    HeadTooLarge,
}

impl RequestError {
    /// The status of the response that refuses the request.
    pub const fn status(self) -> Status {
        match self {
            Self::BadLineEnding
            | Self::BadRequestLine
            | Self::BadHeader
            | Self::InvalidUtf8
            | Self::BadContentLength
            | Self::ConflictingFraming
            | Self::BadHost => Status::BadRequest,
            Self::UnknownMethod => Status::NotImplemented,
            Self::UnsupportedVersion => Status::VersionNotSupported,
            Self::UriTooLong => Status::UriTooLong,
            Self::HeadTooLarge => Status::HeaderFieldsTooLarge,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadLineEnding => "a line does not end with CRLF",
            Self::BadRequestLine => "malformed request line",
            Self::BadHeader => "malformed header field",
            Self::InvalidUtf8 => "request head is not UTF-8",
            Self::BadContentLength => "malformed or repeated Content-Length",
            Self::ConflictingFraming => "both Content-Length and Transfer-Encoding",
            Self::BadHost => "missing or repeated Host",
            Self::UnknownMethod => "unknown method",
            Self::UnsupportedVersion => "unsupported HTTP version",
            Self::UriTooLong => "request line too long",
            Self::HeadTooLarge => "request head too large",
        })
    }
}

/// A complete, valid request head, borrowed from the received bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: Method,
    /// The request target exactly as sent: `/path?query`, `http://host/path`, `*`, ...
    pub target: &'a str,
    /// The protocol version.
    pub version: Version,
    /// Whether the client wants the connection kept open after the response: the version's
    /// default, overridden by `Connection: close` or (HTTP/1.0) `Connection: keep-alive`.
    pub keep_alive: bool,
    /// The content the request announces.
    pub content: Content,
    /// The header field lines, each ending with CRLF; all of them passed [`parse_field`].
    fields: &'a str,
}

impl<'a> RequestHead<'a> {
    /// The path of the target, still percent-encoded, without the query: `/a/b` for
    /// `/a/b?x=1` and for `http://host/a/b?x=1`, `/` for `http://host`. Targets in neither
    /// origin nor absolute form (`*`, `host:443`) are returned whole; they do not start with `/`.
    pub fn path(&self) -> &'a str {
        let (origin, absolute) = match strip_scheme_and_authority(self.target) {
            Some(origin) => (origin, true),
            None => (self.target, false),
        };
        let path = origin.split_once('?').map_or(origin, |(path, _)| path);
        if absolute && path.is_empty() { "/" } else { path }
    }

    /// The query of the target (after the first `?`), if it has one.
    pub fn query(&self) -> Option<&'a str> {
        self.target.split_once('?').map(|(_, query)| query)
    }

    /// The header fields in the order received, as (name, value) with the value trimmed.
    pub fn headers(&self) -> Headers<'a> {
        Headers { rest: self.fields }
    }

    /// The value of the first header field called `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers().find(|(field, _)| field.eq_ignore_ascii_case(name)).map(|(_, value)| value)
    }
}

/// The rest of an absolute-form target (`http://host/path` → `/path`), or `None` for other forms.
fn strip_scheme_and_authority(target: &str) -> Option<&str> {
    ["http://", "https://"].into_iter().find_map(|scheme| {
        let prefix = target.get(..scheme.len())?;
        let rest = target.get(scheme.len()..)?;
        if !prefix.eq_ignore_ascii_case(scheme) {
            return None;
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        rest.get(authority_end..)
    })
}

/// An iterator over the header fields of a [`RequestHead`].
#[derive(Clone, Debug)]
pub struct Headers<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let (line, rest) = self.rest.split_once("\r\n")?;
        self.rest = rest;
        // Every line was validated when the head was parsed, so this cannot fail; if it somehow
        // did, ending the iteration early is the harmless outcome.
        parse_field(line).ok()
    }
}

/// What [`parse_request`] found at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// The bytes are a valid beginning of a request head: wait for more.
    Incomplete,
    /// A complete head, which used the first `len` bytes of the buffer. Anything after them is
    /// the next request (request content is never read: see [`Content`]).
    Complete {
        /// The head.
        head: RequestHead<'a>,
        /// How many bytes of the buffer the head used, including its final empty line.
        len: usize,
    },
}

/// Parses the request head at the start of `buf`, the bytes received so far on a connection.
///
/// Returns [`Parsed::Incomplete`] while `buf` could still become a valid head, a
/// [`Parsed::Complete`] head once its empty line has arrived, and an error as soon as the bytes
/// can no longer become one: a malformed request line is refused before the header fields arrive,
/// and a head that outgrows [`MAX_HEAD_LEN`] is refused without waiting for its end.
///
/// This function starts from scratch on each call; [`Connection`](crate::Connection) remembers
/// how far it has looked, so a head that arrives a byte at a time costs linear time there.
pub fn parse_request(buf: &[u8]) -> Result<Parsed<'_>> {
    match Scanner::default().scan(buf)? {
        None => Ok(Parsed::Incomplete),
        Some(len) => {
            let head = buf.get(..len).ok_or(RequestError::HeadTooLarge)?;
            Ok(Parsed::Complete { head: parse_head(head)?, len })
        }
    }
}

/// Finds where a request head ends in a buffer that only grows at its end, resuming where the
/// previous call stopped so that no byte is examined twice. Along the way it refuses bad line
/// endings and oversized heads, refuses a request line at its first byte that no request line
/// can contain, and checks the whole request line as soon as it ends.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Scanner {
    /// How many bytes have been examined.
    pos: usize,
    /// Where the line being examined starts.
    line_start: usize,
    /// How many non-empty lines have ended: the request line, then header fields.
    lines: usize,
    /// Where the request line being received is, while it has not ended.
    request_line: LinePrefix,
}

/// How much of `METHOD SP target SP HTTP/d.d` has arrived, so that a byte which can never be
/// part of a request line is refused when it arrives rather than when (if ever) the line ends: a
/// client sending binary garbage gets its 400 at once instead of holding the connection until a
/// timeout.
#[derive(Clone, Copy, Debug, Default)]
struct LinePrefix {
    /// 0: the method, 1: the target, 2: the version.
    part: u8,
    /// Bytes of the current part so far.
    len: usize,
}

impl LinePrefix {
    /// Takes the next byte of a request line (not its CR). `false` when no request line can
    /// continue so.
    fn accept(&mut self, byte: u8) -> bool {
        let ok = match (self.part, byte) {
            (0 | 1, b' ') if self.len > 0 => {
                self.part += 1;
                self.len = 0;
                return true;
            }
            (0, _) => is_tchar(byte),
            (1, _) => (0x21..=0x7e).contains(&byte),
            (_, _) => match self.len {
                0..=4 => b"HTTP/".get(self.len) == Some(&byte),
                5 | 7 => byte.is_ascii_digit(),
                6 => byte == b'.',
                _ => false,
            },
        };
        self.len += 1;
        ok
    }
}

impl Scanner {
    /// Looks at the bytes of `buf` not yet examined. Returns the length of the head once it ends.
    /// `buf` must begin with the bytes given to the previous calls.
    pub(crate) fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>> {
        let limit = buf.len().min(MAX_HEAD_LEN);
        while self.pos < limit {
            let Some(&byte) = buf.get(self.pos) else {
                break;
            };
            let after_cr = self.pos.checked_sub(1).and_then(|previous| buf.get(previous)) == Some(&b'\r');
            let line_end = self.pos.saturating_sub(1);
            self.pos += 1;
            match (after_cr, byte) {
                (true, b'\n') => {}
                (true, _) | (false, b'\n') => return Err(RequestError::BadLineEnding),
                (false, b'\r') => continue,
                (false, _) => {
                    if self.lines == 0 && !self.request_line.accept(byte) {
                        return Err(RequestError::BadRequestLine);
                    }
                    continue;
                }
            }
            let line = buf.get(self.line_start..line_end).unwrap_or_default();
            self.line_start = self.pos;
            self.request_line = LinePrefix::default();
            if line.is_empty() {
                if self.lines > 0 {
                    return Ok(Some(self.pos));
                }
                // An empty line before the request line is skipped (RFC 9112 §2.2).
                continue;
            }
            if self.lines == 0 {
                // Refuse a bad request line now rather than after the header fields.
                parse_request_line(line)?;
            }
            self.lines += 1;
            if self.lines > MAX_HEADERS + 1 {
                return Err(RequestError::HeadTooLarge);
            }
        }
        if limit == MAX_HEAD_LEN {
            Err(if self.lines == 0 { RequestError::UriTooLong } else { RequestError::HeadTooLarge })
        } else {
            Ok(None)
        }
    }
}

/// Parses a complete head: everything up to and including the empty line that ends it, whose
/// line endings [`Scanner::scan`] has checked.
pub(crate) fn parse_head(head: &[u8]) -> Result<RequestHead<'_>> {
    let text = str::from_utf8(head).map_err(|_| RequestError::InvalidUtf8)?;
    let text = text.trim_start_matches("\r\n");
    let (request_line, rest) = text.split_once("\r\n").ok_or(RequestError::BadRequestLine)?;
    let (method, target, version) = parse_request_line(request_line.as_bytes())?;
    // `rest` is the field lines, each ending with CRLF, then the CRLF of the empty line.
    let fields = rest.strip_suffix("\r\n").ok_or(RequestError::BadHeader)?;

    let mut hosts = 0_usize;
    let mut content_length = None;
    let mut transfer_coded = false;
    let mut close = false;
    let mut keep_alive = false;
    for (count, line) in fields.split_terminator("\r\n").enumerate() {
        if count >= MAX_HEADERS {
            return Err(RequestError::HeadTooLarge);
        }
        let (name, value) = parse_field(line)?;
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Err(RequestError::BadContentLength);
            }
            content_length = Some(parse_content_length(value)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_coded = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(|option| option.trim_matches([' ', '\t'])) {
                close |= option.eq_ignore_ascii_case("close");
                keep_alive |= option.eq_ignore_ascii_case("keep-alive");
            }
        }
    }

    if hosts > 1 || (hosts == 0 && version == Version::Http11) {
        return Err(RequestError::BadHost);
    }
    let content = match (content_length, transfer_coded) {
        (Some(_), true) => return Err(RequestError::ConflictingFraming),
        (_, true) => Content::TransferCoded,
        (None | Some(0), false) => Content::None,
        (Some(length), false) => Content::Length(length),
    };
    let keep_alive = !close && (keep_alive || version == Version::Http11);
    Ok(RequestHead { method, target, version, keep_alive, content, fields })
}

/// Parses `METHOD SP target SP HTTP/x.y` (without its CRLF). A malformed line is a 400; a
/// well-formed one with an unknown version (505) or method (501) is refused in that order, so
/// that an HTTP/2 preface (`PRI * HTTP/2.0`) is told about the version.
fn parse_request_line(line: &[u8]) -> Result<(Method, &str, Version)> {
    let mut parts = line.split(|&byte| byte == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::BadRequestLine);
    };
    if !is_token(method) || target.is_empty() || !target.iter().all(|byte| (0x21..=0x7e).contains(byte)) {
        return Err(RequestError::BadRequestLine);
    }
    let version = match version {
        b"HTTP/1.0" => Version::Http10,
        b"HTTP/1.1" => Version::Http11,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit() => {
            return Err(RequestError::UnsupportedVersion);
        }
        _ => return Err(RequestError::BadRequestLine),
    };
    let method = Method::from_token(method).ok_or(RequestError::UnknownMethod)?;
    let target = str::from_utf8(target).map_err(|_| RequestError::BadRequestLine)?;
    Ok((method, target, version))
}

/// Parses one header field line (without its CRLF) into its name and trimmed value.
fn parse_field(line: &str) -> Result<(&str, &str)> {
    let (name, value) = line.split_once(':').ok_or(RequestError::BadHeader)?;
    // A name that is not a token also catches whitespace before the colon (RFC 9112 §5.1 says
    // to reject it) and obsolete line folding (a line starting with whitespace).
    if !is_token(name.as_bytes()) {
        return Err(RequestError::BadHeader);
    }
    let value = value.trim_matches([' ', '\t']);
    if value.bytes().any(|byte| (byte < 0x20 && byte != b'\t') || byte == 0x7f) {
        return Err(RequestError::BadHeader);
    }
    Ok((name, value))
}

/// Parses a `Content-Length` value: one or more decimal digits that fit in a `u64`.
fn parse_content_length(value: &str) -> Result<u64> {
    if value.is_empty() {
        return Err(RequestError::BadContentLength);
    }
    value.bytes().try_fold(0_u64, |length, byte| {
        let digit = u64::from(byte.wrapping_sub(b'0'));
        if digit > 9 {
            return Err(RequestError::BadContentLength);
        }
        length.checked_mul(10).and_then(|length| length.checked_add(digit)).ok_or(RequestError::BadContentLength)
    })
}

/// Whether `bytes` is a token (RFC 9110 §5.6.2): one or more `tchar`.
fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&byte| is_tchar(byte))
}

/// Whether `byte` is a `tchar` (RFC 9110 §5.6.2).
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (RequestHead<'_>, usize) {
        match parse_request(buf) {
            Ok(Parsed::Complete { head, len }) => (head, len),
            other => panic!("expected a complete head for {:?}, got {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn error(buf: &[u8]) -> RequestError {
        match parse_request(buf) {
            Err(error) => error,
            other => panic!("expected an error for {:?}, got {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn parses_a_simple_get() {
        let buf = b"GET /a/b?x=1&y HTTP/1.1\r\nHost: example\r\nAccept:  */* \r\n\r\nNEXT";
        let (head, len) = complete(buf);
        assert_eq!(len, buf.len() - 4);
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.target, "/a/b?x=1&y");
        assert_eq!(head.path(), "/a/b");
        assert_eq!(head.query(), Some("x=1&y"));
        assert_eq!(head.version, Version::Http11);
        assert!(head.keep_alive);
        assert_eq!(head.content, Content::None);
        assert_eq!(head.headers().collect::<Vec<_>>(), [("Host", "example"), ("Accept", "*/*")]);
        assert_eq!(head.header("accept"), Some("*/*"));
        assert_eq!(head.header("missing"), None);
    }

    #[test]
    fn waits_for_the_end_of_the_head() {
        let full = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for end in 0..full.len() {
            assert_eq!(parse_request(&full[..end]), Ok(Parsed::Incomplete), "prefix of {end} bytes");
        }
        assert!(matches!(parse_request(full), Ok(Parsed::Complete { .. })));
    }

    #[test]
    fn skips_empty_lines_before_the_request_line() {
        let buf = b"\r\n\r\nGET / HTTP/1.0\r\n\r\n";
        let (head, len) = complete(buf);
        assert_eq!((head.method, head.path(), len), (Method::Get, "/", buf.len()));
    }

    #[test]
    fn keep_alive_defaults_and_overrides() {
        let cases: [(&[u8], bool); 8] = [
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nconnection: close\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
            (b"GET / HTTP/1.0\r\nConnection: foo ,\tkeep-alive\r\n\r\n", true),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false),
        ];
        for (buf, keep_alive) in cases {
            assert_eq!(complete(buf).0.keep_alive, keep_alive, "{:?}", String::from_utf8_lossy(buf));
        }
    }

    #[test]
    fn content_framing() {
        let cases: [(&[u8], Content); 4] = [
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", Content::None),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 000\r\n\r\n", Content::None),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n", Content::Length(12)),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", Content::TransferCoded),
        ];
        for (buf, content) in cases {
            assert_eq!(complete(buf).0.content, content, "{:?}", String::from_utf8_lossy(buf));
        }
    }

    #[test]
    fn refuses_bad_content_length() {
        for value in ["", "-1", "+1", "1 2", "0x10", "12a", "18446744073709551616", "1,1"] {
            let buf = format!("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\n");
            assert_eq!(error(buf.as_bytes()), RequestError::BadContentLength, "{value:?}");
        }
        let max = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\n";
        assert_eq!(complete(max).0.content, Content::Length(u64::MAX));
        let twice = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
        assert_eq!(error(twice), RequestError::BadContentLength);
        let both = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(error(both), RequestError::ConflictingFraming);
    }

    #[test]
    fn refuses_malformed_request_lines_early() {
        // Each is refused as soon as the request line ends, before any header field arrives.
        let cases: [(&[u8], RequestError); 16] = [
            (b"GET /\r\n", RequestError::BadRequestLine),
            (b"GET  / HTTP/1.1\r\n", RequestError::BadRequestLine),
            (b"GET / HTTP/1.1 \r\n", RequestError::BadRequestLine),
            (b" GET / HTTP/1.1\r\n", RequestError::BadRequestLine),
            (b"GET\t/ HTTP/1.1\r\n", RequestError::BadRequestLine),
            (b"G(T / HTTP/1.1\r\n", RequestError::BadRequestLine),
            (b"GET /\xc3\xa9 HTTP/1.1\r\n", RequestError::BadRequestLine),
            (b"GET / http/1.1\r\n", RequestError::BadRequestLine),
            (b"GET / HTTP/1\r\n", RequestError::BadRequestLine),
            (b"GET / HTTP/1.10\r\n", RequestError::BadRequestLine),
            (b"GET / HTTP/2.0\r\n", RequestError::UnsupportedVersion),
            (b"GET / HTTP/1.2\r\n", RequestError::UnsupportedVersion),
            (b"PRI * HTTP/2.0\r\n", RequestError::UnsupportedVersion),
            (b"get / HTTP/1.1\r\n", RequestError::UnknownMethod),
            (b"BREW /pot HTTP/1.1\r\n", RequestError::UnknownMethod),
            (b"GET / HTTP/1.1\n", RequestError::BadLineEnding),
        ];
        for (buf, expected) in cases {
            assert_eq!(error(buf), expected, "{:?}", String::from_utf8_lossy(buf));
        }
    }

    #[test]
    fn refuses_impossible_request_lines_at_their_first_bad_byte() {
        // Without a line end: each is refused on the byte that no request line can hold.
        let cases: [&[u8]; 8] = [
            b"\x00",
            b"\xff\x00\xff",
            b"\r\n\x16\x03\x01", // a TLS ClientHello after an empty line
            b"GET /a\x00",
            b"GET / X",
            b"GET / HTTP/1.1x",
            b"GET / HTTP/1.1 ",
            b"GET  /",
        ];
        for buf in cases {
            assert_eq!(error(buf), RequestError::BadRequestLine, "{:?}", String::from_utf8_lossy(buf));
        }
        // Every prefix of a valid request line is still a valid beginning.
        let line = b"GET /path?q=1 HTTP/1.1";
        for end in 0..=line.len() {
            assert_eq!(parse_request(&line[..end]), Ok(Parsed::Incomplete), "{end}");
        }
        let garbage: Vec<u8> = b"\x00\xff".repeat(500);
        assert_eq!(error(&garbage), RequestError::BadRequestLine);
    }

    #[test]
    fn refuses_bad_line_endings() {
        let cases: [&[u8]; 5] = [
            b"GET / HTTP/1.1\r\nHost: x\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\n",
            b"GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n",
            b"GET / HTTP/1.1\r\r\n",
            b"\n",
        ];
        for buf in cases {
            assert_eq!(error(buf), RequestError::BadLineEnding, "{:?}", String::from_utf8_lossy(buf));
        }
    }

    #[test]
    fn refuses_malformed_header_fields() {
        let cases: [&[u8]; 7] = [
            b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\n: x\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n  folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\x00c\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\x7f\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo(st: x\r\n\r\n",
        ];
        for buf in cases {
            assert_eq!(error(buf), RequestError::BadHeader, "{:?}", String::from_utf8_lossy(buf));
        }
        // Tabs and UTF-8 are fine in values.
        let (head, _) = complete("GET / HTTP/1.1\r\nHost: x\r\nX-Name: a\tb é\r\n\r\n".as_bytes());
        assert_eq!(head.header("x-name"), Some("a\tb é"));
    }

    #[test]
    fn refuses_invalid_utf8_in_fields() {
        assert_eq!(error(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: \xff\xfe\r\n\r\n"), RequestError::InvalidUtf8);
    }

    #[test]
    fn host_rules() {
        assert_eq!(error(b"GET / HTTP/1.1\r\n\r\n"), RequestError::BadHost);
        assert_eq!(error(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), RequestError::BadHost);
        assert_eq!(error(b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n"), RequestError::BadHost);
        complete(b"GET / HTTP/1.0\r\n\r\n");
        complete(b"GET / HTTP/1.1\r\nHost:\r\n\r\n");
    }

    #[test]
    fn oversized_heads_are_refused_without_waiting_for_their_end() {
        let mut long_line = b"GET /".to_vec();
        long_line.resize(MAX_HEAD_LEN, b'a');
        assert_eq!(error(&long_line), RequestError::UriTooLong);
        assert_eq!(parse_request(&long_line[..MAX_HEAD_LEN - 1]), Ok(Parsed::Incomplete));

        let mut many_bytes = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        many_bytes.resize(MAX_HEAD_LEN, b'a');
        assert_eq!(error(&many_bytes), RequestError::HeadTooLarge);

        let mut many_fields = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many_fields.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        assert_eq!(error(&many_fields), RequestError::HeadTooLarge);
    }

    #[test]
    fn the_largest_heads_are_accepted() {
        let mut buf = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        buf.resize(MAX_HEAD_LEN - 4, b'a');
        buf.extend_from_slice(b"\r\n\r\n");
        assert_eq!(complete(&buf).1, MAX_HEAD_LEN);

        let mut fields = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 1..MAX_HEADERS {
            fields.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        fields.extend_from_slice(b"\r\n");
        assert_eq!(complete(&fields).0.headers().count(), MAX_HEADERS);
    }

    #[test]
    fn absolute_form_targets() {
        let cases = [
            ("http://example.com/a/b?q", "/a/b"),
            ("HTTPS://example.com:8443/x", "/x"),
            ("http://example.com", "/"),
            ("http://example.com?q", "/"),
            ("*", "*"),
            ("example.com:443", "example.com:443"),
        ];
        for (target, path) in cases {
            let buf = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(complete(buf.as_bytes()).0.path(), path, "{target}");
        }
    }

    #[test]
    fn a_scanner_resumed_byte_by_byte_agrees_with_one_pass() {
        let buf = b"\r\nGET / HTTP/1.1\r\nHost: x\r\nA: b\r\n\r\nrest";
        let mut scanner = Scanner::default();
        let mut found = None;
        for end in 0..=buf.len() {
            if let Some(len) = scanner.scan(&buf[..end]).expect("a valid head") {
                found = Some(len);
                break;
            }
        }
        assert_eq!(found, Some(buf.len() - 4));
    }

    #[test]
    fn methods_round_trip() {
        for method in [
            Method::Get,
            Method::Head,
            Method::Post,
            Method::Put,
            Method::Delete,
            Method::Options,
            Method::Patch,
            Method::Trace,
            Method::Connect,
        ] {
            assert_eq!(Method::from_token(method.as_str().as_bytes()), Some(method));
        }
    }
}
