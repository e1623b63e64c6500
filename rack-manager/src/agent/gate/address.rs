//! The stable service address of a gate: a loopback address of its own, `127.77.x.y`, kept in
//! `instances/<id>/gate-address` so sleeps, wakes, restarts of the gate and of the daemon all
//! find the same one. Every gate listens on its appliance's own ports there, so 10,000 httpd
//! gates on one host all listen on port 8080, each at its own address. (The whole of 127.0.0.0/8
//! is local on Linux: no interface or route is configured.)

use std::{
    collections::BTreeSet,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Mutex,
};

/// The file in an instance's directory that holds its gate's address.
const ADDRESS_FILE: &str = "gate-address";

/// Gates' addresses are cut from 127.77.0.0/16 (65,534 of them).
const FIRST: u32 = u32::from_be_bytes([127, 77, 0, 1]);
const COUNT: u32 = 65_534;

/// Hands out gate addresses, one per instance, for good.
#[derive(Debug)]
pub struct AddressBook {
    instances_dir: PathBuf,
    /// Held while an address is chosen and recorded, so two gates never take the same one.
    claiming: Mutex<()>,
}

impl AddressBook {
    pub fn new(instances_dir: PathBuf) -> AddressBook {
        AddressBook { instances_dir, claiming: Mutex::new(()) }
    }

    fn recorded(&self, dir: &Path) -> Option<Ipv4Addr> {
        let address: Ipv4Addr = fs::read_to_string(dir.join(ADDRESS_FILE)).ok()?.trim().parse().ok()?;
        let n = u32::from(address).checked_sub(FIRST)?;
        (n < COUNT).then_some(address)
    }

    /// `instance`'s address: the one it has, or the lowest no other instance has (recorded
    /// before it is returned).
    pub fn claim(&self, instance: &str) -> std::io::Result<Ipv4Addr> {
        let _claiming = self.claiming.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.instances_dir.join(instance);
        if let Some(address) = self.recorded(&dir) {
            return Ok(address);
        }
        let used: BTreeSet<u32> = fs::read_dir(&self.instances_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| self.recorded(&entry.path()))
            .map(u32::from)
            .collect();
        let free = (FIRST..FIRST + COUNT).find(|n| !used.contains(n)).ok_or_else(|| {
            std::io::Error::other(format!("all {COUNT} gate addresses of 127.77.0.0/16 are in use on this host"))
        })?;
        fs::create_dir_all(&dir)?;
        let address = Ipv4Addr::from(free);
        fs::write(dir.join(ADDRESS_FILE), format!("{address}\n"))?;
        Ok(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_keeps_its_address_and_others_get_their_own() {
        let dir = tempfile::tempdir().expect("temp dir");
        let book = AddressBook::new(dir.path().to_owned());
        let a = book.claim("httpd-1").expect("claims");
        let b = book.claim("httpd-2").expect("claims");
        assert_eq!(a, Ipv4Addr::new(127, 77, 0, 1));
        assert_eq!(b, Ipv4Addr::new(127, 77, 0, 2));
        assert_eq!(AddressBook::new(dir.path().to_owned()).claim("httpd-1").expect("claims"), a);
    }
}
