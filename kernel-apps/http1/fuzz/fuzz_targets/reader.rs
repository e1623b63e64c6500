//! Feeds arbitrary bytes to a `RequestReader` in arbitrary reads, consuming each request, and
//! checks that it neither panics, nor takes bytes past a request, nor outgrows its bound.
//!
//! The first two bytes choose the read size and the content limit; the rest is what the client
//! sends.
#![no_main]

use http1::{Next, RequestReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&[read_seed, limit_seed], data)) = input.split_first_chunk::<2>() else {
        return;
    };
    let read_size = usize::from(read_seed).max(1);
    let max_content = usize::from(limit_seed) * 16;
    let mut reader = RequestReader::new(max_content);
    let mut offset = 0;
    loop {
        match reader.next() {
            Next::Request(request) => {
                assert!(request.content.len() <= max_content);
                reader.consume();
                continue;
            }
            Next::Refused(_) => return,
            Next::Incomplete => {}
        }
        if offset >= data.len() {
            return;
        }
        let piece = &data[offset..data.len().min(offset + read_size)];
        let taken = reader.receive(piece);
        assert!(taken <= piece.len());
        assert!(taken > 0 || !matches!(reader.next(), Next::Incomplete), "took nothing while incomplete");
        offset += taken;
    }
});
