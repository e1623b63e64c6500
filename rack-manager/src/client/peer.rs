//! The CLI as this rack's peer, without the manager: `identity` reads the rack's identity from its
//! data directory, and `peer probe` connects to another rack's peer listener with it (mutual TLS,
//! pinning that rack's certificate).

use std::{path::Path, time::Duration};

use anyhow::Context;
use rack_api::peers::{IdentityView, PeerImage};

use crate::{
    datadir::DataDir,
    peer::{
        self,
        identity::{Identity, parse_fingerprint},
        wire::PeerClient,
    },
};

const NO_IDENTITY: &str = "this rack has no identity yet: start it once with `rack-manager serve --peer-listen ADDR`";

/// A certificate fingerprint as given (64 hex digits, `:` separators allowed), as 64 hex digits.
pub fn fingerprint_hex(text: &str) -> Result<String, String> {
    parse_fingerprint(text).map(hex::encode)
}

/// The identity of the rack whose data directory is `data_dir`, and its peer URL once its peer
/// listener has been up.
pub fn identity(data_dir: &Path) -> anyhow::Result<IdentityView> {
    let dir = peer::peer_dir(&DataDir::at(data_dir));
    let identity = Identity::load(&dir).context(NO_IDENTITY)?;
    Ok(IdentityView {
        name: identity.name.clone(),
        peer_url: std::fs::read_to_string(dir.join("address")).ok().map(|s| s.trim().to_owned()),
        fingerprint: hex::encode(identity.fingerprint()),
    })
}

/// Connects to the peer listener at `url` as the rack of `data_dir`, accepting only the
/// certificate whose fingerprint is `fingerprint`, and lists the images it serves.
pub fn probe(data_dir: &Path, url: &str, fingerprint: &str, timeout: Duration) -> anyhow::Result<Vec<PeerImage>> {
    let identity = Identity::load(&peer::peer_dir(&DataDir::at(data_dir))).context(NO_IDENTITY)?;
    let pinned = parse_fingerprint(fingerprint).map_err(anyhow::Error::msg)?;
    let client = PeerClient::new(&identity, url, pinned, timeout)?;
    serde_json::from_slice(&client.call("GET", "/peer/v1/images", &[])?.body)
        .context("the peer's image list is not JSON")
}
