//! Property tests: the connection against arbitrary bytes, and against valid pipelined requests,
//! each split into reads at arbitrary points and with output taken in arbitrary amounts.

mod common;

use common::{ClientResponse, drain, drive, parse_responses};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

/// A valid request, and what the server is expected to make of it.
#[derive(Debug, Clone)]
struct Request {
    method: &'static str,
    path: &'static str,
    version: &'static str,
    connection: Option<&'static str>,
    fields: Vec<(String, String)>,
}

impl Request {
    fn bytes(&self) -> Vec<u8> {
        let mut text = format!("{} {} {}\r\nHost: mast.example\r\n", self.method, self.path, self.version);
        if let Some(options) = self.connection {
            text.push_str(&format!("Connection: {options}\r\n"));
        }
        for (name, value) in &self.fields {
            text.push_str(&format!("X-{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        text.into_bytes()
    }

    fn keep_alive(&self) -> bool {
        let options = self.connection.unwrap_or("").to_ascii_lowercase();
        let options: Vec<_> = options.split(',').map(str::trim).collect();
        !options.contains(&"close") && (self.version == "HTTP/1.1" || options.contains(&"keep-alive"))
    }

    /// The status and body of the expected response.
    fn expected(&self) -> (u16, &'static [u8]) {
        if !matches!(self.method, "GET" | "HEAD") {
            return (405, b"405 Method Not Allowed\n");
        }
        let path = self.path.split('?').next().unwrap_or_default();
        match path {
            "/" | "/index.html" => (200, b"<!doctype html><h1>home</h1>\n"),
            "/style.css" => (200, b"body { color: teal }\n"),
            "/docs/" => (200, b"<h1>docs</h1>\n"),
            "/empty.txt" => (200, b""),
            "/healthz" => (200, b"ok\n"),
            _ => (404, b"404 Not Found\n"),
        }
    }
}

fn request() -> impl Strategy<Value = Request> {
    let method = select(&["GET", "GET", "GET", "HEAD", "HEAD", "POST", "DELETE", "OPTIONS"][..]);
    let path = select(&["/", "/index.html", "/style.css", "/docs/", "/empty.txt", "/healthz", "/?q=1", "/missing"][..]);
    let version = select(&["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"][..]);
    let connection = prop_oneof![
        12 => Just(None),
        1 => Just(Some("close")),
        3 => Just(Some("keep-alive")),
        1 => Just(Some("Upgrade, Keep-Alive")),
    ];
    let fields = vec(("[A-Za-z0-9-]{1,12}", "[ -~]{0,24}"), 0..4);
    (method, path, version, connection, fields).prop_map(|(method, path, version, connection, fields)| Request {
        method,
        path,
        version,
        connection,
        fields,
    })
}

/// Fragments of HTTP that lead arbitrary input deep into the parser's states.
const FRAGMENTS: &[&[u8]] = &[
    b"GET",
    b"HEAD",
    b"POST",
    b"BREW",
    b" ",
    b"/",
    b"/index.html",
    b"/healthz",
    b"?q=1",
    b"%2",
    b"%41",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"\r\n",
    b"\r",
    b"\n",
    b"\r\n\r\n",
    b":",
    b"Host: x",
    b"Connection: close",
    b"Connection: keep-alive",
    b"Content-Length: 5",
    b"Content-Length: 0",
    b"Transfer-Encoding: chunked",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /style.css HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"\xff",
    b"\xc3\xa9",
    b"\t",
    b"\0",
];

/// Arbitrary input: random bytes, HTTP fragments, and long runs that reach the size limits.
fn arbitrary_pieces() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => vec(any::<u8>(), 0..16),
        8 => select(FRAGMENTS).prop_map(<[u8]>::to_vec),
        1 => (1..3000_usize, select(&[b'a', b' ', b'/', b'\r', b'\n', 0xff][..])).prop_map(|(len, byte)| vec![byte; len]),
    ];
    vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

/// Valid pipelined requests, the first perhaps with a field large enough to reach the size
/// limit, then a few bytes inserted, replaced or deleted: input that gets past the request line
/// and fails (or not) deep in a head, or between requests.
fn mutated_requests() -> impl Strategy<Value = Vec<u8>> {
    let padding = prop_oneof![3 => Just(0_usize), 1 => 7000..9000_usize];
    let mutation = (any::<prop::sample::Index>(), any::<u8>(), 0..3_u8);
    (vec(request(), 1..6), padding, vec(mutation, 0..4)).prop_map(|(mut requests, padding, mutations)| {
        if padding > 0 {
            requests[0].fields.push(("Pad".to_owned(), "a".repeat(padding)));
        }
        let mut data: Vec<u8> = requests.iter().flat_map(Request::bytes).collect();
        for (index, byte, kind) in mutations {
            let at = index.index(data.len());
            match kind {
                0 => data.insert(at, byte),
                1 => data[at] = byte,
                _ => {
                    data.remove(at);
                }
            }
        }
        data
    })
}

fn arbitrary_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![arbitrary_pieces(), mutated_requests()]
}

/// Sizes of reads: mostly small, so that heads are split everywhere.
fn read_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(prop_oneof![3 => 1..16_usize, 1 => 1..2000_usize], 1..20)
}

/// How much output to take after each read; 0 takes none, so that output piles up.
fn write_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(prop_oneof![1 => Just(0_usize), 3 => 1..300_usize], 1..10)
}

/// Feeds `data` in one read, taking all output, as the reference for splitting it.
fn whole(data: &[u8]) -> (Vec<u8>, http1::Connection) {
    drive(data, &[data.len()], &[usize::MAX])
}

/// Checks what any output must be: well-formed responses, of which only the last may close the
/// connection. Whether a response answers a HEAD is told by what follows its head: no body of
/// the test site, nor any error body, starts with a status line.
fn check_well_formed(output: &[u8], closing: bool) -> Result<Vec<ClientResponse>, TestCaseError> {
    let responses = parse_responses(output, |_, rest| rest.is_empty() || rest.starts_with(b"HTTP/1.1 "))
        .map_err(|error| TestCaseError::fail(format!("{error} in {:?}", String::from_utf8_lossy(output))))?;
    if let Some((last, before)) = responses.split_last() {
        prop_assert!(before.iter().all(|response| !response.closes()), "a close before the last: {responses:?}");
        if last.closes() {
            prop_assert!(closing, "Connection: close, but the connection stays open");
        }
    }
    Ok(responses)
}

proptest! {
    // Cheap cases (about a millisecond each), so more of them than the default 256.
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn arbitrary_input_never_panics_and_splitting_changes_nothing(
        data in arbitrary_input(),
        reads in read_sizes(),
        writes in write_sizes(),
    ) {
        let (expected, reference) = whole(&data);
        let (sent, mut connection) = drive(&data, &reads, &writes);
        prop_assert_eq!(&sent, &expected);
        prop_assert_eq!(connection.is_closing(), reference.is_closing());
        check_well_formed(&sent, connection.is_closing())?;

        // Whatever came before, the end of input closes the connection once the output is taken.
        connection.end_of_input();
        let rest = drain(&mut connection);
        prop_assert!(connection.should_close());
        check_well_formed(&[sent, rest].concat(), true)?;
    }

    #[test]
    fn a_timeout_at_any_point_leaves_well_formed_output(
        data in arbitrary_input(),
        reads in read_sizes(),
    ) {
        let (sent, mut connection) = drive(&data, &reads, &[7]);
        connection.timeout();
        let rest = drain(&mut connection);
        prop_assert!(connection.should_close());
        check_well_formed(&[sent, rest].concat(), true)?;
    }
}

proptest! {
    #[test]
    fn pipelined_requests_split_anywhere_get_the_same_correct_responses(
        requests in vec(request(), 1..12),
        reads in read_sizes(),
        writes in write_sizes(),
    ) {
        let data: Vec<u8> = requests.iter().flat_map(Request::bytes).collect();
        let (expected, _) = whole(&data);
        let (sent, connection) = drive(&data, &reads, &writes);
        prop_assert_eq!(&sent, &expected);

        // Requests are answered up to the first that does not keep the connection alive.
        let answered = requests.iter().position(|request| !request.keep_alive()).map_or(requests.len(), |i| i + 1);
        let head_only = |index: usize, _: &[u8]| requests.get(index).is_some_and(|request| request.method == "HEAD");
        let responses = parse_responses(&sent, head_only)
            .map_err(|error| TestCaseError::fail(format!("{error} in {:?}", String::from_utf8_lossy(&sent))))?;
        prop_assert_eq!(responses.len(), answered);
        prop_assert_eq!(connection.should_close(), answered < requests.len() || !requests[answered - 1].keep_alive());

        for (request, response) in requests.iter().zip(&responses) {
            let (status, body) = request.expected();
            prop_assert_eq!(response.status, status, "{:?}", request);
            let content_length = body.len().to_string();
            prop_assert_eq!(response.header("content-length"), Some(content_length.as_str()));
            let expected_body: &[u8] = if request.method == "HEAD" { b"" } else { body };
            prop_assert_eq!(response.body.as_slice(), expected_body);
            prop_assert_eq!(response.header("allow").is_some(), status == 405);
            let connection_header = if !request.keep_alive() {
                Some("close")
            } else if request.version == "HTTP/1.0" {
                Some("keep-alive")
            } else {
                None
            };
            prop_assert_eq!(response.header("connection"), connection_header, "{:?}", request);
        }
    }
}

/// Feeds `data` to a reader in reads of the given sizes, consuming each complete request, and
/// returns the (head length, content) of each and how it ended.
fn read_requests(data: &[u8], reads: &[usize]) -> (Vec<(String, Vec<u8>)>, Option<http1::Status>) {
    let mut reader = http1::RequestReader::new(64);
    let mut requests = Vec::new();
    let mut offset = 0;
    let mut sizes = reads.iter().copied().cycle();
    loop {
        match reader.next() {
            http1::Next::Request(request) => {
                requests.push((request.head.target.to_owned(), request.content.to_vec()));
                reader.consume();
                continue;
            }
            http1::Next::Refused(status) => return (requests, Some(status)),
            http1::Next::Incomplete => {}
        }
        if offset >= data.len() {
            return (requests, None);
        }
        let size = sizes.next().unwrap_or(1).max(1);
        let end = (offset + size).min(data.len());
        let taken = reader.receive(&data[offset..end]);
        assert!(taken <= end - offset);
        offset += taken;
        if taken == 0 && matches!(reader.next(), http1::Next::Incomplete) {
            panic!("the reader took nothing and has no request");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any bytes, split anywhere: the reader never panics, and it frames the same requests.
    #[test]
    fn the_request_reader_frames_any_input_the_same_however_split(
        data in arbitrary_input(),
        reads in read_sizes(),
    ) {
        let whole = read_requests(&data, &[data.len().max(1)]);
        let split = read_requests(&data, &reads);
        prop_assert_eq!(whole, split);
    }

    /// Valid uploads split anywhere come out whole, in order.
    #[test]
    fn uploads_come_out_whole(contents in vec(vec(any::<u8>(), 0..64), 1..6), reads in read_sizes()) {
        let mut data = Vec::new();
        for (index, content) in contents.iter().enumerate() {
            data.extend_from_slice(
                format!("POST /append?key=k{index} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", content.len())
                    .as_bytes(),
            );
            data.extend_from_slice(content);
        }
        let (requests, refused) = read_requests(&data, &reads);
        prop_assert_eq!(refused, None);
        let got: Vec<Vec<u8>> = requests.into_iter().map(|(_, content)| content).collect();
        prop_assert_eq!(got, contents);
    }
}

/// A response an origin could send: a valid one, cut and mutated at random.
fn origin_responses() -> impl Strategy<Value = Vec<u8>> {
    let valid = select(vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
        b"HTTP/1.0 404 Not Found\r\n\r\nnope".to_vec(),
    ]);
    (valid, vec((any::<usize>(), any::<u8>()), 0..4), any::<usize>()).prop_map(|(mut bytes, flips, cut)| {
        for (at, byte) in flips {
            let len = bytes.len();
            bytes[at % len] = byte;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        bytes
    })
}

proptest! {
    /// However an origin's response is split, it reads the same, and a mutated one never panics.
    #[test]
    fn responses_read_the_same_however_split(bytes in origin_responses(), sizes in read_sizes()) {
        let read = |sizes: &[usize]| {
            let mut reader = http1::ResponseReader::new(64, false);
            let (mut offset, mut i) = (0, 0);
            while offset < bytes.len() {
                let size = sizes.get(i % sizes.len().max(1)).copied().unwrap_or(1).max(1);
                let taken = reader.receive(&bytes[offset..bytes.len().min(offset + size)]);
                if taken == 0 {
                    break;
                }
                offset += taken;
                i += 1;
            }
            reader.end_of_input();
            reader.finish()
        };
        prop_assert_eq!(read(&sizes), read(&[usize::MAX]));
    }
}
