//! A blocking client of the rack API: what the CLI uses to talk to the manager, and what the
//! manager and agents use to talk to each other. [`peer`]: the CLI talking to other racks as this
//! rack's peer, without the manager.

pub mod peer;

use std::time::Duration;

use rack_api::{AUTH_HEADER, AUTH_SCHEME, ErrorBody};
use serde::{Serialize, de::DeserializeOwned};

/// Why a call did not get the answer it wanted.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    NoManager(String),
    #[error(
        "cannot reach {url}: {detail}\n  hint: is `rack-manager serve` (or the agent) running there? --manager or RACK_MANAGER picks another"
    )]
    Unreachable { url: String, detail: String },
    #[error("{}{}", .body.error.message, .body.error.hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Api { status: u16, body: ErrorBody },
    #[error("{url} answered {status} with a body that is not what this version of the CLI expects: {detail}")]
    Decode { url: String, status: u16, detail: String },
}

#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the API at `base` (`http://127.0.0.1:7878`).
    pub fn new(base: &str, token: &str, timeout: Duration) -> Client {
        let agent =
            ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into();
        Client { base: base.trim_end_matches('/').to_owned(), token: token.to_owned(), agent }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}{path}", self.base, rack_api::PREFIX)
    }

    fn finish<T: DeserializeOwned>(
        &self,
        url: String,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let bytes = self.finish_bytes(url.clone(), result)?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode { url, status: 200, detail: e.to_string() })
    }

    fn finish_bytes(
        &self,
        url: String,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Vec<u8>, ClientError> {
        let mut response = result.map_err(|e| ClientError::Unreachable { url: url.clone(), detail: e.to_string() })?;
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_vec()
            .map_err(|e| ClientError::Unreachable { url: url.clone(), detail: e.to_string() })?;
        if (200..300).contains(&status) {
            return Ok(bytes);
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::Api { status, body }),
            Err(e) => Err(ClientError::Decode {
                url,
                status,
                detail: format!("{e}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(200)])),
            }),
        }
    }

    fn auth(&self) -> String {
        format!("{AUTH_SCHEME}{}", self.token)
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path);
        let result = self.agent.get(&url).header(AUTH_HEADER, &self.auth()).call();
        self.finish(url, result)
    }

    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let url = self.url(path);
        let result = self.agent.get(&url).header(AUTH_HEADER, &self.auth()).call();
        self.finish_bytes(url, result)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).expect("request bodies are plain data");
        self.post_raw(path, "application/json", &bytes)
    }

    pub fn post_raw<T: DeserializeOwned>(&self, path: &str, content_type: &str, body: &[u8]) -> Result<T, ClientError> {
        let url = self.url(path);
        let result =
            self.agent.post(&url).header(AUTH_HEADER, &self.auth()).header("Content-Type", content_type).send(body);
        self.finish(url, result)
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path);
        let result = self.agent.delete(&url).header(AUTH_HEADER, &self.auth()).call();
        self.finish(url, result)
    }
}
