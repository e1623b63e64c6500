//! The HTTP layer under the manager's API, the agents' API and the peer listener, made for
//! hostile networks: hyper over tokio, every connection an async task (no thread per idle
//! socket), and handlers that stay plain blocking functions run on a bounded blocking pool.
//!
//! What every listener guarantees (the numbers are each listener's [`Limits`]):
//! - a connection must deliver a complete request head within [`HEADER_DEADLINE`](serve::HEADER_DEADLINE) of opening or
//!   of its previous response (this is also the keep-alive idle deadline), its body within a
//!   deadline that grows with the body's allowed size, and must take each response byte within
//!   [`WRITE_DEADLINE`](serve::WRITE_DEADLINE); a TLS handshake must end within [`HANDSHAKE_DEADLINE`](serve::HANDSHAKE_DEADLINE);
//! - a request without a valid credential is answered 401 before a byte of its body is read,
//!   and its connection closed; a `Content-Length` over the route's limit is answered 413 the
//!   same way; a chunked body is cut off at the limit while it streams;
//! - connections are capped overall and per source address, and so are connections that have
//!   not proved anything yet (no authenticated request in progress, TLS handshake not done): when
//!   a cap is reached the oldest such connection is closed to make room, so a flood of idle or
//!   trickling sockets cannot lock out a client that does send a valid request;
//! - at most [`Limits::handlers`] handlers run at once; further requests wait without a thread.
//!
//! Not supported: HTTP/2, TLS on the manager's API port (agents serve theirs over TLS, [`serve_tls`]), `Expect: 100-continue` beyond
//! what hyper does by itself (it answers 100 only when the body is read, after the checks).

mod conns;
mod serve;

use std::{collections::HashMap, fmt};

use rack_api::{ApiError, ErrorBody};
use serde::{Serialize, de::DeserializeOwned};
pub use serve::{Limits, PublicRoute, SESSION_COOKIE, SESSION_PREFIX, TlsGate, serve, serve_tls, spawn_tls};

/// The methods the APIs route on; anything else is `NonStandard` and ends in a 404 or 405.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Trace,
    Connect,
    NonStandard(String),
}

impl From<&hyper::Method> for Method {
    fn from(method: &hyper::Method) -> Method {
        match *method {
            hyper::Method::GET => Method::Get,
            hyper::Method::HEAD => Method::Head,
            hyper::Method::POST => Method::Post,
            hyper::Method::PUT => Method::Put,
            hyper::Method::DELETE => Method::Delete,
            hyper::Method::OPTIONS => Method::Options,
            hyper::Method::PATCH => Method::Patch,
            hyper::Method::TRACE => Method::Trace,
            hyper::Method::CONNECT => Method::Connect,
            ref other => Method::NonStandard(other.as_str().to_owned()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Trace => "TRACE",
            Method::Connect => "CONNECT",
            Method::NonStandard(name) => name,
        })
    }
}

/// One request, read in full.
#[derive(Debug)]
pub struct Req {
    pub method: Method,
    /// The path without the query, split on `/` with empty segments removed.
    pub segments: Vec<String>,
    pub query: HashMap<String, String>,
    pub body: Vec<u8>,
    /// On the peer listener: the configured peer whose certificate the TLS handshake proved.
    pub peer: Option<String>,
    /// On a listener with bearer credentials: who the request's token proved it is
    /// ([`crate::credentials`]); `Anonymous` on the peer listener.
    pub caller: crate::credentials::Caller,
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
    /// Further response headers (name, value).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json<T: Serialize>(value: &T) -> Reply {
        Reply::json_status(200, value)
    }

    pub fn json_status<T: Serialize>(status: u16, value: &T) -> Reply {
        let body = serde_json::to_vec(value).expect("response bodies are plain data");
        Reply { status, content_type: "application/json", headers: Vec::new(), body }
    }

    pub fn bytes(body: Vec<u8>) -> Reply {
        Reply { status: 200, content_type: "application/octet-stream", headers: Vec::new(), body }
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

/// Turns a request's bearer token (if it has one) into who sent it, or the refusal to answer
/// before its body is read ([`crate::credentials::authenticate`] on the manager).
pub type Authenticator = dyn Fn(Option<&str>) -> Result<crate::credentials::Caller, HttpError> + Send + Sync;

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

fn error_body(error: &HttpError) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody { error: error.error.clone() }).expect("plain data")
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
        use crate::credentials::same_secret;
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abd", "abc"));
        assert!(!same_secret("ab", "abc"));
    }
}
