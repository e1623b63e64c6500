//! The request → response half of httpd: the site from the image's data part — the files and
//! what `image build` worked out about them (the site index: entity tags, `Cache-Control`, gzip
//! variants; `http1::site_index`) — with the wall clock for `Date` and `Last-Modified`, answered
//! by `http1`'s [`Connection`] on each connection. The responses themselves are `http1`'s
//! (`StaticSite::respond`); nothing is hashed or compressed here. The event loop (`net::serve`)
//! feeds it bytes and sends what it produces; nothing here knows about sockets.

use alloc::{boxed::Box, format, vec::Vec};
use core::time::Duration;

use http1::{Connection, SiteFile, StaticSite, site_index};
use net::serve::{Service, State};
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
pub(crate) fn load(ctx: &Context) -> &'static StaticSite {
    Box::leak(Box::new(described_site(ctx)))
}

fn described_site(ctx: &Context) -> StaticSite {
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

/// The static site as a service: one [`Connection`] per client.
pub struct Site(pub &'static StaticSite);

impl Service for Site {
    type Conn = Connection;

    fn open(&mut self) -> Connection {
        Connection::new(self.0)
    }

    fn receive(&mut self, conn: &mut Connection, data: &[u8]) -> usize {
        conn.receive(data)
    }

    fn end_of_input(&mut self, conn: &mut Connection) {
        conn.end_of_input();
    }

    fn has_output(&self, conn: &Connection) -> bool {
        conn.has_output()
    }

    fn send(&mut self, conn: &mut Connection, buf: &mut [u8]) -> usize {
        conn.write_output(buf)
    }

    fn state(&self, conn: &Connection) -> State {
        if conn.is_closing() {
            State::Closing
        } else if conn.is_idle() {
            State::Idle
        } else {
            State::Busy
        }
    }

    fn timeout(&mut self, conn: &mut Connection) {
        conn.timeout();
    }
}
