//! RFC 9111 for a shared cache, the parts this appliance honours: `Cache-Control` (`max-age`,
//! `s-maxage`, `no-store`, `private`, `no-cache`, `must-revalidate`, `proxy-revalidate`), validators
//! (`ETag`, `Last-Modified`) and `Vary` on the request headers it supports
//! ([`SUPPORTED_VARY`]).
//!
//! Not supported: `Expires` and heuristic freshness (they need a calendar clock, which the
//! appliance lacks), `stale-while-revalidate`, `Vary` on other headers (such responses are not
//! stored).

use alloc::{string::String, vec::Vec};

/// The request headers a response may vary on and still be stored.
pub const SUPPORTED_VARY: [&str; 3] = ["accept-encoding", "accept", "accept-language"];

/// The `Cache-Control` directives that matter here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    /// `no-store`.
    pub no_store: bool,
    /// `private` (a shared cache must not store it).
    pub private: bool,
    /// `no-cache`: stored, but revalidated before every use.
    pub no_cache: bool,
    /// `must-revalidate` or `proxy-revalidate`: never served stale.
    pub must_revalidate: bool,
    /// `max-age`, seconds.
    pub max_age: Option<u64>,
    /// `s-maxage`, seconds (wins over `max-age` in a shared cache).
    pub s_maxage: Option<u64>,
}

impl Directives {
    /// Parses a `Cache-Control` value (several fields joined with `,` work the same way).
    /// Unknown directives are ignored; a malformed age is ignored too (RFC 9111 §4.2.1 asks to
    /// treat it as stale, which ignoring achieves when there is no other age).
    pub fn parse(value: &str) -> Directives {
        let mut d = Directives::default();
        for directive in value.split(',') {
            let (name, arg) = match directive.split_once('=') {
                Some((name, arg)) => (name.trim(), Some(arg.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            let seconds = arg.and_then(|a| a.parse::<u64>().ok());
            match name.to_ascii_lowercase().as_str() {
                "no-store" => d.no_store = true,
                "private" => d.private = true,
                "no-cache" => d.no_cache = true,
                "must-revalidate" | "proxy-revalidate" => d.must_revalidate = true,
                "max-age" => d.max_age = seconds,
                "s-maxage" => d.s_maxage = seconds,
                _ => {}
            }
        }
        d
    }

    /// How long a stored response is fresh, in milliseconds.
    pub fn freshness_ms(&self) -> u64 {
        if self.no_cache {
            return 0;
        }
        self.s_maxage.or(self.max_age).unwrap_or(0).saturating_mul(1000)
    }
}

/// Why a response is not stored, or how it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Store it: fresh for `fresh_ms`, varying on these (lower-case) request headers.
    Store {
        /// Freshness lifetime.
        fresh_ms: u64,
        /// The request headers named by `Vary`.
        vary: Vec<String>,
        /// Whether it may be served stale when the origin is unreachable.
        stale_ok: bool,
    },
    /// Not stored, for this reason (for the stats and the tests).
    Skip(&'static str),
}

/// Whether a response to a GET with `status` and these headers may be stored by a shared cache,
/// and how. `request_authorized`: the request carried `Authorization` (RFC 9111 §3.5).
pub fn decide(status: u16, header: impl Fn(&str) -> Option<String>, request_authorized: bool) -> Decision {
    // Statuses cacheable by default (RFC 9110 §15.1) that this cache handles.
    if !matches!(status, 200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501) {
        return Decision::Skip("status");
    }
    let d = header("cache-control").map(|v| Directives::parse(&v)).unwrap_or_default();
    if d.no_store {
        return Decision::Skip("no-store");
    }
    if d.private {
        return Decision::Skip("private");
    }
    if request_authorized && d.s_maxage.is_none() && !d.must_revalidate {
        return Decision::Skip("authorization");
    }
    let validated = header("etag").is_some() || header("last-modified").is_some();
    if d.s_maxage.is_none() && d.max_age.is_none() && !validated {
        // No explicit freshness and nothing to revalidate with: no heuristics without a calendar.
        return Decision::Skip("no freshness and no validator");
    }
    let mut vary = Vec::new();
    if let Some(value) = header("vary") {
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let name = name.to_ascii_lowercase();
            if !SUPPORTED_VARY.contains(&name.as_str()) {
                return Decision::Skip("vary");
            }
            if !vary.contains(&name) {
                vary.push(name);
            }
        }
    }
    Decision::Store { fresh_ms: d.freshness_ms(), vary, stale_ok: !d.must_revalidate && !d.no_cache }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide_with(status: u16, fields: &[(&str, &str)]) -> Decision {
        decide(
            status,
            |name| fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| String::from(*v)),
            false,
        )
    }

    #[test]
    fn cache_control_decides_what_is_stored_and_for_how_long() {
        assert_eq!(
            decide_with(200, &[("Cache-Control", "public, max-age=60")]),
            Decision::Store { fresh_ms: 60_000, vary: Vec::new(), stale_ok: true }
        );
        assert_eq!(
            decide_with(200, &[("Cache-Control", "max-age=60, s-maxage=5, must-revalidate")]),
            Decision::Store { fresh_ms: 5_000, vary: Vec::new(), stale_ok: false }
        );
        assert_eq!(decide_with(200, &[("Cache-Control", "max-age=60, no-store")]), Decision::Skip("no-store"));
        assert_eq!(decide_with(200, &[("Cache-Control", "private, max-age=60")]), Decision::Skip("private"));
        assert_eq!(decide_with(200, &[]), Decision::Skip("no freshness and no validator"));
        assert_eq!(
            decide_with(200, &[("ETag", "\"v1\"")]),
            Decision::Store { fresh_ms: 0, vary: Vec::new(), stale_ok: true }
        );
        assert_eq!(
            decide_with(200, &[("Cache-Control", "no-cache, max-age=99"), ("ETag", "\"v1\"")]),
            Decision::Store { fresh_ms: 0, vary: Vec::new(), stale_ok: false }
        );
        assert_eq!(decide_with(500, &[("Cache-Control", "max-age=60")]), Decision::Skip("status"));
        assert_eq!(
            decide_with(200, &[("Cache-Control", "max-age=x")]),
            Decision::Skip("no freshness and no validator")
        );
    }

    #[test]
    fn vary_is_honoured_on_supported_headers_only() {
        assert_eq!(
            decide_with(200, &[("Cache-Control", "max-age=1"), ("Vary", "Accept-Encoding, accept")]),
            Decision::Store {
                fresh_ms: 1000,
                vary: alloc::vec!["accept-encoding".into(), "accept".into()],
                stale_ok: true
            }
        );
        assert_eq!(decide_with(200, &[("Cache-Control", "max-age=1"), ("Vary", "*")]), Decision::Skip("vary"));
        assert_eq!(decide_with(200, &[("Cache-Control", "max-age=1"), ("Vary", "Cookie")]), Decision::Skip("vary"));
    }
}
