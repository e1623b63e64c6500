//! The request → response half of httpd: the site from the image's data bundle, answered by
//! `http1`'s [`Connection`] on each connection. The event loop (`net::serve`) feeds it bytes and
//! sends what it produces; nothing here knows about sockets or time.

use alloc::{boxed::Box, format, vec::Vec};

use http1::{Connection, StaticSite};
use net::serve::{Service, State};
use runtime::{Context, println};

/// The site from the image's data bundle: every file under its path with a leading `/`.
pub fn load(ctx: &Context) -> &'static StaticSite {
    let Some(bundle) = ctx.data() else {
        println!("httpd: the image has no data part (manifest key `data`): serving only /healthz");
        return Box::leak(Box::new(StaticSite::new(&[])));
    };
    let files: Vec<(&'static str, &'static [u8])> =
        bundle.iter().map(|(path, bytes)| (&*Box::leak(format!("/{path}").into_boxed_str()), bytes)).collect();
    Box::leak(Box::new(StaticSite::new(Box::leak(files.into_boxed_slice()))))
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
