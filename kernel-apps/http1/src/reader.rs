//! Requests with content: the framing an appliance that takes uploads (`POST` with
//! `Content-Length`) needs, without the static-site policy of [`Connection`](crate::Connection).
//!
//! A [`RequestReader`] holds at most one request: its head (at most [`MAX_HEAD_LEN`] bytes) and
//! its content (at most the `max_content` it was made with). [`RequestReader::receive`] never
//! takes a byte past the end of the current request, so pipelined requests stay in the caller's
//! socket buffer until [`RequestReader::consume`] makes room, which keeps the memory per
//! connection bounded and the framing exact. The caller decides what to answer; this module only
//! says where a request ends, or why it never will ([`Next::Refused`]).
//!
//! A request with content and `Expect: 100-continue` (curl sends it for large uploads) waits for
//! an interim `100 Continue` before sending its content: [`RequestReader::take_continue`] says
//! when to send one (RFC 9110 §10.1.1), once per request, never for a refused one.
//!
//! Framing rules: content is `Content-Length` bytes (RFC 9112 §6.3); `Transfer-Encoding`
//! (chunked uploads) is refused with 501, content over `max_content` with 413, and a malformed
//! head with the status of its [`RequestError`](crate::RequestError). After a refusal the framing
//! is lost, so the caller answers and closes the connection.

use alloc::vec::Vec;

use crate::request::{Content, MAX_HEAD_LEN, RequestHead, Scanner, parse_head};
use crate::response::Status;

/// A complete request: its head and its content, borrowed from the reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The head.
    pub head: RequestHead<'a>,
    /// The content: `Content-Length` bytes, empty for a request without any.
    pub content: &'a [u8],
}

/// What the reader holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// Part of a request, or nothing: receive more.
    Incomplete,
    /// A complete request: answer it, then [`RequestReader::consume`] it.
    Request(Request<'a>),
    /// The input can never become an acceptable request: answer with this status and close.
    Refused(Status),
}

/// Collects one request at a time from the bytes received on a connection.
#[derive(Debug)]
pub struct RequestReader {
    /// The current request's bytes: head, then content.
    input: Vec<u8>,
    scanner: Scanner,
    /// The head's length and the content's, once the head is complete and acceptable.
    framing: Option<(usize, usize)>,
    refused: Option<Status>,
    max_content: usize,
    /// The client waits for `100 Continue` before it sends the content.
    continue_due: bool,
}

impl RequestReader {
    /// A reader that accepts content of up to `max_content` bytes per request.
    pub fn new(max_content: usize) -> Self {
        Self {
            input: Vec::new(),
            scanner: Scanner::default(),
            framing: None,
            refused: None,
            max_content,
            continue_due: false,
        }
    }

    /// Takes bytes of the current request from `data` and returns how many: none once the
    /// request is complete or refused, and never any of the request after it.
    #[must_use = "the bytes not taken belong to the next request"]
    pub fn receive(&mut self, data: &[u8]) -> usize {
        if self.refused.is_some() {
            return 0;
        }
        let mut taken = 0;
        if self.framing.is_none() {
            let room = MAX_HEAD_LEN.saturating_sub(self.input.len());
            let piece = data.get(..room.min(data.len())).unwrap_or_default();
            self.input.extend_from_slice(piece);
            taken = piece.len();
            match self.scanner.scan(&self.input) {
                Ok(None) => return taken,
                Err(error) => {
                    self.refused = Some(error.status());
                    return taken;
                }
                Ok(Some(head_len)) => match self.frame(head_len) {
                    Ok(content_len) => {
                        self.framing = Some((head_len, content_len));
                        self.continue_due = content_len > 0 && self.expects_continue(head_len);
                        // Give back what was taken beyond the head: it is content, read below
                        // up to its length, or the next request.
                        let excess = self.input.len().saturating_sub(head_len);
                        self.input.truncate(head_len);
                        taken -= excess;
                    }
                    Err(status) => {
                        self.refused = Some(status);
                        return taken;
                    }
                },
            }
        }
        if let Some((head_len, content_len)) = self.framing {
            let missing = (head_len + content_len).saturating_sub(self.input.len());
            let rest = data.get(taken..).unwrap_or_default();
            let piece = rest.get(..missing.min(rest.len())).unwrap_or_default();
            if self.input.capacity() < head_len + content_len {
                self.input.reserve_exact(head_len + content_len - self.input.len());
            }
            self.input.extend_from_slice(piece);
            taken += piece.len();
        }
        taken
    }

    /// The content length of the complete head at the start of the input, if acceptable.
    fn frame(&self, head_len: usize) -> Result<usize, Status> {
        let head = parse_head(self.input.get(..head_len).unwrap_or_default()).map_err(|e| e.status())?;
        match head.content {
            Content::None => Ok(0),
            Content::Length(len) => match usize::try_from(len) {
                Ok(len) if len <= self.max_content => Ok(len),
                _ => Err(Status::ContentTooLarge),
            },
            Content::TransferCoded => Err(Status::NotImplemented),
        }
    }

    /// Whether the head at the start of the input asks for `100 Continue`.
    fn expects_continue(&self, head_len: usize) -> bool {
        parse_head(self.input.get(..head_len).unwrap_or_default())
            .is_ok_and(|head| head.header("expect").is_some_and(|value| value.eq_ignore_ascii_case("100-continue")))
    }

    /// Whether to send `HTTP/1.1 100 Continue\r\n\r\n` now: true once per request whose head
    /// asked for it, as soon as the head is accepted and while its content has not all arrived.
    pub fn take_continue(&mut self) -> bool {
        let due = self.continue_due && matches!(self.next(), Next::Incomplete);
        self.continue_due = false;
        due
    }

    /// The complete request, a refusal, or [`Next::Incomplete`].
    pub fn next(&self) -> Next<'_> {
        if let Some(status) = self.refused {
            return Next::Refused(status);
        }
        let Some((head_len, content_len)) = self.framing else { return Next::Incomplete };
        if self.input.len() < head_len + content_len {
            return Next::Incomplete;
        }
        let (head, content) = self.input.split_at(head_len.min(self.input.len()));
        match parse_head(head) {
            Ok(head) => Next::Request(Request { head, content }),
            // `frame` parsed the same bytes successfully; should that ever change, refuse.
            Err(error) => Next::Refused(error.status()),
        }
    }

    /// Drops the current request (answered) so that the next one can be received. The buffer's
    /// capacity is kept up to [`MAX_HEAD_LEN`] plus one request's content, its bound.
    pub fn consume(&mut self) {
        self.input.clear();
        self.scanner = Scanner::default();
        self.framing = None;
        self.refused = None;
        self.continue_due = false;
    }

    /// Whether part of a request has arrived, for the caller's timeout on slow clients.
    pub fn has_partial_request(&self) -> bool {
        !self.input.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Method;

    fn feed<'a>(reader: &mut RequestReader, mut data: &'a [u8]) -> &'a [u8] {
        loop {
            let taken = reader.receive(data);
            data = &data[taken..];
            if taken == 0 || data.is_empty() {
                return data;
            }
        }
    }

    #[test]
    fn reads_content_and_leaves_the_next_request() {
        let mut reader = RequestReader::new(16);
        let bytes = b"POST /append?key=a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n";
        let rest = feed(&mut reader, bytes);
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let Next::Request(request) = reader.next() else { panic!("expected a request: {:?}", reader.next()) };
        assert_eq!(request.head.method, Method::Post);
        assert_eq!(request.head.query(), Some("key=a"));
        assert_eq!(request.content, b"hello");
        reader.consume();
        assert!(!reader.has_partial_request());
        assert_eq!(reader.receive(rest), rest.len());
        assert_eq!(reader.next(), Next::Incomplete);
    }

    #[test]
    fn byte_by_byte_agrees_with_one_read() {
        let bytes = b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcPOST";
        let mut reader = RequestReader::new(16);
        let mut offset = 0;
        while offset < bytes.len() {
            let taken = reader.receive(&bytes[offset..offset + 1]);
            if taken == 0 {
                break;
            }
            offset += taken;
        }
        assert_eq!(&bytes[offset..], b"POST");
        let Next::Request(request) = reader.next() else { panic!("expected a request") };
        assert_eq!(request.content, b"abc");
    }

    #[test]
    fn a_request_without_content_is_complete_at_its_head() {
        let mut reader = RequestReader::new(0);
        assert_eq!(feed(&mut reader, b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n"), b"");
        let Next::Request(request) = reader.next() else { panic!("expected a request") };
        assert_eq!(request.head.path(), "/stats");
        assert!(request.content.is_empty());
    }

    #[test]
    fn refusals() {
        let cases: [(&[u8], Status); 4] = [
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n", Status::ContentTooLarge),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", Status::BadRequest),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", Status::NotImplemented),
            (b"POST /\n", Status::BadRequest),
        ];
        for (bytes, status) in cases {
            let mut reader = RequestReader::new(16);
            let _ = feed(&mut reader, bytes);
            assert_eq!(reader.next(), Next::Refused(status), "{}", String::from_utf8_lossy(bytes));
            assert_eq!(reader.receive(b"more"), 0, "a refused reader takes nothing");
        }
    }

    #[test]
    fn continue_is_due_once_for_content_that_waits_for_it() {
        let mut reader = RequestReader::new(16);
        let head = b"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(reader.receive(head), head.len());
        assert!(reader.take_continue());
        assert!(!reader.take_continue(), "once");
        assert_eq!(reader.receive(b"abc"), 3);
        assert!(matches!(reader.next(), Next::Request(_)));
        reader.consume();
        // Content sent along with the head needs no 100; nor does a refused or content-less one.
        for (bytes, max) in [
            (&b"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"[..], 16),
            (b"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 30\r\n\r\n", 16),
            (b"GET /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n", 16),
            (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n", 16),
        ] {
            let mut reader = RequestReader::new(max);
            let _ = feed(&mut reader, bytes);
            assert!(!reader.take_continue(), "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn an_endless_head_is_refused_at_the_limit() {
        let mut reader = RequestReader::new(16);
        let long = vec![b'a'; MAX_HEAD_LEN * 2];
        let _ = feed(&mut reader, &long);
        assert_eq!(reader.next(), Next::Refused(Status::UriTooLong));
        assert!(reader.input.len() <= MAX_HEAD_LEN);
    }
}
