//! Choosing and qualifying a representation from the request's headers (RFC 9110 §12, §13, §14):
//! `Accept-Encoding`, `If-None-Match`, `If-Modified-Since`, `Range` and `If-Range`.
//!
//! Every reader here is total: a malformed header is treated as absent (the full representation
//! is sent), never as a match, so a broken client gets a 200 rather than a wrong 304 or 206.

use crate::date;
use crate::request::{Method, RequestHead};

/// Whether `Accept-Encoding` accepts gzip: `gzip` (or `x-gzip`) listed with a non-zero weight, or
/// else `*` with one. No header means no preference, which this server reads as identity.
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let Some(header) = accept_encoding else { return false };
    let mut gzip = None;
    let mut any = None;
    for item in header.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim_ascii();
        let weight = parts
            .filter_map(|p| p.trim_ascii().split_once('='))
            .find(|(name, _)| name.trim_ascii().eq_ignore_ascii_case("q"))
            .map(|(_, value)| !is_zero_weight(value.trim_ascii()));
        let accepted = weight.unwrap_or(true);
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(accepted);
        } else if coding == "*" {
            any = Some(accepted);
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// `q=0`, `q=0.0`, `q=0.000`: "not acceptable".
fn is_zero_weight(value: &str) -> bool {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    whole == "0" && fraction.len() <= 3 && fraction.bytes().all(|b| b == b'0')
}

/// Whether a GET or HEAD may be answered 304 (RFC 9110 §13.2.2): `If-None-Match` lists the
/// representation's entity tag (weak comparison) or is `*`; or, without `If-None-Match`,
/// `If-Modified-Since` is no earlier than `Last-Modified`.
pub fn not_modified(request: &RequestHead<'_>, etag: Option<&str>, last_modified: Option<u64>) -> bool {
    if !matches!(request.method, Method::Get | Method::Head) {
        return false;
    }
    if let Some(if_none_match) = request.header("if-none-match") {
        let Some(etag) = etag else { return false };
        return if_none_match.trim_ascii() == "*"
            || if_none_match.split(',').any(|tag| opaque(tag.trim_ascii()) == Some(opaque_of(etag)));
    }
    match (request.header("if-modified-since").and_then(date::parse), last_modified) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// The opaque part of an entity tag as sent (`W/"x"` or `"x"` → `"x"`); `None` if malformed.
fn opaque(tag: &str) -> Option<&str> {
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    (tag.len() >= 2 && tag.starts_with('"') && tag.ends_with('"')).then_some(tag)
}

fn opaque_of(etag: &str) -> &str {
    etag.strip_prefix("W/").unwrap_or(etag)
}

/// What a `Range` request asks of a representation of some length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Range {
    /// No (usable) range: send it all with 200.
    Whole,
    /// Bytes `first..=last`, with 206.
    Part {
        /// The first byte.
        first: usize,
        /// The last byte (inclusive).
        last: usize,
    },
    /// No byte of the range exists: 416.
    Unsatisfiable,
}

/// The range a GET asks for in a representation of `len` bytes (RFC 9110 §14.2): one
/// `bytes=FIRST-LAST`, `bytes=FIRST-` or `bytes=-SUFFIX`. Several ranges, other units, malformed
/// ranges, HEAD, and an `If-Range` that names another representation (its entity tag or a date not
/// equal to `Last-Modified`) all mean the whole representation.
pub fn range(request: &RequestHead<'_>, len: usize, etag: Option<&str>, last_modified: Option<u64>) -> Range {
    if request.method != Method::Get {
        return Range::Whole;
    }
    let Some(header) = request.header("range") else { return Range::Whole };
    if let Some(if_range) = request.header("if-range") {
        let if_range = if_range.trim_ascii();
        let current = if if_range.starts_with('"') {
            // A strong comparison: a weak tag never matches.
            etag.is_some_and(|etag| etag == if_range)
        } else {
            date::parse(if_range).is_some_and(|date| Some(date) == last_modified)
        };
        if !current {
            return Range::Whole;
        }
    }
    parse_range(header, len)
}

/// Reads one byte range of a `len`-byte representation.
pub fn parse_range(header: &str, len: usize) -> Range {
    let Some(spec) = header.trim_ascii().strip_prefix("bytes=") else { return Range::Whole };
    if spec.contains(',') {
        return Range::Whole;
    }
    let Some((first, last)) = spec.trim_ascii().split_once('-') else { return Range::Whole };
    // Digits only; a number too large for memory saturates (and lies past any representation).
    let number = |text: &str| -> Option<usize> {
        let text = text.trim_ascii();
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then(|| {
            text.bytes().fold(0usize, |n, digit| n.saturating_mul(10).saturating_add(usize::from(digit - b'0')))
        })
    };
    match (number(first), number(last), last.trim_ascii().is_empty()) {
        // bytes=-N: the last N bytes.
        (None, Some(suffix), _) if first.trim_ascii().is_empty() => {
            if suffix == 0 || len == 0 {
                Range::Unsatisfiable
            } else {
                Range::Part { first: len - suffix.min(len), last: len - 1 }
            }
        }
        // bytes=N-
        (Some(first), None, true) => {
            if first >= len {
                Range::Unsatisfiable
            } else {
                Range::Part { first, last: len - 1 }
            }
        }
        (Some(first), Some(last), _) if first <= last => {
            if first >= len {
                Range::Unsatisfiable
            } else {
                Range::Part { first, last: last.min(len - 1) }
            }
        }
        _ => Range::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_by_accept_encoding() {
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("br, GZIP;q=0.5")));
        assert!(accepts_gzip(Some("*")));
        assert!(accepts_gzip(Some("x-gzip")));
        assert!(!accepts_gzip(None));
        assert!(!accepts_gzip(Some("")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("gzip;q=0.000, *")));
        assert!(!accepts_gzip(Some("*;q=0")));
        assert!(accepts_gzip(Some("gzip;q=0.001")));
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(parse_range("bytes=0-10", 100), Range::Part { first: 0, last: 10 });
        assert_eq!(parse_range("bytes=90-200", 100), Range::Part { first: 90, last: 99 });
        assert_eq!(parse_range("bytes=50-", 100), Range::Part { first: 50, last: 99 });
        assert_eq!(parse_range("bytes=-10", 100), Range::Part { first: 90, last: 99 });
        assert_eq!(parse_range("bytes=-1000", 100), Range::Part { first: 0, last: 99 });
        assert_eq!(parse_range("bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=100-200", 100), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), Range::Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Range::Whole);
        assert_eq!(parse_range("items=0-1", 100), Range::Whole);
        assert_eq!(parse_range("bytes=a-b", 100), Range::Whole);
        assert_eq!(parse_range("bytes=-", 100), Range::Whole);
        assert_eq!(parse_range("bytes=99999999999999999999999-", 100), Range::Unsatisfiable);
    }

    proptest::proptest! {
        #[test]
        fn ranges_stay_inside_the_representation(header in "bytes=[0-9]{0,4}-[0-9]{0,4}", len in 0usize..2000) {
            if let Range::Part { first, last } = parse_range(&header, len) {
                proptest::prop_assert!(first <= last && last < len);
            }
        }

        #[test]
        fn header_readers_never_panic(text in "\\PC{0,60}", len in 0usize..100) {
            let _ = parse_range(&text, len);
            let _ = accepts_gzip(Some(&text));
        }
    }
}
