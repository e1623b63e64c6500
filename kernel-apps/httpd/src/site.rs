//! The site httpd serves, from the image's data part: the files, and what `image build` worked out
//! about them (the site index: entity tags, `Cache-Control`, gzip variants; `http1::site_index`),
//! with the wall clock for `Date` and `Last-Modified`. The responses themselves are `http1`'s
//! (`StaticSite::respond`); nothing is hashed or compressed here.

use alloc::{boxed::Box, format, vec::Vec};
use core::time::Duration;

use http1::{SiteFile, StaticSite, site_index};
use runtime::{Context, println};

/// How sure of the time the appliance must be to send `Date`: RFC 9110 asks for the best
/// available approximation; a clock further off than this would mislead caches' age arithmetic.
const DATE_TOLERANCE: Duration = Duration::from_secs(10);

/// The wall clock for HTTP: seconds since the epoch, while it is trustworthy.
fn http_now() -> Option<u64> {
    runtime::wallclock::now().filter(|t| t.within(DATE_TOLERANCE)).map(|t| t.unix_seconds())
}

/// The site from the image's data bundle: every file the site index lists (manifest `[http]`),
/// under its path with a leading `/`. Without an index (an image built without `[http]`), only
/// `/healthz` is served.
pub(crate) fn load(ctx: &Context) -> StaticSite {
    if runtime::wallclock::now().is_none() {
        println!("httpd: clock unsynchronised: responses carry no Date");
    }
    let Some(bundle) = ctx.data() else {
        println!("httpd: the image has no data part (manifest key `data`): serving only /healthz");
        return StaticSite::described(&[]);
    };
    let leak_path = |path: &str| -> &'static str { Box::leak(format!("/{path}").into_boxed_str()) };
    let Some(index) = bundle.get(site_index::PATH) else {
        println!("httpd: the data part has no site index (manifest `[http]`): serving only /healthz");
        return StaticSite::described(&[]);
    };
    let Some(entries) = core::str::from_utf8(index).ok().and_then(|text| site_index::parse(text).ok()) else {
        println!("httpd: the site index is not what `image build` writes: rebuild the image; serving only /healthz");
        return StaticSite::described(&[]);
    };
    let files: Vec<SiteFile> = entries
        .iter()
        .filter_map(|entry| {
            let body = bundle.get(entry.path)?;
            let gzip = entry.gzip.and_then(|(path, etag)| Some((bundle.get(path)?, etag)));
            Some(SiteFile {
                path: leak_path(entry.path),
                body,
                etag: Some(entry.etag),
                cache_control: Some(entry.cache_control),
                gzip,
            })
        })
        .collect();
    // The files change only with the image, so they are no newer than this boot.
    StaticSite::described(Box::leak(files.into_boxed_slice())).with_clock(http_now, http_now())
}
