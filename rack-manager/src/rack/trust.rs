//! The rack's trusted keys, changed live: the next push, launch on this manager's host and
//! replicated image meta is checked against the new set. Agents on other hosts keep their own
//! `trusted-keys` (`agent --trust`).

use images::keys::PublicKey;

use super::{Rack, RackError, Result};

impl Rack {
    /// The keys this rack trusts, in the order they were added.
    pub fn trusted_keys(&self) -> Vec<String> {
        self.trusted.current().keys().iter().map(ToString::to_string).collect()
    }

    /// Trusts `key` (64 hex digits) from now on; true if it was new.
    pub fn trust_add(&self, key: &str) -> Result<bool> {
        let key = parse_key(key)?;
        let added = self.trusted.add(key).map_err(|e| RackError::internal(format!("{e:#}")))?;
        self.replication.replicator.set_trusted(self.trusted.current());
        Ok(added)
    }

    /// Stops trusting `key`; refused with `not_found` when it was not trusted.
    pub fn trust_remove(&self, key: &str) -> Result<()> {
        let parsed = parse_key(key)?;
        if !self.trusted.remove(&parsed).map_err(|e| RackError::internal(format!("{e:#}")))? {
            return Err(RackError::not_found(
                format!("{key} is not a trusted key"),
                "see `rack-manager trust ls` for the keys this rack trusts",
            ));
        }
        self.replication.replicator.set_trusted(self.trusted.current());
        Ok(())
    }
}

fn parse_key(key: &str) -> Result<PublicKey> {
    key.trim().parse().map_err(|_| {
        RackError::invalid(
            format!("{key:?} is not a public key"),
            "a key is 64 hex digits, as `cargo xtask image inspect FILE.mast` prints after `signer`",
        )
    })
}
