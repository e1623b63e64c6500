//! The open connections of one listener, with the caps of its [`Limits`]: overall, per source
//! address, and on connections that have proved nothing yet ("unproven": idle between requests,
//! or in a TLS handshake). Reaching a cap closes the oldest unproven connection that the cap
//! concerns to make room; only when none is unproven is the new connection refused.
//!
//! Why evict rather than refuse: on an open network an attacker can always open more sockets
//! than any cap, and refusing newcomers would lock out the real client that arrives after the
//! flood. Closing the oldest idle socket costs a real client at most a reconnect, and a valid
//! request, once it starts, is never evicted.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::sync::Notify;

use super::Limits;

/// One admitted connection.
#[derive(Debug)]
pub struct Slot {
    id: u64,
    ip: IpAddr,
    /// Requests (or a proven TLS session) in progress: while above zero, never evicted.
    busy: AtomicUsize,
    evicted: Notify,
}

impl Slot {
    /// Resolves when the table closed this connection to make room for another.
    pub async fn evicted(&self) {
        self.evicted.notified().await;
    }

    /// Marks work in progress until the guard is dropped.
    pub fn busy(self: &Arc<Slot>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }
}

/// Work in progress on a connection: it is not evicted while one of these lives.
#[derive(Debug)]
pub struct Busy(Arc<Slot>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    /// By id, so the first unproven entry found is the oldest.
    open: BTreeMap<u64, Arc<Slot>>,
    per_address: HashMap<IpAddr, usize>,
}

impl Inner {
    fn remove(&mut self, id: u64) -> Option<Arc<Slot>> {
        let slot = self.open.remove(&id)?;
        if let Some(count) = self.per_address.get_mut(&slot.ip) {
            *count -= 1;
            if *count == 0 {
                self.per_address.remove(&slot.ip);
            }
        }
        Some(slot)
    }

    /// Closes the oldest unproven connection (from `ip`, if given); false if there is none.
    fn evict_oldest(&mut self, ip: Option<IpAddr>) -> bool {
        let victim = self
            .open
            .values()
            .find(|s| s.busy.load(Ordering::SeqCst) == 0 && ip.is_none_or(|ip| s.ip == ip))
            .map(|s| s.id);
        match victim.and_then(|id| self.remove(id)) {
            Some(slot) => {
                // notify_one keeps the wake-up if the task is not waiting yet.
                slot.evicted.notify_one();
                true
            }
            None => false,
        }
    }

    fn unproven(&self) -> usize {
        self.open.values().filter(|s| s.busy.load(Ordering::SeqCst) == 0).count()
    }
}

#[derive(Debug)]
pub struct Table {
    limits: Limits,
    inner: Mutex<Inner>,
}

/// An admitted connection's place in the table, given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    table: Arc<Table>,
    pub slot: Arc<Slot>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.table.lock().remove(self.slot.id);
    }
}

impl Table {
    pub fn new(limits: Limits) -> Arc<Table> {
        Arc::new(Table { limits, inner: Mutex::new(Inner::default()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for a connection from `ip` and admits it, or `None` when every connection in
    /// the way is doing proven work (the newcomer is then refused).
    pub fn admit(self: &Arc<Table>, ip: IpAddr) -> Option<Admitted> {
        let mut inner = self.lock();
        let limits = &self.limits;
        if inner.per_address.get(&ip).copied().unwrap_or(0) >= limits.max_per_address && !inner.evict_oldest(Some(ip)) {
            return None;
        }
        if (inner.open.len() >= limits.max_connections || inner.unproven() >= limits.max_unproven)
            && !inner.evict_oldest(None)
        {
            return None;
        }
        inner.next += 1;
        let slot = Arc::new(Slot { id: inner.next, ip, busy: AtomicUsize::new(0), evicted: Notify::new() });
        inner.open.insert(slot.id, slot.clone());
        *inner.per_address.entry(ip).or_insert(0) += 1;
        Some(Admitted { table: self.clone(), slot })
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { max_connections: 4, max_per_address: 3, max_unproven: 2, handlers: 1 }
    }

    #[test]
    fn the_oldest_idle_connection_makes_room_and_busy_ones_are_kept() {
        let table = Table::new(limits());
        let (a, b) = ([127, 0, 0, 1].into(), [127, 0, 0, 2].into());
        let first = table.admit(a).expect("room");
        let _working = first.slot.busy();
        let second = table.admit(a).expect("room");
        let third = table.admit(b).expect("room");
        // Two unproven (second, third): the next evicts the oldest of them, never the busy one.
        let fourth = table.admit(b).expect("room by eviction");
        assert_eq!(table.open(), 3);
        assert!(table.lock().open.contains_key(&first.slot.id));
        assert!(!table.lock().open.contains_key(&second.slot.id), "the oldest idle one went");
        drop(second);
        assert_eq!(table.open(), 3, "dropping an evicted connection's guard changes nothing");
        let fifth = table.admit(a).expect("room by eviction of third");
        assert!(!table.lock().open.contains_key(&third.slot.id));
        let _busy4 = fourth.slot.busy();
        let six = table.admit(a).expect("room: one unproven so far");
        // Per address: a has first (busy), fifth and six; the cap of 3 evicts fifth.
        let seven = table.admit(a).expect("room by eviction of fifth");
        assert!(!table.lock().open.contains_key(&fifth.slot.id));
        let _busy6 = six.slot.busy();
        let _busy7 = seven.slot.busy();
        assert!(table.admit(a).is_none(), "every connection from a is busy: refused");
    }
}
