//! The connection state machine: bytes in, bytes out, and when to close.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::fmt;

use crate::request::{Content, MAX_HEAD_LEN, Method, RequestHead, Scanner, Version, parse_head};
use crate::response::{Response, Status};
use crate::site::StaticSite;

/// The most responses that wait to be sent. Once this many are queued, requests already
/// received wait, and [`Connection::receive`] takes no more bytes than fit the input buffer,
/// until the caller has taken some output.
pub const MAX_QUEUED_RESPONSES: usize = 16;

/// A piece of output: a response head, or a body borrowed from the site.
enum Chunk {
    Head(Vec<u8>),
    Body(&'static [u8]),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Head(bytes) => bytes,
            Self::Body(bytes) => bytes,
        }
    }
}

impl fmt::Debug for Chunk {
    /// The kind and length only: a body can be a whole file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Head(bytes) => write!(f, "Head({} bytes)", bytes.len()),
            Self::Body(bytes) => write!(f, "Body({} bytes)", bytes.len()),
        }
    }
}

/// One HTTP/1.1 connection, without the socket: the caller feeds it the bytes it receives
/// ([`receive`](Self::receive)), sends the bytes it produces ([`write_output`](Self::write_output),
/// or [`pending_output`](Self::pending_output) and [`consume_output`](Self::consume_output)), and
/// closes the socket when it says so ([`should_close`](Self::should_close)).
///
/// Requests may arrive in any pieces: several in one read (pipelining) are answered in order, and
/// one split over many reads is answered once its head is complete. Each is answered by the
/// [`StaticSite`] given to [`new`](Self::new). After a response that closes the connection (the
/// client asked, the request had content, or it could not be parsed), no more requests are
/// answered and further input is discarded, so the caller can keep draining its socket while
/// the response and the FIN are delivered.
///
/// The caller also owns the clock. Three timeouts cover slow or idle clients:
/// [`is_idle`](Self::is_idle) (a kept-alive connection waiting for its next request),
/// [`has_partial_request`](Self::has_partial_request) (a request has begun but is not yet
/// answered), and output that the client does not read (`has_output` for too long). When one
/// expires, call [`timeout`](Self::timeout), which answers a begun request with 408 and closes.
///
/// ```
/// use http1::{Connection, StaticSite};
///
/// static SITE: StaticSite = StaticSite::new(&[("/index.html", b"<h1>hi</h1>")]);
///
/// let mut connection = Connection::new(&SITE);
/// let mut sent = Vec::new();
/// for read in [&b"GET / HTTP/1.1\r\nHo"[..], b"st: x\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n"] {
///     let taken = connection.receive(read);
///     assert_eq!(taken, read.len()); // less only while many responses wait to be sent
///     let mut buf = [0; 64];
///     while connection.has_output() {
///         let n = connection.write_output(&mut buf);
///         sent.extend_from_slice(&buf[..n]);
///     }
/// }
/// let sent = String::from_utf8(sent).unwrap();
/// assert!(sent.starts_with("HTTP/1.1 200 OK\r\n"));
/// assert!(sent.ends_with("Connection: close\r\n\r\nok\n")); // HTTP/1.0 closes by default
/// assert!(connection.should_close());
/// ```
///
/// With a smoltcp TCP socket (smoltcp is not a dependency of this crate), after each poll of
/// the interface:
///
/// ```ignore
/// if socket.can_recv() {
///     socket.recv(|data| (connection.receive(data), ()))?;
/// }
/// if socket.can_send() && connection.has_output() {
///     socket.send(|buf| (connection.write_output(buf), ()))?;
/// }
/// if !socket.may_recv() {
///     connection.end_of_input(); // the client sent FIN
/// }
/// if connection.should_close() {
///     socket.close();
/// }
/// ```
pub struct Connection {
    site: &'static StaticSite,
    /// Received bytes not yet answered: at most [`MAX_HEAD_LEN`].
    input: Vec<u8>,
    /// How far the head at the start of `input` has been examined.
    scanner: Scanner,
    /// Output not yet taken by the caller. The front chunk is never empty.
    output: VecDeque<Chunk>,
    /// How many bytes of the front chunk the caller has taken.
    taken: usize,
    /// How many response heads are in `output`.
    queued: usize,
    /// The client will send nothing more.
    input_ended: bool,
    /// No more requests will be answered.
    closing: bool,
}

impl fmt::Debug for Connection {
    /// The state, without the bytes: input is up to [`MAX_HEAD_LEN`] of them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("input_len", &self.input.len())
            .field("output", &self.output)
            .field("taken", &self.taken)
            .field("queued", &self.queued)
            .field("input_ended", &self.input_ended)
            .field("closing", &self.closing)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A new connection whose requests `site` answers.
    pub fn new(site: &'static StaticSite) -> Self {
        Self {
            site,
            input: Vec::new(),
            scanner: Scanner::default(),
            output: VecDeque::new(),
            taken: 0,
            queued: 0,
            input_ended: false,
            closing: false,
        }
    }

    /// Takes bytes received from the client and answers every request they complete. Returns how
    /// many bytes of `data` were taken: all of them, except while [`MAX_QUEUED_RESPONSES`]
    /// responses wait to be sent and the input buffer is full; offer the rest again after taking
    /// some output. Once the connection [`is_closing`](Self::is_closing), every byte is taken
    /// and discarded.
    #[must_use = "the bytes not taken must be offered again"]
    pub fn receive(&mut self, data: &[u8]) -> usize {
        let mut taken = 0;
        loop {
            if self.closing || self.input_ended {
                // Including the rest of `data` after a request that closed the connection.
                return data.len();
            }
            let rest = data.get(taken..).unwrap_or_default();
            let room = MAX_HEAD_LEN.saturating_sub(self.input.len());
            let piece = rest.get(..room.min(rest.len())).unwrap_or_default();
            self.reserve_input(piece.len());
            self.input.extend_from_slice(piece);
            taken += piece.len();
            let answered = self.answer_requests();
            // Answering a request frees input room, so the rest of `data` may fit now. Answering
            // none with bytes left over means the output queue is full.
            if !self.closing && (taken == data.len() || answered == 0) {
                return taken;
            }
        }
    }

    /// Whether there are bytes to send.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// The next bytes to send, without copying: empty when there are none. Call
    /// [`consume_output`](Self::consume_output) with how many were sent; more may follow.
    pub fn pending_output(&self) -> &[u8] {
        self.output.front().map_or(&[], |chunk| chunk.bytes().get(self.taken..).unwrap_or_default())
    }

    /// Marks the first `sent` bytes of the output as sent (more than there are is the same as
    /// all), and answers requests that were waiting for room in the output queue.
    pub fn consume_output(&mut self, sent: usize) {
        self.advance_output(sent);
        self.answer_requests();
    }

    /// Copies as many bytes of output as fit into `buf`, marks them as sent, and returns how many
    /// they were.
    pub fn write_output(&mut self, buf: &mut [u8]) -> usize {
        let mut written = 0;
        while let Some(space) = buf.get_mut(written..) {
            let pending = self.pending_output();
            let n = space.len().min(pending.len());
            if n == 0 {
                break;
            }
            space[..n].copy_from_slice(&pending[..n]);
            written += n;
            self.advance_output(n);
        }
        self.answer_requests();
        written
    }

    /// Tells the connection that the client has closed its side (a FIN arrived). Requests
    /// already received are still answered; a partial one is dropped without a response. Then
    /// the connection closes.
    pub fn end_of_input(&mut self) {
        self.input_ended = true;
        self.answer_requests();
    }

    /// Tells the connection that the caller's timer expired. A begun request (see
    /// [`has_partial_request`](Self::has_partial_request)) is answered with 408; then the
    /// connection closes once the output is sent. Does nothing to a connection already closing.
    pub fn timeout(&mut self) {
        if self.closing {
            return;
        }
        if !self.input.is_empty() {
            self.queue(&Response::error(Status::RequestTimeout), Version::Http11, true, false);
        }
        self.stop_answering();
    }

    /// Whether no more requests will be answered: close the socket once the output is sent.
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// Whether the socket should be closed now: the connection is closing and all its output has
    /// been taken.
    pub fn should_close(&self) -> bool {
        self.closing && self.output.is_empty()
    }

    /// Whether the connection is open, with nothing received and nothing to send: a kept-alive
    /// connection between requests, for the caller's idle timeout.
    pub fn is_idle(&self) -> bool {
        !self.closing && self.input.is_empty() && self.output.is_empty()
    }

    /// Whether bytes of a request have arrived that have not been answered yet, for the caller's
    /// timeout on slow clients. While [`has_output`](Self::has_output), these may also be
    /// complete requests waiting for the client to read the responses before them.
    pub fn has_partial_request(&self) -> bool {
        !self.closing && !self.input.is_empty()
    }

    /// Answers the complete requests at the start of the input, as long as there is room in the
    /// output queue, and returns how many were answered.
    fn answer_requests(&mut self) -> usize {
        let mut answered = 0;
        while !self.closing && self.queued < MAX_QUEUED_RESPONSES {
            let len = match self.scanner.scan(&self.input) {
                Ok(Some(len)) => len,
                Ok(None) => {
                    if self.input_ended {
                        // The client will never finish this request.
                        self.stop_answering();
                    }
                    break;
                }
                Err(error) => {
                    self.queue(&Response::error(error.status()), Version::Http11, true, false);
                    self.stop_answering();
                    break;
                }
            };
            let (response, version, close, head_only) = match parse_head(self.input.get(..len).unwrap_or_default()) {
                Ok(head) => {
                    let response = self.site.respond(&head);
                    (response, head.version, must_close(&head, &response), head.method == Method::Head)
                }
                Err(error) => (Response::error(error.status()), Version::Http11, true, false),
            };
            self.queue(&response, version, close, head_only);
            answered += 1;
            if close {
                self.stop_answering();
            } else {
                self.input.drain(..len.min(self.input.len()));
                self.scanner = Scanner::default();
            }
        }
        answered
    }

    /// Appends a response to the output: its head, then its body unless `head_only`.
    fn queue(&mut self, response: &Response, version: Version, close: bool, head_only: bool) {
        let mut head = Vec::with_capacity(192);
        response.write_head(&mut head, version, close);
        self.output.push_back(Chunk::Head(head));
        self.queued += 1;
        if !head_only && !response.body.is_empty() {
            self.output.push_back(Chunk::Body(response.body));
        }
    }

    /// Stops answering requests and drops the input.
    fn stop_answering(&mut self) {
        self.closing = true;
        self.input = Vec::new();
        self.scanner = Scanner::default();
    }

    /// Drops the first `sent` bytes of output.
    fn advance_output(&mut self, mut sent: usize) {
        while sent > 0 {
            let Some(front) = self.output.front() else {
                return;
            };
            let left = front.bytes().len().saturating_sub(self.taken);
            if sent < left {
                self.taken += sent;
                return;
            }
            sent -= left;
            if let Some(Chunk::Head(_)) = self.output.pop_front() {
                self.queued = self.queued.saturating_sub(1);
            }
            self.taken = 0;
        }
    }

    /// Makes room for `additional` more bytes of input, growing the buffer by doubling but never
    /// past [`MAX_HEAD_LEN`], which the input never exceeds.
    fn reserve_input(&mut self, additional: usize) {
        let needed = self.input.len().saturating_add(additional);
        if needed > self.input.capacity() {
            let target = needed.max(self.input.capacity().saturating_mul(2)).min(MAX_HEAD_LEN).max(needed);
            self.input.reserve_exact(target - self.input.len());
        }
    }
}

/// Whether the connection must close after answering `request` with `response`: when the client
/// asked; when the request has content, which is never read, so the bytes after the head are not
/// the next request; and after any error other than 404 and 405, which leave the connection in
/// step and are routine (a missing `favicon.ico`), so closing would only cost a reconnect.
fn must_close(request: &RequestHead<'_>, response: &Response) -> bool {
    !request.keep_alive
        || request.content != Content::None
        || !matches!(
            response.status,
            Status::Ok
                | Status::NotFound
                | Status::MethodNotAllowed
                | Status::NotModified
                | Status::PartialContent
                | Status::RangeNotSatisfiable
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    static SITE: StaticSite = StaticSite::new(&[("/index.html", b"home")]);

    fn drain(connection: &mut Connection) -> Vec<u8> {
        let mut out = Vec::new();
        while connection.has_output() {
            let pending = connection.pending_output();
            assert!(!pending.is_empty(), "has_output but nothing pending");
            // Take an odd amount to cross chunk boundaries.
            let n = pending.len().min(7);
            out.extend_from_slice(&pending[..n]);
            connection.consume_output(n);
        }
        out
    }

    #[test]
    fn input_never_exceeds_the_head_limit_and_the_queue_stays_bounded() {
        let mut connection = Connection::new(&SITE);
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let many: Vec<u8> = request.iter().copied().cycle().take(request.len() * 1000).collect();
        let taken = connection.receive(&many);
        assert!(taken < many.len(), "a full queue must push back");
        assert_eq!(connection.queued, MAX_QUEUED_RESPONSES);
        assert!(connection.input.len() <= MAX_HEAD_LEN);
        assert!(connection.input.capacity() <= MAX_HEAD_LEN);
        assert!(connection.output.len() <= 2 * MAX_QUEUED_RESPONSES);

        // Draining the output lets the waiting requests through, and the rest can be offered.
        let mut offset = taken;
        let mut answered = 0;
        while offset < many.len() || connection.has_output() {
            let out = drain(&mut connection);
            answered += out.windows(15).filter(|window| window == b"HTTP/1.1 200 OK").count();
            offset += connection.receive(&many[offset..]);
            assert!(connection.input.len() <= MAX_HEAD_LEN);
            assert!(connection.queued <= MAX_QUEUED_RESPONSES);
        }
        assert_eq!(answered, 1000);
        assert!(connection.is_idle());
    }

    #[test]
    fn write_output_spans_chunks() {
        let mut connection = Connection::new(&SITE);
        let read = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(connection.receive(read), read.len());
        assert_eq!(connection.output.len(), 4);
        let mut buf = [0; 4096];
        let n = connection.write_output(&mut buf);
        let text = core::str::from_utf8(&buf[..n]).expect("ASCII");
        assert_eq!(text.matches("\r\n\r\nhome").count(), 2, "{text}");
        assert!(!connection.has_output());
        assert_eq!(connection.queued, 0);
        assert_eq!(connection.write_output(&mut buf), 0);
        assert_eq!(connection.write_output(&mut []), 0);
    }

    #[test]
    fn consuming_more_than_pending_is_harmless() {
        let mut connection = Connection::new(&SITE);
        let read = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(connection.receive(read), read.len());
        connection.consume_output(usize::MAX);
        assert!(!connection.has_output());
        assert!(connection.pending_output().is_empty());
        assert_eq!(connection.queued, 0);
    }
}
