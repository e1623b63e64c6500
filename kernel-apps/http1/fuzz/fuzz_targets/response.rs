//! Feeds arbitrary bytes to a `ResponseReader` (an origin's answer) in arbitrary reads, then
//! closes, and checks that it neither panics, nor takes bytes past the response, nor keeps a
//! body over its limit.
//!
//! The first two bytes choose the read size and the body limit; the rest is what the origin sends.
#![no_main]

use http1::ResponseReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&[read_seed, limit_seed], data)) = input.split_first_chunk::<2>() else {
        return;
    };
    let read_size = usize::from(read_seed).max(1);
    let max_body = usize::from(limit_seed) * 16;
    let mut reader = ResponseReader::new(max_body, limit_seed & 1 == 1);
    for piece in data.chunks(read_size) {
        let taken = reader.receive(piece);
        assert!(taken <= piece.len());
        if taken < piece.len() {
            assert!(reader.is_done(), "left bytes while incomplete");
            break;
        }
    }
    reader.end_of_input();
    if let Some(Ok(fetched)) = reader.finish() {
        assert!(fetched.body.len() <= max_body);
        assert!((200..600).contains(&fetched.status));
    }
});
