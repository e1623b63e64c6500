//! A sans-IO HTTP/1.1 engine: the protocol half of Mast's `httpd` appliance, and of the
//! `cache` appliance's origin fetches.
//!
//! The crate turns the bytes a client sends on one TCP connection into the bytes to send back, and
//! says when to close. It never touches a socket or a clock: the appliance owns the I/O (smoltcp
//! sockets) and the time, this crate owns HTTP. It is `no_std` + `alloc`, has no dependencies and
//! no `unsafe`, and its tests run on the host.
//!
//! # Layers
//! - [`request`]: an incremental parser for request heads ([`parse_request`]).
//! - [`response`]: status codes and the serialisation of response heads ([`Response`]).
//! - [`site`]: [`StaticSite`], a site of `&'static [u8]` files (built with `include_bytes!`), and
//!   the policy that picks a response for each request ([`StaticSite::respond`]).
//! - [`connection`]: [`Connection`], the per-connection state machine that ties them together:
//!   bytes in, bytes out, and when to close. This is what the appliance drives.
//! - [`client`]: the client side, for appliances that fetch from another server (`cache`):
//!   [`write_request`] and [`ResponseReader`], which frames one response (`Content-Length`,
//!   chunked, or until close) as strictly as the server side frames requests.
//! - [`reader`]: [`RequestReader`], for appliances that take request content (`POST` with
//!   `Content-Length`, as `kvlog` does) and answer with their own logic: it frames one request
//!   (head and content) at a time; the appliance writes responses with [`write_head`].
//!
//! # Guarantees
//! - **Never panics on any input.** Every byte sequence, split into reads of any size, is answered
//!   or refused with a status code. Property tests and a fuzz target (`fuzz/`) check this.
//! - **Bounded memory per connection.** At most [`MAX_HEAD_LEN`] bytes of input are buffered, at
//!   most [`MAX_QUEUED_RESPONSES`] response heads (a couple of hundred bytes each) wait to be sent,
//!   and file bodies are borrowed from the site, never copied. A client that sends faster than it
//!   reads is slowed down: [`Connection::receive`] takes fewer bytes than offered, which leaves
//!   them in the TCP receive window.
//! - **Never desynchronised.** [`Connection`] never reads request content, so every request that
//!   announces some (`Content-Length` other than 0, or `Transfer-Encoding`) is answered and the
//!   connection is closed; so is every connection whose input fails to parse. [`RequestReader`]
//!   reads exactly `Content-Length` bytes and refuses (to close) anything it cannot frame.
//!
//! # Parsing rules
//! Strict on purpose: leniency in HTTP/1.1 parsing is where request smuggling lives, and the
//! clients of an appliance (browsers, curl, health checkers) are well behaved.
//! - Lines end with CRLF. A bare LF or a bare CR is a 400: RFC 9112 §2.2 *allows* a server to
//!   accept a lone LF, and this one does not.
//! - Empty lines before the request line are skipped (RFC 9112 §2.2); they count toward the
//!   size limit.
//! - The request line is exactly `METHOD SP target SP HTTP/x.y`, with single spaces. Methods are
//!   case-sensitive tokens: `GET` and `HEAD` are served; `POST`, `PUT`, `DELETE`, `OPTIONS`,
//!   `PATCH`, `TRACE` and `CONNECT` get 405 with `Allow: GET, HEAD`; any other token gets 501.
//!   A byte that no request line can hold there (a control byte, a non-token byte in the method,
//!   anything but `HTTP/d.d` as the version) is a 400 as soon as it arrives, without waiting
//!   for the line to end: binary garbage is refused at once, not after a timeout.
//! - The target is visible ASCII. Origin form (`/path?query`) and absolute form
//!   (`http://host/path`) are accepted; the query is ignored for the lookup, and `%XX` escapes
//!   in the path are decoded. A GET or HEAD of any other form (`*`, `host:port`) is a 400.
//! - `HTTP/1.0` and `HTTP/1.1` are served; any other well-formed version (`HTTP/2.0`, and also
//!   `HTTP/1.2`, which RFC 9112 would let a server treat as 1.1) is a 505.
//! - Header fields are `name: value` with a token name, no space before the colon, no line
//!   folding, and a value that is UTF-8 without control characters (tab allowed); anything else
//!   is a 400. HTTP/1.1 requests need exactly one `Host` field; HTTP/1.0 ones at most one.
//! - `Connection` is a list of options: `close` closes, `keep-alive` keeps an HTTP/1.0
//!   connection open. HTTP/1.1 keeps connections open unless asked; HTTP/1.0 closes them unless
//!   asked.
//! - `Content-Length` must be one field of decimal digits; a second one, a list, or `Content-Length`
//!   together with `Transfer-Encoding` is a 400.
//! - The head (request line, fields and the empty line after them) is at most [`MAX_HEAD_LEN`]
//!   bytes with at most [`MAX_HEADERS`] fields: past that the answer is 431 (414 if the request
//!   line itself has not ended), without waiting for the rest.
//!
//! # Status codes
//! | status | when | connection |
//! | --- | --- | --- |
//! | 200 | a file of the site, or `GET /healthz` (`ok\n`) | kept unless the request asked |
//! | 404 | GET/HEAD of a path the site lacks | kept unless the request asked |
//! | 405 | a known method other than GET/HEAD, with `Allow: GET, HEAD` | kept unless it had content |
//! | 400 | malformed request line, field, `Content-Length`, `Host`, line ending, UTF-8 | closed |
//! | 408 | [`Connection::timeout`] while a request was arriving | closed |
//! | 413 | GET/HEAD with a `Content-Length` other than 0 | closed |
//! | 414 | a request line that does not end within [`MAX_HEAD_LEN`] | closed |
//! | 431 | a head over [`MAX_HEAD_LEN`] bytes or [`MAX_HEADERS`] fields | closed |
//! | 501 | an unknown method token, or GET/HEAD with `Transfer-Encoding` | closed |
//! | 505 | an HTTP version other than 1.0 and 1.1 | closed |
//!
//! Every response carries `Server`, `Content-Type` and `Content-Length`; `Connection: close`
//! when the connection closes after it, and `Connection: keep-alive` when an HTTP/1.0 connection
//! stays open. Responses to HEAD have the headers of the GET response and no body. Error
//! responses have a one-line `text/plain` body. Responses are always `HTTP/1.1`.
//!
//! # Not supported
//! - Request content in [`Connection`] (the static site): no POST handling, no transfer coding
//!   of requests, no `Expect: 100-continue` (it is ignored: the content it announces is refused
//!   anyway). [`RequestReader`] takes `Content-Length` content (and answers `100-continue`), but
//!   no chunked uploads either.
//! - HTTP/2 and upgrades, ranges, conditional requests (`ETag`, `If-Modified-Since`),
//!   compression, and `Date` (the appliance has a monotonic clock, not a calendar; RFC 9110
//!   §6.6.1 says a server without a reliable clock must not send it).
//! - Timeouts: the appliance has the clock. [`Connection::is_idle`],
//!   [`Connection::has_partial_request`] and [`Connection::timeout`] are what it needs.
//! - Directory listings and dot-segment normalisation: the site is a map of paths, not a file
//!   system, so `/../x` simply finds nothing.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod client;
pub mod connection;
pub mod reader;
pub mod request;
pub mod response;
pub mod site;

pub use client::{FetchError, Fetched, ResponseReader, write_request};
pub use connection::{Connection, MAX_QUEUED_RESPONSES};
pub use reader::{Next, Request, RequestReader};
pub use request::{
    Content, Headers, MAX_HEAD_LEN, MAX_HEADERS, Method, Parsed, RequestError, RequestHead, Version, parse_request,
};
pub use response::{Response, Status, write_head};
pub use site::{StaticSite, content_type};
