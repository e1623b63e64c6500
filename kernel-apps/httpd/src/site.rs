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

/// The site from the image's data bundle: every file under its path with a leading `/`, described
/// by the site index when the image has one (manifest `[http]`).
pub(crate) fn load(ctx: &Context) -> StaticSite {
    match runtime::wallclock::now() {
        Some(now) => {
            // Whole milliseconds as u64: formatting a u128 would cost the image a kilobyte.
            let millis = u64::try_from(now.uncertainty.as_millis()).unwrap_or(u64::MAX);
            println!("httpd: clock {} s +- {millis} ms ({})", now.unix_seconds(), now.source.name())
        }
        None => println!("httpd: clock unsynchronised: responses carry no Date"),
    }
    let Some(bundle) = ctx.data() else {
        println!("httpd: the image has no data part (manifest key `data`): serving only /healthz");
        return StaticSite::new(&[]);
    };
    let leak_path = |path: &str| -> &'static str { Box::leak(format!("/{path}").into_boxed_str()) };
    let Some(index) = bundle.get(site_index::PATH) else {
        let files: Vec<(&'static str, &'static [u8])> =
            bundle.iter().map(|(path, bytes)| (leak_path(path), bytes)).collect();
        return StaticSite::new(Box::leak(files.into_boxed_slice()));
    };
    let entries = match core::str::from_utf8(index)
        .map_err(|_| None)
        .and_then(|text| site_index::parse(text).map_err(Some))
    {
        Ok(entries) => entries,
        Err(problem) => {
            match problem {
                Some(error) => println!(
                    "httpd: line {} of the site index is wrong: rebuild the image; serving only /healthz",
                    error.line
                ),
                None => println!("httpd: {} is not UTF-8: rebuild the image; serving only /healthz", site_index::PATH),
            }
            return StaticSite::new(&[]);
        }
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
