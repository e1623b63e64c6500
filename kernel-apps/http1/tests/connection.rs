//! The connection end to end, one test per status path and connection rule: requests in, the
//! responses a client would read out.

mod common;

use common::{ClientResponse, drain, exchange, parse_responses, responses};
use http1::{Connection, MAX_HEAD_LEN, MAX_HEADERS, MAX_QUEUED_RESPONSES};

/// The responses to `request` sent in one read, and the connection afterwards.
fn answer(request: &str) -> (Vec<ClientResponse>, Connection) {
    let (sent, connection) = exchange(&[request.as_bytes()]);
    (responses(&sent), connection)
}

/// The only response to `request`.
fn answer_one(request: &str) -> (ClientResponse, Connection) {
    let (mut responses, connection) = answer(request);
    assert_eq!(responses.len(), 1, "{responses:?}");
    (responses.remove(0), connection)
}

/// Checks that `request` gets one error response with `status`, after which the connection
/// closes and ignores the request that follows in the same read.
fn assert_refused(request: &str, status: u16) {
    let (responses, connection) = answer(&format!("{request}GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_eq!(responses.len(), 1, "{request:?}: {responses:?}");
    let response = &responses[0];
    assert_eq!(response.status, status, "{request:?}: {response:?}");
    assert!(response.closes(), "{request:?}: {response:?}");
    assert_eq!(response.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(response.body.starts_with(format!("{status} ").as_bytes()), "{response:?}");
    assert!(connection.should_close(), "{request:?}");
}

#[test]
fn get_serves_a_file() {
    let (response, connection) = answer_one("GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((response.status, response.reason.as_str()), (200, "OK"));
    assert_eq!(response.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(response.header("content-length"), Some("21"));
    assert_eq!(response.header("server"), Some("mast-httpd"));
    assert_eq!(response.header("connection"), None);
    assert_eq!(response.body, b"body { color: teal }\n");
    assert!(connection.is_idle());
    assert!(!connection.is_closing());
}

#[test]
fn head_has_the_headers_of_get_and_no_body() {
    let request = "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\nHEAD /index.html HTTP/1.1\r\nHost: x\r\n\r\n";
    let (sent, connection) = exchange(&[request.as_bytes()]);
    let responses = parse_responses(&sent, |index, _| index == 1).expect("well-formed responses");
    assert_eq!(responses.len(), 2);
    assert_eq!(responses[0].headers, responses[1].headers);
    assert_eq!(responses[0].body, b"<!doctype html><h1>home</h1>\n");
    assert_eq!(responses[1].body, b"");
    assert_eq!(responses[1].header("content-length"), Some("29"));
    // Nothing follows the HEAD response's head: the output ends there.
    assert!(sent.ends_with(b"Content-Length: 29\r\n\r\n"));
    assert!(connection.is_idle());
}

#[test]
fn root_and_directories_serve_index_html() {
    let (response, _) = answer_one("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(response.body, b"<!doctype html><h1>home</h1>\n");
    let (response, _) = answer_one("GET /docs/ HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(response.body, b"<h1>docs</h1>\n");
    assert_eq!(response.header("content-type"), Some("text/html; charset=utf-8"));
}

#[test]
fn query_strings_are_ignored_for_lookup() {
    let (response, _) = answer_one("GET /?utm=1&x=%20 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((response.status, response.body.as_slice()), (200, &b"<!doctype html><h1>home</h1>\n"[..]));
    let (response, _) = answer_one("GET /app.js?v=3 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(response.header("content-type"), Some("text/javascript; charset=utf-8"));
}

#[test]
fn content_types_follow_extensions() {
    for (path, content_type) in [
        ("/index.html", "text/html; charset=utf-8"),
        ("/style.css", "text/css; charset=utf-8"),
        ("/app.js", "text/javascript; charset=utf-8"),
        ("/logo.png", "image/png"),
        ("/empty.txt", "text/plain; charset=utf-8"),
    ] {
        let (response, _) = answer_one(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!(response.header("content-type"), Some(content_type), "{path}");
    }
}

#[test]
fn an_empty_file_has_content_length_zero() {
    let (response, _) = answer_one("GET /empty.txt HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((response.status, response.header("content-length")), (200, Some("0")));
}

#[test]
fn healthz_is_ok() {
    let (response, connection) = answer_one("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((response.status, response.body.as_slice()), (200, &b"ok\n"[..]));
    assert_eq!(response.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(connection.is_idle());
}

#[test]
fn unknown_paths_are_404_and_keep_the_connection() {
    let (responses, connection) =
        answer("GET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(responses.iter().map(|response| response.status).collect::<Vec<_>>(), [404, 404]);
    assert_eq!(responses[0].body, b"404 Not Found\n");
    assert!(!responses[0].closes());
    assert!(connection.is_idle());
}

#[test]
fn other_methods_are_405_with_allow() {
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"] {
        let (response, connection) = answer_one(&format!("{method} / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert_eq!((response.status, response.reason.as_str()), (405, "Method Not Allowed"), "{method}");
        assert_eq!(response.header("allow"), Some("GET, HEAD"), "{method}");
        assert!(!response.closes(), "{method}: no content, so the connection stays in step");
        assert!(connection.is_idle());
    }
}

#[test]
fn a_405_for_a_request_with_content_closes_the_connection() {
    // The body is never read, so "GET /" in it must not be taken for a request.
    let (responses, connection) =
        answer("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 27\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].status, 405);
    assert!(responses[0].closes());
    assert!(connection.should_close());
}

#[test]
fn unknown_methods_are_501() {
    assert_refused("BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", 501);
    assert_refused("get / HTTP/1.1\r\nHost: x\r\n\r\n", 501);
}

#[test]
fn other_versions_are_505() {
    assert_refused("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505);
    assert_refused("GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505);
    assert_refused("GET / HTTP/0.9\r\n\r\n", 505);
    // The HTTP/2 connection preface is refused as soon as its first line arrives.
    let (sent, connection) = exchange(&[b"PRI * HTTP/2.0\r\n"]);
    assert_eq!(responses(&sent)[0].status, 505);
    assert!(connection.should_close());
}

#[test]
fn malformed_request_lines_are_400() {
    for request in [
        "GET\r\n\r\n",
        "GET /\r\n\r\n",
        "GET / HTTP/1.1 extra\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        " GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n",
        "G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET / HTTP/1.x\r\nHost: x\r\n\r\n",
        "GET / http/1.1\r\nHost: x\r\n\r\n",
        "GET /é HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        assert_refused(request, 400);
    }
}

#[test]
fn malformed_header_fields_are_400() {
    for request in [
        "GET / HTTP/1.1\r\nHost x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        assert_refused(request, 400);
    }
    let (sent, _) = exchange(&[b"GET / HTTP/1.1\r\nHost: x\r\nX: \xc3\x28\r\n\r\n"]);
    assert_eq!(responses(&sent)[0].status, 400);
}

#[test]
fn bad_content_lengths_are_400() {
    for value in ["", "abc", "-1", "1.0", "99999999999999999999999", "3, 3"] {
        assert_refused(&format!("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: {value}\r\n\r\n"), 400);
    }
    assert_refused("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", 400);
    assert_refused("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
}

#[test]
fn bare_line_feeds_and_carriage_returns_are_400() {
    assert_refused("GET / HTTP/1.1\nHost: x\n\n", 400);
    assert_refused("GET / HTTP/1.1\r\nHost: x\n\r\n", 400);
    assert_refused("GET / HTTP/1.1\r\nHost: x\r\r\n\r\n", 400);
}

#[test]
fn request_content_is_refused() {
    assert_refused("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 413);
    assert_refused("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501);
    // An empty body is no body.
    let (response, connection) = answer_one("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(response.status, 200);
    assert!(connection.is_idle());
}

#[test]
fn oversized_heads_are_431() {
    let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_HEAD_LEN));
    assert_refused(&big, 431);

    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..MAX_HEADERS {
        many.push_str(&format!("X-{i}: y\r\n"));
    }
    assert_refused(&format!("{many}\r\n"), 431);
}

#[test]
fn a_head_that_grows_slowly_is_431_as_soon_as_it_is_too_large() {
    let mut connection = Connection::new(&common::SITE);
    assert_eq!(connection.receive(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "), 33);
    let mut fed = 33;
    // Ten bytes at a time, never ending the field: the answer comes at the limit, not at the end.
    while !connection.has_output() {
        assert!(connection.has_partial_request());
        assert_eq!(connection.receive(b"aaaaaaaaaa"), 10);
        fed += 10;
        assert!(fed <= MAX_HEAD_LEN + 10, "no answer after {fed} bytes");
    }
    assert!(fed >= MAX_HEAD_LEN);
    let sent = drain(&mut connection);
    let response = &responses(&sent)[0];
    assert_eq!((response.status, response.reason.as_str()), (431, "Request Header Fields Too Large"));
    assert!(response.closes());
    assert!(connection.should_close());
    // The rest of the field is discarded.
    assert_eq!(connection.receive(b"aaaa\r\n\r\n"), 8);
    assert!(!connection.has_output());
}

#[test]
fn an_endless_request_line_is_414() {
    let mut connection = Connection::new(&common::SITE);
    let read = b"GET /";
    assert_eq!(connection.receive(read), read.len());
    let chunk = [b'a'; 1000];
    while !connection.has_output() {
        assert_eq!(connection.receive(&chunk), chunk.len());
    }
    let sent = drain(&mut connection);
    assert_eq!(responses(&sent)[0].status, 414);
    assert!(connection.should_close());
}

#[test]
fn http11_keeps_alive_unless_asked_to_close() {
    let (response, connection) = answer_one("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(response.header("connection"), None);
    assert!(connection.is_idle());

    let (response, connection) = answer_one("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(response.closes());
    assert!(connection.should_close());

    // Requests after the one that asked to close are not answered.
    let (responses, connection) =
        answer("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(responses.len(), 1);
    assert!(connection.should_close());
}

#[test]
fn http10_closes_unless_asked_to_keep_alive() {
    let (response, connection) = answer_one("GET / HTTP/1.0\r\n\r\n");
    assert_eq!(response.status, 200);
    assert!(response.closes());
    assert!(connection.should_close());

    let (responses, connection) = answer(
        "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /healthz HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
    );
    assert_eq!(responses.len(), 2);
    for response in &responses {
        assert_eq!(response.header("connection"), Some("keep-alive"));
    }
    assert!(connection.is_idle());

    let (response, connection) = answer_one("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n");
    assert!(response.closes());
    assert!(connection.should_close());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let request = "GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n\
                   GET /missing HTTP/1.1\r\nHost: x\r\n\r\n\
                   DELETE / HTTP/1.1\r\nHost: x\r\n\r\n\
                   GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
                   GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (responses, connection) = answer(request);
    let statuses: Vec<_> = responses.iter().map(|response| response.status).collect();
    assert_eq!(statuses, [200, 404, 405, 200, 200]);
    assert_eq!(responses[0].body, b"body { color: teal }\n");
    assert_eq!(responses[3].body, b"ok\n");
    assert_eq!(responses[4].body, b"<!doctype html><h1>home</h1>\n");
    assert_eq!(responses.iter().filter(|response| response.closes()).count(), 1);
    assert!(connection.should_close());
}

#[test]
fn a_request_split_into_single_bytes_is_answered_once_complete() {
    let request = b"\r\nGET /app.js HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut connection = Connection::new(&common::SITE);
    assert!(connection.is_idle());
    for (i, byte) in request.iter().enumerate() {
        assert!(!connection.has_output(), "answered early, at byte {i}");
        assert_eq!(connection.receive(std::slice::from_ref(byte)), 1);
        assert!(!connection.is_idle());
    }
    let sent = drain(&mut connection);
    assert_eq!(responses(&sent)[0].body, b"console.log('hi');\n");
    assert!(connection.is_idle());
    assert!(!connection.has_partial_request());
}

#[test]
fn a_client_that_does_not_read_is_pushed_back() {
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let many = request.repeat(MAX_QUEUED_RESPONSES * 40);
    let mut connection = Connection::new(&common::SITE);
    let taken = connection.receive(&many);
    assert!(taken < many.len());
    // Without taking output, nothing more is taken.
    assert_eq!(connection.receive(&many[taken..]), 0);
    let (sent, _) = exchange(&[&many]);
    assert_eq!(responses(&sent).len(), MAX_QUEUED_RESPONSES * 40);
}

#[test]
fn end_of_input_answers_what_arrived_and_drops_a_partial_request() {
    let mut connection = Connection::new(&common::SITE);
    let read = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /style.css HTTP/1.1\r\nHo";
    assert_eq!(connection.receive(read), read.len());
    connection.end_of_input();
    let sent = drain(&mut connection);
    assert_eq!(responses(&sent).len(), 1);
    assert!(connection.should_close());

    let mut connection = Connection::new(&common::SITE);
    connection.end_of_input();
    assert!(connection.should_close());
    assert!(!connection.has_output());
}

#[test]
fn end_of_input_waits_for_pushed_back_requests() {
    let many = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(MAX_QUEUED_RESPONSES * 2);
    let mut connection = Connection::new(&common::SITE);
    assert_eq!(connection.receive(&many), many.len(), "all of it fits in the input buffer");
    connection.end_of_input();
    assert!(connection.is_closing() || connection.has_output());
    let sent = drain(&mut connection);
    assert_eq!(responses(&sent).len(), MAX_QUEUED_RESPONSES * 2);
    assert!(connection.should_close());
}

#[test]
fn a_timeout_answers_a_partial_request_with_408() {
    let mut connection = Connection::new(&common::SITE);
    let read = b"GET / HTTP/1.1\r\nHost: x\r\n";
    assert_eq!(connection.receive(read), read.len());
    assert!(connection.has_partial_request());
    assert!(!connection.is_idle());
    connection.timeout();
    assert!(connection.is_closing());
    assert!(!connection.has_partial_request());
    let sent = drain(&mut connection);
    let response = &responses(&sent)[0];
    assert_eq!((response.status, response.reason.as_str()), (408, "Request Timeout"));
    assert!(response.closes());
    assert!(connection.should_close());
    // A second timeout changes nothing.
    connection.timeout();
    assert!(!connection.has_output());
}

#[test]
fn a_timeout_closes_an_idle_connection_silently() {
    let (_, mut connection) = exchange(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]);
    assert!(connection.is_idle());
    connection.timeout();
    assert!(!connection.has_output());
    assert!(connection.should_close());
    assert!(!connection.is_idle());
}

#[test]
fn empty_lines_before_a_request_are_skipped() {
    let (response, _) = answer_one("\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(response.status, 200);
}

#[test]
fn input_after_closing_is_taken_and_discarded() {
    let (_, mut connection) = exchange(&[b"GET / HTTP/1.0\r\n\r\n"]);
    assert!(connection.should_close());
    assert_eq!(connection.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 27);
    assert!(!connection.has_output());
}

#[test]
fn pending_output_and_consume_output_send_without_copying() {
    let mut connection = Connection::new(&common::SITE);
    let read = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(connection.receive(read), read.len());
    let mut sent = Vec::new();
    while connection.has_output() {
        let pending = connection.pending_output();
        // Like a socket with little room: send three bytes at a time.
        let n = pending.len().min(3);
        sent.extend_from_slice(&pending[..n]);
        connection.consume_output(n);
    }
    assert_eq!(responses(&sent)[0].body, b"ok\n");
    assert!(connection.pending_output().is_empty());
}
