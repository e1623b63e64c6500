//! A keep-alive HTTP/1.1 client for the benches. It understands exactly what Mast's appliances
//! send (every response carries Content-Length) and nothing more, so a bench measures the
//! appliance, not a client library.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};

/// How long a bench waits on any one read or write by default.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A keep-alive connection to an appliance.
pub(crate) struct Client {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// How long one whole request may take, not only each read: a server that answers a byte at
    /// a time must not hold a bench forever.
    timeout: Duration,
    /// Header lines sent with every request, each ending in CRLF.
    headers: String,
    /// Bytes received so far (heads and bodies): what the server put on the wire for us.
    pub(crate) received: u64,
    /// The last response's head, for benches that read its fields.
    pub(crate) last_head: String,
}

impl Client {
    pub(crate) fn connect(port: u16) -> Result<Client> {
        Client::connect_within(port, IO_TIMEOUT)
    }

    /// Connects, and gives up on any later read or write after `timeout`.
    pub(crate) fn connect_within(port: u16, timeout: Duration) -> Result<Client> {
        let stream = TcpStream::connect_timeout(&std::net::SocketAddr::from(([127, 0, 0, 1], port)), timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buffer: Vec::new(),
            timeout,
            headers: String::new(),
            received: 0,
            last_head: String::new(),
        })
    }

    /// Sends `name: value` with every request (e.g. a bearer token).
    pub(crate) fn with_header(mut self, name: &str, value: &str) -> Client {
        self.headers.push_str(&format!("{name}: {value}\r\n"));
        self
    }

    /// `GET path`: the status and the body.
    pub(crate) fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>)> {
        self.request("GET", path, &[])
    }

    /// `method path` with `body` (sent with Content-Length when not empty): the status and the body.
    pub(crate) fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        self.request_with(method, path, "", body)
    }

    /// [`Client::request`] with `extra` header lines (each ending in CRLF) for this request only.
    pub(crate) fn request_with(
        &mut self,
        method: &str,
        path: &str,
        extra: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        let deadline = Instant::now() + self.timeout;
        let headers = format!("{}{extra}", self.headers);
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: bench\r\n{headers}Content-Length: {}\r\n\r\n", body.len())
                .into_bytes();
        if body.is_empty() {
            request = format!("{method} {path} HTTP/1.1\r\nHost: bench\r\n{headers}\r\n").into_bytes();
        }
        request.extend_from_slice(body);
        self.stream.write_all(&request)?;
        let head_end = loop {
            if let Some(at) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            self.fill(deadline)?;
        };
        let head = std::str::from_utf8(&self.buffer[..head_end]).context("a non-ASCII response head")?;
        let status = head.get(9..12).and_then(|s| s.parse().ok()).context("a malformed status line")?;
        let length = head.split("\r\n").find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
        });
        // A 304 has no body, and so no Content-Length.
        let length = if status == 304 { 0 } else { length.context("a response without Content-Length")? };
        self.last_head = head.to_owned();
        while self.buffer.len() < head_end + length {
            self.fill(deadline)?;
        }
        let body = self.buffer[head_end..head_end + length].to_vec();
        self.buffer.drain(..head_end + length);
        self.received += (head_end + length) as u64;
        Ok((status, body))
    }

    fn fill(&mut self, deadline: Instant) -> Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(!left.is_zero(), "no complete answer within {:?}", self.timeout);
        self.stream.set_read_timeout(Some(left))?;
        let mut chunk = [0u8; 8192];
        let n = match self.stream.read(&mut chunk) {
            Ok(n) => n,
            // What a read timeout looks like on Unix.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                anyhow::bail!("no complete answer within {:?}", self.timeout)
            }
            Err(e) => return Err(e.into()),
        };
        ensure!(n > 0, "the server closed the connection");
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}
