//! The client side: writing a request, and reading the response an origin sends back, for
//! appliances that speak to another server (the `cache` appliance's origin fetches).
//!
//! [`ResponseReader`] takes the bytes of one response in reads of any size and says when it is
//! complete ([`ResponseReader::finish`] gives the [`Fetched`] response) or why it never will be
//! ([`FetchError`]). It is as strict as the server side, because a cache that stores a
//! misframed response serves it to everyone:
//! - the status line is `HTTP/1.x DDD reason`; header fields as for requests (token names, no
//!   folding, no control characters); lines end with CRLF;
//! - the body is framed by RFC 9112 §6.3: none for HEAD, 1xx, 204 and 304; `chunked` (the only
//!   transfer coding accepted, decoded here, trailers discarded); else `Content-Length` (one
//!   value; several differing ones are an error); else everything until the origin closes;
//! - the head is at most [`MAX_HEAD_LEN`] bytes and [`MAX_HEADERS`] fields; the body at most
//!   the `max_body` the reader was made with ([`FetchError::TooLarge`] beyond, without waiting
//!   for the rest).
//!
//! Interim responses (`100 Continue`, `103 Early Hints`) are skipped. The reader never panics
//! and holds at most `MAX_HEAD_LEN + max_body` bytes plus one chunk-size line.

use alloc::{string::String, vec::Vec};

use crate::request::{MAX_HEAD_LEN, MAX_HEADERS};

/// A complete response from an origin, owned (a cache keeps it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The status code, 200 to 599 (interim 1xx responses are skipped).
    pub status: u16,
    /// The header fields in order, names as sent, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Fetched {
    /// The first field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Why a response can never be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// The status line is not `HTTP/1.x DDD …`.
    BadStatusLine,
    /// A header field is malformed, or a line does not end with CRLF.
    BadHeader,
    /// The head exceeds [`MAX_HEAD_LEN`] bytes or [`MAX_HEADERS`] fields.
    HeadTooLarge,
    /// `Content-Length` is malformed or given twice with different values, or a chunk size is.
    BadFraming,
    /// A transfer coding other than `chunked`.
    UnsupportedCoding,
    /// The body exceeds the reader's limit.
    TooLarge,
    /// The origin closed before the response was complete.
    Truncated,
}

impl core::fmt::Display for FetchError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::BadStatusLine => "malformed status line",
            Self::BadHeader => "malformed header field or line ending",
            Self::HeadTooLarge => "response head too large",
            Self::BadFraming => "malformed Content-Length or chunk size",
            Self::UnsupportedCoding => "unsupported transfer coding",
            Self::TooLarge => "response body over the limit",
            Self::Truncated => "the origin closed before the response was complete",
        })
    }
}

/// Appends a request head (no content) to `out`: `METHOD target HTTP/1.1`, `Host`, the `fields`
/// given (written verbatim: they must be valid field lines), and the empty line.
pub fn write_request(out: &mut Vec<u8>, method: &str, target: &str, host: &str, fields: &[(&str, &str)]) {
    for piece in [method, " ", target, " HTTP/1.1\r\nHost: ", host, "\r\n"] {
        out.extend_from_slice(piece.as_bytes());
    }
    for (name, value) in fields {
        for piece in [*name, ": ", *value, "\r\n"] {
            out.extend_from_slice(piece.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// How the body is framed, once the head is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    Length(usize),
    /// Chunked: in the size line, or in a chunk with this many bytes left (then its CRLF).
    ChunkSize,
    ChunkData(usize),
    ChunkEnd,
    Trailers,
    UntilClose,
}

/// Reads one response. See the module docs for the rules.
#[derive(Debug)]
pub struct ResponseReader {
    /// The head while it arrives; then the chunk-size or trailer line being read.
    line: Vec<u8>,
    head: Option<(u16, Vec<(String, String)>)>,
    body: Vec<u8>,
    framing: Option<Body>,
    max_body: usize,
    head_request: bool,
    result: Option<Result<(), FetchError>>,
}

impl ResponseReader {
    /// A reader for the response to a request; `head_request` when it was a HEAD (no body).
    pub fn new(max_body: usize, head_request: bool) -> Self {
        Self { line: Vec::new(), head: None, body: Vec::new(), framing: None, max_body, head_request, result: None }
    }

    /// Takes response bytes; returns how many were taken (all, until the response is complete
    /// or refused; bytes after a complete response are not taken).
    pub fn receive(&mut self, data: &[u8]) -> usize {
        let mut taken = 0;
        while taken < data.len() && self.result.is_none() {
            let rest = data.get(taken..).unwrap_or_default();
            match self.step(rest) {
                Ok(n) => taken += n,
                Err(error) => self.result = Some(Err(error)),
            }
        }
        taken
    }

    /// The origin closed its side: a body framed by the close is complete, anything else is
    /// truncated.
    pub fn end_of_input(&mut self) {
        if self.result.is_none() {
            self.result = Some(match self.framing {
                Some(Body::UntilClose) => Ok(()),
                _ => Err(FetchError::Truncated),
            });
        }
    }

    /// Whether the response is complete or refused.
    pub fn is_done(&self) -> bool {
        self.result.is_some()
    }

    /// The outcome: `None` while incomplete.
    pub fn finish(self) -> Option<Result<Fetched, FetchError>> {
        match self.result? {
            Err(error) => Some(Err(error)),
            Ok(()) => {
                let (status, headers) = self.head?;
                Some(Ok(Fetched { status, headers, body: self.body }))
            }
        }
    }

    /// Consumes a prefix of `data` in the current state; returns how many bytes.
    fn step(&mut self, data: &[u8]) -> Result<usize, FetchError> {
        let Some(framing) = self.framing else { return self.read_head(data) };
        match framing {
            Body::Length(left) | Body::ChunkData(left) => {
                let n = left.min(data.len());
                if self.body.len() + n > self.max_body {
                    return Err(FetchError::TooLarge);
                }
                self.body.extend_from_slice(data.get(..n).unwrap_or_default());
                let left = left - n;
                self.framing = Some(match framing {
                    Body::Length(_) => Body::Length(left),
                    _ if left == 0 => Body::ChunkEnd,
                    _ => Body::ChunkData(left),
                });
                if framing == Body::Length(n) {
                    self.result = Some(Ok(()));
                }
                Ok(n)
            }
            Body::UntilClose => {
                if self.body.len() + data.len() > self.max_body {
                    return Err(FetchError::TooLarge);
                }
                self.body.extend_from_slice(data);
                Ok(data.len())
            }
            Body::ChunkSize | Body::ChunkEnd | Body::Trailers => {
                let (n, line) = self.take_line(data, 1024)?;
                let Some(line) = line else { return Ok(n) };
                match framing {
                    Body::ChunkEnd if line.is_empty() => self.framing = Some(Body::ChunkSize),
                    Body::ChunkEnd => return Err(FetchError::BadFraming),
                    Body::ChunkSize => {
                        let size = chunk_size(&line)?;
                        self.framing = Some(if size == 0 { Body::Trailers } else { Body::ChunkData(size) });
                    }
                    _ if line.is_empty() => self.result = Some(Ok(())),
                    _ => {} // A trailer field: discarded.
                }
                Ok(n)
            }
        }
    }

    /// Takes bytes up to a CRLF into `self.line` (at most `limit`); the line once it ends.
    fn take_line(&mut self, data: &[u8], limit: usize) -> Result<(usize, Option<Vec<u8>>), FetchError> {
        let end = data.iter().position(|&b| b == b'\n');
        let n = end.map_or(data.len(), |at| at + 1);
        self.line.extend_from_slice(data.get(..n).unwrap_or_default());
        if self.line.len() > limit {
            return Err(FetchError::BadFraming);
        }
        if end.is_none() {
            return Ok((n, None));
        }
        let mut line = core::mem::take(&mut self.line);
        line.pop();
        if line.pop() != Some(b'\r') {
            return Err(FetchError::BadHeader);
        }
        Ok((n, Some(line)))
    }

    /// Accumulates the head; parses it once its empty line has arrived.
    fn read_head(&mut self, data: &[u8]) -> Result<usize, FetchError> {
        let room = MAX_HEAD_LEN.saturating_sub(self.line.len());
        let piece = data.get(..room.min(data.len())).unwrap_or_default();
        let start = self.line.len().saturating_sub(3);
        self.line.extend_from_slice(piece);
        let Some(end) = self.line.get(start..).and_then(|tail| tail.windows(4).position(|w| w == b"\r\n\r\n")) else {
            if self.line.len() >= MAX_HEAD_LEN {
                return Err(FetchError::HeadTooLarge);
            }
            return Ok(piece.len());
        };
        let head_len = start + end + 4;
        let used = piece.len() - (self.line.len() - head_len);
        let head = core::mem::take(&mut self.line);
        let (status, headers) = parse_head(head.get(..head_len).unwrap_or_default())?;
        if (100..200).contains(&status) {
            // An interim response: the real one follows.
            return Ok(used);
        }
        self.framing = Some(self.framing_of(status, &headers)?);
        match self.framing {
            Some(Body::Length(0)) => self.result = Some(Ok(())),
            Some(Body::Length(len)) if len > self.max_body => return Err(FetchError::TooLarge),
            _ => {}
        }
        self.head = Some((status, headers));
        Ok(used)
    }

    fn framing_of(&self, status: u16, headers: &[(String, String)]) -> Result<Body, FetchError> {
        if self.head_request || status == 204 || status == 304 {
            return Ok(Body::Length(0));
        }
        let mut length = None;
        let mut chunked = false;
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("transfer-encoding") {
                if !value.eq_ignore_ascii_case("chunked") || chunked {
                    return Err(FetchError::UnsupportedCoding);
                }
                chunked = true;
            } else if name.eq_ignore_ascii_case("content-length") {
                let value = decimal(value).ok_or(FetchError::BadFraming)?;
                if length.is_some_and(|length| length != value) {
                    return Err(FetchError::BadFraming);
                }
                length = Some(value);
            }
        }
        Ok(match (chunked, length) {
            // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length.
            (true, _) => Body::ChunkSize,
            (false, Some(length)) => Body::Length(length),
            (false, None) => Body::UntilClose,
        })
    }
}

/// Parses `HTTP/1.x DDD reason` and the field lines of a complete head (ending CRLF CRLF).
fn parse_head(head: &[u8]) -> Result<(u16, Vec<(String, String)>), FetchError> {
    let text = core::str::from_utf8(head).map_err(|_| FetchError::BadHeader)?;
    let text = text.strip_suffix("\r\n\r\n").ok_or(FetchError::BadHeader)?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let rest = status_line.strip_prefix("HTTP/1.").ok_or(FetchError::BadStatusLine)?;
    let mut bytes = rest.bytes();
    let (Some(b'0' | b'1'), Some(b' ')) = (bytes.next(), bytes.next()) else { return Err(FetchError::BadStatusLine) };
    let code = rest.get(2..5).ok_or(FetchError::BadStatusLine)?;
    let status: u16 = match code.bytes().all(|b| b.is_ascii_digit()) {
        true => code.parse().map_err(|_| FetchError::BadStatusLine)?,
        false => return Err(FetchError::BadStatusLine),
    };
    if !(100..600).contains(&status) || !matches!(rest.as_bytes().get(5), None | Some(b' ')) {
        return Err(FetchError::BadStatusLine);
    }
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() >= MAX_HEADERS {
            return Err(FetchError::HeadTooLarge);
        }
        if line.contains('\r') || line.contains('\n') {
            return Err(FetchError::BadHeader);
        }
        let (name, value) = line.split_once(':').ok_or(FetchError::BadHeader)?;
        let token =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        let value = value.trim_matches([' ', '\t']);
        if !token || value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(FetchError::BadHeader);
        }
        headers.push((String::from(name), String::from(value)));
    }
    Ok((status, headers))
}

/// A chunk-size line: hex digits, optionally `;extensions` (ignored).
fn chunk_size(line: &[u8]) -> Result<usize, FetchError> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let digits = digits.strip_suffix(b" ").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 8 {
        return Err(FetchError::BadFraming);
    }
    digits.iter().try_fold(0_usize, |size, &b| {
        let digit = char::from(b).to_digit(16).ok_or(FetchError::BadFraming)?;
        Ok(size * 16 + digit as usize)
    })
}

/// One or more decimal digits that fit a `usize`.
fn decimal(value: &str) -> Option<usize> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8], step: usize, close: bool) -> Result<Fetched, FetchError> {
        let mut reader = ResponseReader::new(1000, false);
        for piece in bytes.chunks(step.max(1)) {
            reader.receive(piece);
        }
        if close {
            reader.end_of_input();
        }
        reader.finish().expect("done")
    }

    #[test]
    fn content_length_chunked_and_close_delimited_bodies_in_any_reads() {
        let cases: [(&[u8], bool, &[u8]); 4] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"a\"\r\n\r\nhello", false, b"hello"),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nhel\r\n2\r\nlo\r\n0\r\nT: 1\r\n\r\n",
                false,
                b"hello",
            ),
            (b"HTTP/1.0 200 OK\r\n\r\nhello", true, b"hello"),
            (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nhello", false, b"hello"),
        ];
        for (bytes, close, body) in cases {
            for step in [1, 2, 7, 1000] {
                let fetched =
                    read(bytes, step, close).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(bytes)));
                assert_eq!(fetched.body, body);
            }
        }
        let fetched = read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"a\"\r\n\r\nhello", 3, false).expect("ok");
        assert_eq!((fetched.status, fetched.header("etag")), (200, Some("\"a\"")));
    }

    #[test]
    fn no_body_for_304_204_and_head_and_nothing_past_the_response_is_taken() {
        let bytes = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\nNEXT";
        let mut reader = ResponseReader::new(1000, false);
        assert_eq!(reader.receive(bytes), bytes.len() - 4);
        assert!(reader.finish().expect("done").expect("ok").body.is_empty());
        let mut head = ResponseReader::new(1000, true);
        head.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n");
        assert!(head.is_done());
    }

    #[test]
    fn malformed_responses_are_refused() {
        let cases: [(&[u8], FetchError); 9] = [
            (b"HTTP/2 200 OK\r\n\r\n", FetchError::BadStatusLine),
            (b"HTTP/1.1 20 OK\r\n\r\n", FetchError::BadStatusLine),
            (b"HTTP/1.1 200OK\r\n\r\n", FetchError::BadStatusLine),
            (b"\x00\xff\r\n\r\n", FetchError::BadHeader),
            (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", FetchError::BadHeader),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", FetchError::BadFraming),
            (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", FetchError::BadFraming),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", FetchError::UnsupportedCoding),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", FetchError::BadFraming),
        ];
        for (bytes, expected) in cases {
            assert_eq!(read(bytes, 5, true), Err(expected), "{:?}", String::from_utf8_lossy(bytes));
        }
        assert_eq!(read(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 5, true), Err(FetchError::Truncated));
        assert_eq!(read(b"HTTP/1.1 200 OK\r\nContent-Length: 1001\r\n\r\n", 5, false), Err(FetchError::TooLarge));
        let mut endless = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        endless.resize(MAX_HEAD_LEN + 10, b'a');
        assert_eq!(read(&endless, 100, true), Err(FetchError::HeadTooLarge));
    }

    #[test]
    fn requests_are_written_with_host_and_fields() {
        let mut out = Vec::new();
        write_request(&mut out, "GET", "/a?b", "origin", &[("If-None-Match", "\"x\"")]);
        assert_eq!(out, b"GET /a?b HTTP/1.1\r\nHost: origin\r\nIf-None-Match: \"x\"\r\n\r\n");
    }
}
