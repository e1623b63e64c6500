//! Racks that peer with each other, for the peering and failover tests: each a real
//! `rack-manager serve` with its own data directory, API port and peer port on 127.0.0.1.
#![allow(dead_code)] // Each test file uses its own subset.

use std::{
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::common::Rack;

/// A port nothing listens on now: the peer port stays the same across restarts of a rack, so
/// its peers' configuration stays right.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("binds").local_addr().expect("address").port()
}

/// Starts rack `name` with a peer listener, plus `extra` serve arguments.
pub fn start(name: &str, extra: &[&str]) -> Rack {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--rack-name", name, "--peer-listen", &listen];
    args.extend_from_slice(extra);
    Rack::start(&args)
}

/// (name, peer URL, fingerprint) from `rack-manager identity`.
pub fn identity(rack: &Rack) -> (String, String, String) {
    let view: Value = serde_json::from_str(&rack.ok(&["identity", "-o", "json"])).expect("identity is JSON");
    let field = |k: &str| view[k].as_str().unwrap_or_else(|| panic!("identity has no {k}: {view}")).to_owned();
    (field("name"), field("peer_url"), field("fingerprint"))
}

/// Makes `a` trust `b` (one direction), and run images signed by the workspace's keys when it
/// takes over `b`'s deployments.
pub fn add_peer(a: &Rack, b: &Rack) {
    let keys = workspace_keys();
    add_peer_with_keys(a, b, &keys.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Makes `a` trust `b` (one direction), with `keys` as the image keys trusted for `b`.
pub fn add_peer_with_keys(a: &Rack, b: &Rack, keys: &[&str]) {
    let (name, url, fingerprint) = identity(b);
    let mut args = vec!["peer", "add", &name, &url, "--fingerprint", &fingerprint];
    for key in keys {
        args.extend(["--image-key", key]);
    }
    a.ok(&args);
}

/// The workspace's trusted image keys (hex), which sign the test images.
pub fn workspace_keys() -> Vec<String> {
    crate::common::trust_args().into_iter().filter(|a| a != "--trust").collect()
}

/// Peers every pair of racks, both ways.
pub fn mesh(racks: &[&Rack]) {
    for a in racks {
        for b in racks {
            if !std::ptr::eq(*a, *b) {
                add_peer(a, b);
            }
        }
    }
}

/// `peer ls -o json` as JSON values.
pub fn peers(rack: &Rack) -> Vec<Value> {
    serde_json::from_str(&rack.ok(&["peer", "ls", "-o", "json"])).expect("peer ls is JSON")
}

/// What `rack` knows of `peer`.
pub fn peer(rack: &Rack, peer: &str) -> Value {
    peers(rack).into_iter().find(|p| p["name"] == peer).unwrap_or_else(|| panic!("no peer {peer}"))
}

/// The image ids `image ls` shows.
pub fn image_ids(rack: &Rack) -> Vec<String> {
    let images: Vec<Value> = serde_json::from_str(&rack.ok(&["image", "ls", "-o", "json"])).expect("JSON");
    let mut ids: Vec<String> = images.iter().map(|i| i["id"].as_str().expect("an id").to_owned()).collect();
    ids.sort();
    ids
}

/// The ids of the images whose every chunk `rack` holds (`GET /v1/replication`).
pub fn complete_image_ids(rack: &Rack) -> Vec<String> {
    let status: Value = serde_json::from_str(&rack.api_get("/v1/replication")).expect("replication status is JSON");
    let mut ids: Vec<String> = status["images"]
        .as_array()
        .expect("a list of images")
        .iter()
        .filter(|i| i["behind_bytes"] == 0)
        .map(|i| i["id"].as_str().expect("an id").to_owned())
        .collect();
    ids.sort();
    ids
}

/// Whether `rack` has registered every image `other` has, and holds all their chunks.
pub fn has_all_images_of(rack: &Rack, other: &Rack) -> bool {
    let wanted = image_ids(other);
    image_ids(rack) == wanted && wanted.iter().all(|id| complete_image_ids(rack).contains(id))
}

/// Polls `check` until it returns `Some`, for at most `timeout`.
pub fn until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis() as u64
}
