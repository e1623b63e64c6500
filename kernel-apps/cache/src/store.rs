//! The cache's memory: responses by URL (and the request headers they vary on), bounded by bytes,
//! evicting the least recently used first.
//!
//! Every entry is charged its body, its headers, its key and a fixed overhead, so the bound holds
//! for what the heap really carries (within the allocator's rounding). A response larger than a
//! quarter of the bound is not stored: it would evict too much for one object.

use alloc::{collections::BTreeMap, string::String, vec::Vec};

/// Bytes charged per entry beyond its strings and body (the structs and their allocations).
const OVERHEAD: usize = 128;

/// A stored response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The request headers it varies on (lower-case name) and the values the request had.
    pub vary: Vec<(String, Option<String>)>,
    /// The status code.
    pub status: u16,
    /// The end-to-end header fields to replay.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// When it was stored or last revalidated (ms, the caller's clock).
    pub stored_at: u64,
    /// How long it is fresh after `stored_at` (ms).
    pub fresh_ms: u64,
    /// Whether it may be served stale when the origin cannot be reached.
    pub stale_ok: bool,
    /// The store's use counter when it was last used, for LRU.
    used: u64,
}

impl Entry {
    /// A new entry (not yet in a store).
    pub fn new(
        vary: Vec<(String, Option<String>)>,
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        stored_at: u64,
        fresh_ms: u64,
        stale_ok: bool,
    ) -> Entry {
        Entry { vary, status, headers, body, stored_at, fresh_ms, stale_ok, used: 0 }
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether it is fresh at `now`.
    pub fn is_fresh(&self, now: u64) -> bool {
        now.saturating_sub(self.stored_at) < self.fresh_ms
    }

    /// Whether the request whose headers `header` gives selects this entry.
    fn matches(&self, header: &impl Fn(&str) -> Option<String>) -> bool {
        self.vary.iter().all(|(name, value)| header(name) == *value)
    }

    fn size(&self, key: &str) -> usize {
        let headers: usize = self.headers.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
        let vary: usize = self.vary.iter().map(|(n, v)| n.len() + v.as_ref().map_or(0, String::len) + 32).sum();
        self.body.len() + headers + vary + key.len() + OVERHEAD
    }
}

/// Counters for `/.cache/stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Entries held.
    pub entries: usize,
    /// Bytes charged for them.
    pub bytes: usize,
    /// The bound.
    pub limit: usize,
    /// Entries evicted to make room.
    pub evictions: u64,
}

/// Responses by key, bounded by bytes.
#[derive(Debug)]
pub struct Store {
    entries: BTreeMap<String, Vec<Entry>>,
    stats: StoreStats,
    uses: u64,
}

impl Store {
    /// An empty store of at most `limit` bytes.
    pub fn new(limit: usize) -> Store {
        Store { entries: BTreeMap::new(), stats: StoreStats { limit, ..StoreStats::default() }, uses: 0 }
    }

    /// The entry for `key` that matches the request (`header` gives its header values by
    /// lower-case name), marked as used.
    pub fn get(&mut self, key: &str, header: impl Fn(&str) -> Option<String>) -> Option<&mut Entry> {
        self.uses += 1;
        let uses = self.uses;
        let entry = self.entries.get_mut(key)?.iter_mut().find(|e| e.matches(&header))?;
        entry.used = uses;
        Some(entry)
    }

    /// Stores `entry` under `key`, replacing one with the same vary values, evicting the least
    /// recently used entries until it fits. `false` when it is too large to store at all.
    pub fn insert(&mut self, key: &str, mut entry: Entry) -> bool {
        let size = entry.size(key);
        if size > self.stats.limit / 4 {
            self.remove(key, &entry.vary);
            return false;
        }
        self.remove(key, &entry.vary);
        while self.stats.bytes + size > self.stats.limit && self.evict_one() {}
        self.uses += 1;
        entry.used = self.uses;
        self.entries.entry(String::from(key)).or_default().push(entry);
        self.stats.bytes += size;
        self.stats.entries += 1;
        true
    }

    /// Drops the entry for `key` with these vary values, if any.
    pub fn remove(&mut self, key: &str, vary: &[(String, Option<String>)]) {
        let Some(list) = self.entries.get_mut(key) else { return };
        if let Some(at) = list.iter().position(|e| e.vary == vary) {
            let entry = list.swap_remove(at);
            self.stats.bytes -= entry.size(key);
            self.stats.entries -= 1;
        }
        if list.is_empty() {
            self.entries.remove(key);
        }
    }

    /// The counters.
    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    /// Evicts the least recently used entry; `false` when empty. Linear in the entries: it runs
    /// only when the store is full and a new response arrives, never on a hit.
    fn evict_one(&mut self) -> bool {
        let oldest = self
            .entries
            .iter()
            .flat_map(|(key, list)| list.iter().map(move |e| (e.used, key)))
            .min_by_key(|(used, _)| *used)
            .map(|(used, key)| (used, key.clone()));
        let Some((used, key)) = oldest else { return false };
        let Some(list) = self.entries.get_mut(&key) else { return false };
        if let Some(at) = list.iter().position(|e| e.used == used) {
            let entry = list.swap_remove(at);
            self.stats.bytes -= entry.size(&key);
            self.stats.entries -= 1;
            self.stats.evictions += 1;
        }
        if list.is_empty() {
            self.entries.remove(&key);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: usize, vary: &[(&str, Option<&str>)]) -> Entry {
        let vary = vary.iter().map(|(n, v)| (String::from(*n), v.map(String::from))).collect();
        Entry::new(vary, 200, alloc::vec![("ETag".into(), "\"x\"".into())], alloc::vec![b'a'; body], 0, 1000, true)
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_bound_holds() {
        let mut store = Store::new(10_000);
        for key in ["/a", "/b", "/c"] {
            assert!(store.insert(key, entry(2000, &[])));
        }
        assert!(store.get("/a", |_| None).is_some()); // /b is now the least recently used
        assert!(store.insert("/d", entry(2000, &[])));
        assert!(store.insert("/e", entry(2000, &[])));
        assert!(store.get("/b", |_| None).is_none(), "evicted");
        assert!(store.get("/a", |_| None).is_some(), "recently used, kept");
        let stats = store.stats();
        assert!(stats.bytes <= 10_000, "{stats:?}");
        assert_eq!((stats.entries, stats.evictions), (4, 1));
        assert!(!store.insert("/huge", entry(5000, &[])), "over a quarter of the bound");
    }

    #[test]
    fn vary_selects_among_entries_of_one_url() {
        let mut store = Store::new(100_000);
        store.insert("/v", entry(10, &[("accept-encoding", Some("gzip"))]));
        store.insert("/v", entry(20, &[("accept-encoding", None)]));
        let gzip = |name: &str| (name == "accept-encoding").then(|| String::from("gzip"));
        assert_eq!(store.get("/v", gzip).map(|e| e.body.len()), Some(10));
        assert_eq!(store.get("/v", |_| None).map(|e| e.body.len()), Some(20));
        assert!(store.get("/v", |_| Some(String::from("br"))).is_none());
        // Replacing keeps one entry per vary value.
        store.insert("/v", entry(30, &[("accept-encoding", None)]));
        assert_eq!(store.stats().entries, 2);
        assert_eq!(store.get("/v", |_| None).map(|e| e.body.len()), Some(30));
    }
}
