//! Feeds arbitrary bytes to a connection in arbitrary reads, taking output in arbitrary amounts,
//! and checks that it neither panics nor breaks its bounds.
//!
//! The first bytes of the input choose the sizes of the reads and writes; the rest is what the
//! client sends.
#![no_main]

use http1::{Connection, MAX_HEAD_LEN, StaticSite};
use libfuzzer_sys::fuzz_target;

static SITE: StaticSite = StaticSite::new(&[
    ("/index.html", b"<!doctype html><h1>home</h1>\n"),
    ("/style.css", b"body { color: teal }\n"),
    ("/empty.txt", b""),
]);

fuzz_target!(|input: &[u8]| {
    let Some((&[read_seed, write_seed, end], data)) = input.split_first_chunk::<3>() else {
        return;
    };
    let read_size = usize::from(read_seed).max(1);
    let write_size = usize::from(write_seed);
    let mut connection = Connection::new(&SITE);
    let mut buf = vec![0; write_size];
    let mut offset = 0;
    while offset < data.len() {
        let piece = &data[offset..data.len().min(offset + read_size)];
        let taken = connection.receive(piece);
        assert!(taken <= piece.len());
        offset += taken;
        let written = connection.write_output(&mut buf);
        if taken == 0 && written == 0 {
            // The connection waits for its output to be taken: take all of it.
            assert!(connection.has_output(), "stuck with no output");
            while connection.has_output() {
                connection.consume_output(connection.pending_output().len());
            }
        }
        assert!(!connection.should_close() || !connection.has_output());
    }
    match end % 3 {
        0 => connection.end_of_input(),
        1 => connection.timeout(),
        _ => {}
    }
    let mut all = [0; MAX_HEAD_LEN];
    while connection.has_output() {
        assert!(connection.write_output(&mut all) > 0);
    }
    assert!(end % 3 == 2 || connection.should_close());
});
