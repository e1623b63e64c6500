//! The HTTP layer under the manager's API and the agents' API: a small thread pool over
//! `tiny_http`, token checks, JSON bodies, and errors that say what to do.
//!
//! Requests are handled on blocking threads: every handler ends in the store (SQLite, blocking)
//! or a launcher (process calls), so an async runtime would buy nothing here.

use std::{collections::HashMap, io::Read, sync::Arc, thread};

use rack_api::{AUTH_HEADER, AUTH_SCHEME, ApiError, ErrorBody};
use serde::{Serialize, de::DeserializeOwned};

/// The largest request body accepted: far above any appliance image.
const MAX_BODY: usize = 64 << 20;

/// One request, read in full.
#[derive(Debug)]
pub struct Req {
    pub method: tiny_http::Method,
    /// The path without the query, split on `/` with empty segments removed.
    pub segments: Vec<String>,
    pub query: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Req {
    /// The body as JSON of type `T`; `what` names it in the error.
    pub fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            HttpError::bad_request(
                format!("the request body is not a valid {what}: {e}"),
                "send a JSON object as documented in the rack-api crate (the CLI does this for you)",
            )
        })
    }

    pub fn query_u64(&self, key: &str) -> Result<Option<u64>, HttpError> {
        match self.query.get(key) {
            None => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| {
                HttpError::bad_request(
                    format!("query parameter {key}={text:?} is not a number"),
                    "pass a non-negative integer",
                )
            }),
        }
    }
}

/// A successful answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json<T: Serialize>(value: &T) -> Reply {
        Reply::json_status(200, value)
    }

    pub fn json_status<T: Serialize>(status: u16, value: &T) -> Reply {
        let body = serde_json::to_vec(value).expect("response bodies are plain data");
        Reply { status, content_type: "application/json", body }
    }

    pub fn bytes(body: Vec<u8>) -> Reply {
        Reply { status: 200, content_type: "application/octet-stream", body }
    }
}

/// A failed request: HTTP status plus the API's error body.
#[derive(Debug)]
pub struct HttpError {
    pub status: u16,
    pub error: ApiError,
}

impl HttpError {
    pub fn new(status: u16, code: &str, message: impl Into<String>, hint: impl Into<String>) -> HttpError {
        let hint = hint.into();
        HttpError {
            status,
            error: ApiError { code: code.into(), message: message.into(), hint: (!hint.is_empty()).then_some(hint) },
        }
    }

    pub fn bad_request(message: impl Into<String>, hint: impl Into<String>) -> HttpError {
        HttpError::new(400, "bad_request", message, hint)
    }

    pub fn not_found(message: impl Into<String>, hint: impl Into<String>) -> HttpError {
        HttpError::new(404, "not_found", message, hint)
    }

    pub fn conflict(message: impl Into<String>, hint: impl Into<String>) -> HttpError {
        HttpError::new(409, "conflict", message, hint)
    }

    pub fn internal(message: impl Into<String>) -> HttpError {
        HttpError::new(500, "internal", message, "see the daemon's output; the request may be retried")
    }
}

impl From<crate::store::StoreError> for HttpError {
    fn from(e: crate::store::StoreError) -> HttpError {
        match e {
            // Lost a race with another manager of an etcd rack: nothing was written.
            crate::store::StoreError::Conflict(message) => HttpError::conflict(message, "look again and retry"),
            e => HttpError::internal(e.to_string()),
        }
    }
}

pub type Handler = dyn Fn(&Req) -> Result<Reply, HttpError> + Send + Sync;

/// Compares without an early exit, so the time taken does not tell how much of a guess was right.
fn same_token(given: &str, expected: &str) -> bool {
    given.len() == expected.len() && given.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

fn split_url(url: &str) -> (Vec<String>, HashMap<String, String>) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let segments = path.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let query = query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    (segments, query)
}

fn respond(request: tiny_http::Request, status: u16, content_type: &str, body: Vec<u8>) {
    let header = tiny_http::Header::from_bytes("Content-Type", content_type).expect("a static, valid header");
    let response = tiny_http::Response::from_data(body).with_status_code(status).with_header(header);
    // The client may have gone away; there is nobody to tell.
    let _ = request.respond(response);
}

fn respond_error(request: tiny_http::Request, error: HttpError) {
    let body = serde_json::to_vec(&ErrorBody { error: error.error }).expect("plain data");
    respond(request, error.status, "application/json", body);
}

fn handle(mut request: tiny_http::Request, token: &str, handler: &Handler) {
    let authorized = request
        .headers()
        .iter()
        .find(|h| h.field.equiv(AUTH_HEADER))
        .and_then(|h| h.value.as_str().strip_prefix(AUTH_SCHEME))
        .is_some_and(|given| same_token(given.trim(), token));
    if !authorized {
        let error = HttpError::new(
            401,
            "unauthorized",
            "the request carries no valid API token",
            "pass the manager's token: the CLI reads <data-dir>/token on the manager's host, or give --token / RACK_TOKEN",
        );
        return respond_error(request, error);
    }
    let mut body = Vec::new();
    let read = request.as_reader().take(MAX_BODY as u64 + 1).read_to_end(&mut body);
    if let Err(e) = read {
        return respond_error(request, HttpError::bad_request(format!("the request body could not be read: {e}"), ""));
    }
    if body.len() > MAX_BODY {
        let error = HttpError::new(413, "too_large", format!("the request body is over {MAX_BODY} bytes"), "");
        return respond_error(request, error);
    }
    let (segments, query) = split_url(request.url());
    let req = Req { method: request.method().clone(), segments, query, body };
    match handler(&req) {
        Ok(reply) => respond(request, reply.status, reply.content_type, reply.body),
        Err(error) => respond_error(request, error),
    }
}

/// Serves `handler` on `server` with `threads` worker threads; returns when the server is closed.
pub fn serve(server: Arc<tiny_http::Server>, threads: usize, token: String, handler: Arc<Handler>) {
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (server, token, handler) = (server.clone(), token.clone(), handler.clone());
            thread::spawn(move || {
                while let Ok(request) = server.recv() {
                    handle(request, &token, &*handler);
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_segments_and_query() {
        let (segments, query) = split_url("/v1/instances//x/logs?offset=12&follow");
        assert_eq!(segments, ["v1", "instances", "x", "logs"]);
        assert_eq!(query.get("offset").map(String::as_str), Some("12"));
        assert_eq!(query.get("follow").map(String::as_str), Some(""));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abd", "abc"));
        assert!(!same_token("ab", "abc"));
    }
}
