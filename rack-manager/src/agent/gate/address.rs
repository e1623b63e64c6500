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
    /// The addresses recorded so far (read from the instances' directories at the first claim),
    /// under the lock held while one is chosen and recorded, so two gates never take the same one.
    used: Mutex<Option<BTreeSet<u32>>>,
}

impl AddressBook {
    pub fn new(instances_dir: PathBuf) -> AddressBook {
        AddressBook { instances_dir, used: Mutex::new(None) }
    }

    fn recorded(dir: &Path) -> Option<Ipv4Addr> {
        let address: Ipv4Addr = fs::read_to_string(dir.join(ADDRESS_FILE)).ok()?.trim().parse().ok()?;
        let n = u32::from(address).checked_sub(FIRST)?;
        (n < COUNT).then_some(address)
    }

    /// `instance`'s address: the one it has, or the lowest that no other instance has and that
    /// `usable` accepts (another program, or another rack's manager on this host, may hold
    /// some), recorded before it is returned.
    pub fn claim(&self, instance: &str, usable: impl Fn(Ipv4Addr) -> bool) -> std::io::Result<Ipv4Addr> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.instances_dir.join(instance);
        if let Some(address) = Self::recorded(&dir) {
            return Ok(address);
        }
        let used = used.get_or_insert_with(|| {
            fs::read_dir(&self.instances_dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|entry| Self::recorded(&entry.path()))
                .map(u32::from)
                .collect()
        });
        let free = (FIRST..FIRST + COUNT)
            .filter(|n| !used.contains(n))
            .find(|n| usable(Ipv4Addr::from(*n)))
            .ok_or_else(|| {
                std::io::Error::other(format!("no gate address of 127.77.0.0/16 is free on this host ({COUNT} in all)"))
            })?;
        fs::create_dir_all(&dir)?;
        let address = Ipv4Addr::from(free);
        fs::write(dir.join(ADDRESS_FILE), format!("{address}\n"))?;
        used.insert(free);
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
        let a = book.claim("httpd-1", |_| true).expect("claims");
        // 127.77.0.2 is held by someone else.
        let b = book.claim("httpd-2", |address| address != Ipv4Addr::new(127, 77, 0, 2)).expect("claims");
        assert_eq!(a, Ipv4Addr::new(127, 77, 0, 1));
        assert_eq!(b, Ipv4Addr::new(127, 77, 0, 3));
        assert_eq!(AddressBook::new(dir.path().to_owned()).claim("httpd-1", |_| false).expect("kept"), a);
    }
}
