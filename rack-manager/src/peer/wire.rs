//! HTTP/1.1 on a peer link, one request per connection. The server side is [`crate::http`]'s
//! (see `server.rs`); here are the protocol's request and response types and the client, which
//! writes one request and reads one `Content-Length` response, bounding every length it reads.

use std::{
    io::{self, Read, Write},
    net::{TcpStream, ToSocketAddrs},
    sync::Arc,
    time::Duration,
};

use rustls::pki_types::ServerName;

use super::{
    identity::{Fingerprint, Identity},
    tls,
};

/// The largest request body a peer accepts (heartbeats and chunk lists are small).
pub const MAX_REQUEST_BODY: u64 = 4 << 20;
/// The largest response body a peer client reads (a volume snapshot or a chunk batch).
pub const MAX_RESPONSE_BODY: u64 = 1 << 30;
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

#[derive(Debug)]
pub struct Request {
    pub method: http1::request::Method,
    pub path: String,
    pub body: Vec<u8>,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn ok(body: Vec<u8>) -> Response {
        Response { status: 200, headers: Vec::new(), body }
    }

    pub fn json<T: serde::Serialize>(value: &T) -> Response {
        Response::ok(serde_json::to_vec(value).expect("peer messages are plain data"))
    }

    pub fn error(status: u16, message: impl Into<String>) -> Response {
        Response { status, headers: Vec::new(), body: message.into().into_bytes() }
    }

    #[cfg(test)]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot connect to {address}: {detail}")]
    Connect { address: String, detail: String },
    #[error("the TLS handshake with {address} failed: {detail}")]
    Handshake { address: String, detail: String },
    #[error("talking to {address}: {detail}")]
    Io { address: String, detail: String },
    #[error("{address} answered {status}: {message}")]
    Status { address: String, status: u16, message: String },
}

/// A client for one peer: its address and pinned certificate, and this rack's identity.
#[derive(Debug, Clone)]
pub struct PeerClient {
    address: String,
    config: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl PeerClient {
    /// `url` is `https://HOST:PORT`.
    pub fn new(identity: &Identity, url: &str, pinned: Fingerprint, timeout: Duration) -> anyhow::Result<PeerClient> {
        let address = url
            .strip_prefix("https://")
            .ok_or_else(|| anyhow::anyhow!("{url:?} is not a peer URL: give https://HOST:PORT"))?
            .trim_end_matches('/')
            .to_owned();
        Ok(PeerClient { address, config: tls::client_config(identity, pinned)?, timeout })
    }

    /// A client of the TLS server at `url` (`https://HOST:PORT`) with this rustls configuration
    /// (an agent's API: [`tls::pinned_client_config`], no client certificate).
    pub fn with_config(url: &str, config: Arc<rustls::ClientConfig>, timeout: Duration) -> anyhow::Result<PeerClient> {
        let address = url
            .strip_prefix("https://")
            .ok_or_else(|| anyhow::anyhow!("{url:?} is not a TLS URL: give https://HOST:PORT"))?
            .trim_end_matches('/')
            .to_owned();
        Ok(PeerClient { address, config, timeout })
    }

    /// Sends one request and returns a 2xx response, or the error.
    pub fn call(&self, method: &str, path: &str, body: &[u8]) -> Result<Response, CallError> {
        self.request(method, path, None, body, MAX_RESPONSE_BODY)
    }

    /// [`PeerClient::call`], refusing a response body longer than `max_body` before reading it
    /// (a heartbeat reply is small: a hostile peer must not make this rack read a gigabyte).
    pub fn call_limited(&self, method: &str, path: &str, body: &[u8], max_body: u64) -> Result<Response, CallError> {
        self.request(method, path, None, body, max_body)
    }

    /// [`PeerClient::call`], with `Authorization: Bearer <bearer>` when given, refusing a
    /// response body over `max_body` (an agent's answers are small JSON documents).
    pub fn call_with_bearer(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
        max_body: u64,
    ) -> Result<Response, CallError> {
        self.request(method, path, bearer, body, max_body)
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
        max_body: u64,
    ) -> Result<Response, CallError> {
        let address = self.address.clone();
        let connect_error = |detail: String| CallError::Connect { address: address.clone(), detail };
        let target = self
            .address
            .to_socket_addrs()
            .map_err(|e| connect_error(e.to_string()))?
            .next()
            .ok_or_else(|| connect_error("the name resolves to no address".into()))?;
        let mut socket = TcpStream::connect_timeout(&target, self.timeout).map_err(|e| connect_error(e.to_string()))?;
        let io_error = |e: io::Error| CallError::Io { address: address.clone(), detail: e.to_string() };
        socket.set_read_timeout(Some(self.timeout)).map_err(io_error)?;
        socket.set_write_timeout(Some(self.timeout)).map_err(io_error)?;
        socket.set_nodelay(true).map_err(io_error)?;
        let name = ServerName::try_from(tls::SERVER_NAME).expect("a valid DNS name");
        let mut connection = rustls::ClientConnection::new(self.config.clone(), name)
            .map_err(|e| CallError::Handshake { address: address.clone(), detail: e.to_string() })?;
        while connection.is_handshaking() {
            connection
                .complete_io(&mut socket)
                .map_err(|e| CallError::Handshake { address: address.clone(), detail: e.to_string() })?;
        }
        let mut stream = rustls::StreamOwned::new(connection, socket);
        let authorization = bearer.map(|b| format!("Authorization: Bearer {b}\r\n")).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{authorization}Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.address,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .and_then(|()| stream.flush())
            .map_err(|e| self.io_or_handshake(e))?;
        let response = read_response(&mut stream, max_body).map_err(|e| self.io_or_handshake(e))?;
        if (200..300).contains(&response.status) {
            Ok(response)
        } else {
            Err(CallError::Status {
                address,
                status: response.status,
                message: String::from_utf8_lossy(&response.body[..response.body.len().min(500)]).into_owned(),
            })
        }
    }

    /// A TLS alert arriving after the client's half of the handshake (a refused client
    /// certificate, in TLS 1.3) surfaces on the first read: report it as the handshake failure.
    fn io_or_handshake(&self, error: io::Error) -> CallError {
        let address = self.address.clone();
        if error.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
            CallError::Handshake { address, detail: error.to_string() }
        } else {
            CallError::Io { address, detail: error.to_string() }
        }
    }
}

fn read_response(stream: &mut impl Read, max_body: u64) -> io::Result<Response> {
    let mut buf = Vec::new();
    let mut scratch = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the response head is too long"));
        }
        let n = stream.read(&mut scratch)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection without answering",
            ));
        }
        buf.extend_from_slice(&scratch[..n]);
    };
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("malformed response: {what}"));
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status: u16 =
        status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status code"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
    let length: u64 = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| bad("no Content-Length"))?;
    if length > max_body {
        return Err(bad("body too large"));
    }
    let mut body = buf.split_off(head_end + 4);
    if (body.len() as u64) > length {
        return Err(bad("more bytes than Content-Length"));
    }
    read_rest(stream, &mut body, length)?;
    Ok(Response { status, headers, body })
}

/// Reads until `body` is `length` bytes long, allocating as bytes arrive rather than trusting
/// the announced length up front.
fn read_rest(stream: &mut impl Read, body: &mut Vec<u8>, length: u64) -> io::Result<()> {
    let missing = length.saturating_sub(body.len() as u64);
    stream.take(missing).read_to_end(body)?;
    if (body.len() as u64) < length {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the body was cut short"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Taken-Ms: 42\r\n\r\nhello";

    #[test]
    fn a_response_is_read_whole() {
        let response = read_response(&mut &RESPONSE[..], MAX_RESPONSE_BODY).expect("reads");
        assert_eq!((response.status, response.body.as_slice()), (200, &b"hello"[..]));
        assert_eq!(response.header("x-taken-ms"), Some("42"));
    }

    #[test]
    fn every_truncated_or_corrupted_response_is_an_error_not_a_panic() {
        for cut in 0..RESPONSE.len() {
            assert!(read_response(&mut &RESPONSE[..cut], MAX_RESPONSE_BODY).is_err(), "cut at {cut}");
        }
        for at in 0..RESPONSE.len() {
            for byte in [0u8, b' ', b'9', 0xff, b'\r'] {
                let mut bytes = RESPONSE.to_vec();
                bytes[at] = byte;
                let _ = read_response(&mut bytes.as_slice(), MAX_RESPONSE_BODY);
            }
        }
        let huge = b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\n";
        assert!(
            read_response(&mut &huge[..], MAX_RESPONSE_BODY).is_err(),
            "an absurd length is refused before reading"
        );
        let lying = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nshort";
        assert!(read_response(&mut &lying[..], MAX_RESPONSE_BODY).is_err(), "a body shorter than announced");
        assert!(read_response(&mut &RESPONSE[..], 4).is_err(), "a body over the caller's limit is refused");
    }
}
