//! What the integration tests share: a site, a driver that plays the socket loop, and a client's
//! parser for the server's output.
#![allow(dead_code, reason = "each test binary uses a different part of this module")]

use http1::{Connection, StaticSite};

pub static SITE: StaticSite = StaticSite::new(&[
    ("/index.html", b"<!doctype html><h1>home</h1>\n"),
    ("/style.css", b"body { color: teal }\n"),
    ("/app.js", b"console.log('hi');\n"),
    ("/logo.png", b"\x89PNG\r\n\x1a\n not really"),
    ("/empty.txt", b""),
    ("/docs/index.html", b"<h1>docs</h1>\n"),
]);

/// Feeds `data` to a new connection in reads of the sizes in `reads` (cycled), taking output in
/// pieces of the sizes in `writes` (cycled; 0 takes nothing) between reads, as a socket loop
/// would. Bytes the connection does not take are offered again. Returns everything it sent.
pub fn drive(data: &[u8], reads: &[usize], writes: &[usize]) -> (Vec<u8>, Connection) {
    let mut connection = Connection::new(&SITE);
    let mut sent = Vec::new();
    let mut reads = reads.iter().copied().cycle();
    let mut writes = writes.iter().copied().cycle();
    let mut offset = 0;
    while offset < data.len() {
        let size = reads.next().unwrap_or(data.len()).max(1);
        let end = offset.saturating_add(size).min(data.len());
        let taken = connection.receive(&data[offset..end]);
        assert!(taken <= end - offset, "took {taken} of {} bytes", end - offset);
        offset += taken;
        let mut buf = vec![0; writes.next().unwrap_or(usize::MAX).min(1 << 16)];
        let written = connection.write_output(&mut buf);
        sent.extend_from_slice(&buf[..written]);
        if taken == 0 && written == 0 && offset < data.len() {
            assert!(connection.has_output(), "receive took nothing, and there is no output to wait for");
            sent.extend(drain(&mut connection));
        }
    }
    sent.extend(drain(&mut connection));
    (sent, connection)
}

/// Feeds each read whole to a new connection and takes all output after each.
pub fn exchange(reads: &[&[u8]]) -> (Vec<u8>, Connection) {
    let mut connection = Connection::new(&SITE);
    let mut sent = Vec::new();
    for read in reads {
        let mut offset = 0;
        loop {
            offset += connection.receive(&read[offset..]);
            sent.extend(drain(&mut connection));
            if offset == read.len() {
                break;
            }
        }
    }
    (sent, connection)
}

/// Takes all the output of `connection`.
pub fn drain(connection: &mut Connection) -> Vec<u8> {
    let mut sent = Vec::new();
    let mut buf = [0; 1000];
    while connection.has_output() {
        let n = connection.write_output(&mut buf);
        assert!(n > 0, "has_output but wrote nothing");
        sent.extend_from_slice(&buf[..n]);
    }
    sent
}

/// A response as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ClientResponse {
    /// The value of the only header field called `name`; `None` if there is none.
    ///
    /// # Panics
    /// If there are several.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.iter().filter(|(field, _)| field.eq_ignore_ascii_case(name));
        let value = values.next().map(|(_, value)| value.as_str());
        assert!(values.next().is_none(), "{name} appears twice in {self:?}");
        value
    }

    /// Whether the server said it closes the connection.
    pub fn closes(&self) -> bool {
        self.header("connection") == Some("close")
    }
}

/// Parses the responses in `output` strictly: status line, header fields, exactly one
/// `Content-Length` and a body of that length, except where `head_only` says the response answers
/// a HEAD and so has no body; it is given the response's index and the bytes after its head.
/// Checks the headers every response has.
pub fn parse_responses(
    mut output: &[u8],
    head_only: impl Fn(usize, &[u8]) -> bool,
) -> Result<Vec<ClientResponse>, String> {
    let mut responses = Vec::new();
    while !output.is_empty() {
        let index = responses.len();
        let end = output.windows(4).position(|window| window == b"\r\n\r\n").ok_or("a head without its end")?;
        let head = std::str::from_utf8(&output[..end]).map_err(|_| "a head that is not UTF-8")?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().ok_or("no status line")?;
        let (code, reason) = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.split_once(' '))
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        if code.len() != 3 || !code.bytes().all(|byte| byte.is_ascii_digit()) || reason.is_empty() {
            return Err(format!("bad status line {status_line:?}"));
        }
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line.split_once(": ").ok_or_else(|| format!("bad field line {line:?}"))?;
            if name.is_empty() || !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-') {
                return Err(format!("bad field name {name:?}"));
            }
            if value.bytes().any(|byte| byte.is_ascii_control()) {
                return Err(format!("bad field value {value:?}"));
            }
            headers.push((name.to_owned(), value.to_owned()));
        }
        let lengths: Vec<_> = headers.iter().filter(|(name, _)| name.eq_ignore_ascii_case("content-length")).collect();
        let [(_, length)] = lengths.as_slice() else {
            return Err(format!("{} Content-Length fields in {head:?}", lengths.len()));
        };
        let length: usize = length.parse().map_err(|_| format!("bad Content-Length {length:?}"))?;
        for required in ["server", "content-type"] {
            if headers.iter().filter(|(name, _)| name.eq_ignore_ascii_case(required)).count() != 1 {
                return Err(format!("not one {required} in {head:?}"));
            }
        }
        let rest = &output[end + 4..];
        let body_len = if head_only(index, rest) { 0 } else { length };
        if rest.len() < body_len {
            return Err(format!("a body of {} bytes, not {body_len}", rest.len()));
        }
        responses.push(ClientResponse {
            status: code.parse().map_err(|_| "bad code")?,
            reason: reason.to_owned(),
            headers,
            body: rest[..body_len].to_vec(),
        });
        output = &rest[body_len..];
    }
    Ok(responses)
}

/// Parses `output` as responses to requests none of which is HEAD.
pub fn responses(output: &[u8]) -> Vec<ClientResponse> {
    match parse_responses(output, |_, _| false) {
        Ok(responses) => responses,
        Err(error) => panic!("{error} in {:?}", String::from_utf8_lossy(output)),
    }
}
